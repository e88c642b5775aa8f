//! Unit tests for the HTML report: escaping, anchors, number formatting, snapshot pages,
//! determinism, in-page links, hostile names and the chart.
use super::*;

#[test]
fn escaping_keeps_text_inert() {
    assert_eq!(
        esc("<b onclick='x'>\"&\""),
        "&lt;b onclick=&#39;x&#39;&gt;&quot;&amp;&quot;"
    );
    let mut v = Vec::new();
    json_in_script(&mut v, &vec!["</script><!-- & -->"]).unwrap();
    let out = String::from_utf8(v).unwrap();
    assert_eq!(out, r#"["\u003c/script\u003e\u003c!-- \u0026 --\u003e"]"#);
    let back: Vec<String> = serde_json::from_str(&out).unwrap();
    assert_eq!(back, ["</script><!-- & -->"]);
}

#[test]
fn anchors_are_stable_and_url_safe() {
    assert_eq!(entry_anchor("oxygen-in"), "entry-oxygen-in");
    assert_eq!(entry_anchor("a b/c\u{e9}"), "entry-a_20_b_2f_c_e9_");
}

#[test]
fn nice_numbers_and_durations() {
    assert_eq!(nice_ceiling(1), 1);
    assert_eq!(nice_ceiling(3), 5);
    assert_eq!(nice_ceiling(1_001), 2_000);
    assert_eq!(nice_ceiling(u64::MAX), u64::MAX);
    assert_eq!(duration(15_000_000_000), "15 s");
    assert_eq!(duration(600_000_000_000), "10 min");
    assert_eq!(duration(3_900_000_000_000), "1 h 5 min");
    assert_eq!(duration(90_000_000_000_000), "1 d 1 h");
}

use crate::report::tests::{build, snapshot};
use crate::report::{Format, merge, render, render_cluster};

fn html(r: &Report) -> String {
    let mut v = Vec::new();
    render(r, Format::Html, &mut v).unwrap();
    String::from_utf8(v).unwrap()
}

fn html_cluster(r: &ClusterReport) -> String {
    let mut v = Vec::new();
    render_cluster(r, Format::Html, &mut v).unwrap();
    String::from_utf8(v).unwrap()
}

/// Replaces the volatile parts: the generator version, the serialised histograms (opaque
/// bytes owned by hdrhistogram) and the assets (constants, checked in a real browser by the
/// portwatch-tests crate) so the snapshot shows the page's structure and content.
fn redact(s: &str) -> String {
    let v = env!("CARGO_PKG_VERSION");
    let mut s = s
        .replace(CSS, "/* report.css */\n")
        .replace(JS, "// report.js\n")
        .replace(&format!("portwatch {v}"), "portwatch [version]")
        .replace(&format!("\"version\":\"{v}\""), "\"version\":\"[version]\"");
    let key = "\"hdr\":\"";
    let mut out = String::with_capacity(s.len());
    while let Some(i) = s.find(key) {
        out.push_str(&s[..i + key.len()]);
        let rest = &s[i + key.len()..];
        let end = rest.find('"').unwrap();
        if end > 0 {
            out.push_str("[hdr]");
        }
        s = rest[end..].to_owned();
    }
    out.push_str(&s);
    out
}

/// The ids the page defines and the in-page links it makes.
fn ids_and_links(page: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let grab = |pat: &str| -> BTreeSet<String> {
        page.match_indices(pat)
            .map(|(i, _)| {
                let rest = &page[i + pat.len()..];
                rest[..rest.find('"').unwrap()].to_owned()
            })
            .collect()
    };
    (grab(" id=\""), grab(" href=\"#"))
}

#[test]
fn node_and_cluster_pages_match_their_snapshots() {
    let a = build("node-a");
    snapshot("node.html", &redact(&html(&a)));
    let c = merge(&[build("node-b"), a]).unwrap();
    snapshot("cluster.html", &redact(&html_cluster(&c)));
}

#[test]
fn pages_are_deterministic_and_self_contained() {
    let (a, b) = (build("node-a"), build("node-a"));
    let page = html(&a);
    assert_eq!(page, html(&b));
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.trim_end().ends_with("</html>"));
    // Nothing is fetched: no external URL in src/href, a CSP forbidding it, CSS and JS inline.
    for bad in [
        "src=\"http",
        "href=\"http",
        "@import",
        "url(http",
        "<link rel=\"stylesheet",
    ] {
        assert!(!page.contains(bad), "{bad}");
    }
    assert!(page.contains("default-src 'none'"));
    assert!(page.contains(CSS) && page.contains(JS));
    // The embedded report reads back as the report.
    let start = page.find("id=\"portwatch-report\">").unwrap() + "id=\"portwatch-report\">".len();
    let end = start + page[start..].find("</script>").unwrap();
    let back = Report::from_json(&page.as_bytes()[start..end], "embedded").unwrap();
    assert_eq!(back, a);
}

#[test]
fn every_in_page_link_has_a_target_and_findings_name_their_entry() {
    let r = build("node-a");
    let page = html(&r);
    let (ids, links) = ids_and_links(&page);
    for l in &links {
        assert!(ids.contains(l), "link #{l} has no target");
    }
    // Every spec entry has a row; every finding that names an entry links to it (rows JSON).
    for e in &r.spec.entry_list {
        assert!(ids.contains(&entry_anchor(&e.id)), "{}", e.id);
    }
    let start = page.find("id=\"portwatch-rows\">").unwrap() + "id=\"portwatch-rows\">".len();
    let end = start + page[start..].find("</script>").unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&page[start..end]).unwrap();
    assert_eq!(rows.len(), r.findings.len());
    let mut linked = 0;
    for (row, f) in rows.iter().zip(&r.findings) {
        assert_eq!(row[2], f.kind.name());
        if let Some(e) = &f.entry {
            assert_eq!(row[4], entry_anchor(&e.id));
            assert!(ids.contains(row[4].as_str().unwrap()));
            assert_eq!(row[5], format!("{} ({}:{})", e.id, e.file, e.line));
            linked += 1;
        }
    }
    assert!(linked > 3, "{linked}");
    // The port map shows each status it has, with its text label beside the colour.
    assert!(page.contains("class=\"tile st-violation\""));
    assert!(page.contains("class=\"tile st-unused\""));
    assert!(page.contains("class=\"tile st-undocumented\""));
    assert!(page.contains("<span class=\"sl\">documented, unused</span>"));
}

#[test]
fn hostile_names_stay_text() {
    let mut r = build("node-a");
    let evil = "</script><!--<img src=x onerror=alert(1)>\"'&";
    r.node.name = evil.to_owned();
    r.spec.name = evil.to_owned();
    for e in &mut r.spec.entry_list {
        e.service = evil.to_owned();
    }
    for f in &mut r.findings {
        if let Some(e) = &mut f.entry {
            e.id = format!("{}{evil}", e.id);
        }
        f.processes = vec![evil.to_owned()];
    }
    for s in &mut r.services {
        s.service = evil.to_owned();
    }
    let page = html(&r);
    assert!(!page.contains("<img"), "markup leaked");
    assert!(!page.contains("<!--"), "comment opened");
    // Our three scripts close; nothing else does.
    assert_eq!(page.matches("</script>").count(), 3);
    assert!(
        page.contains("&lt;/script&gt;&lt;!--&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;")
    );
    let start = page.find("id=\"portwatch-report\">").unwrap() + "id=\"portwatch-report\">".len();
    let end = start + page[start..].find("</script>").unwrap();
    assert_eq!(
        Report::from_json(&page.as_bytes()[start..end], "embedded").unwrap(),
        r
    );
}

#[test]
fn the_chart_draws_the_busiest_services_with_distinct_styles() {
    let r = build("node-a");
    let page = html(&r);
    let with = r.services.iter().filter(|s| !s.series.is_empty()).count();
    assert!(with >= 2, "{with}");
    let chart = &page[page.find("<figure class=\"chart\">").unwrap()..];
    let chart = &chart[..chart.find("</figure>").unwrap()];
    assert_eq!(
        chart.matches("<polyline").count(),
        with.min(CHART_SERIES + 1)
    );
    assert!(chart.contains("stroke-dasharray=\"8 4\""));
    // The legend names each line in words.
    for s in r.services.iter().filter(|s| !s.series.is_empty()) {
        assert!(
            chart.contains(&format!("</svg> {}: ", esc(&s.service))),
            "{}",
            s.service
        );
    }
}

#[test]
fn an_old_report_without_entry_list_or_series_still_renders() {
    let mut r = build("node-a");
    r.spec.entry_list.clear();
    for s in &mut r.services {
        s.series = Series::default();
    }
    let page = html(&r);
    assert!(page.contains("This report has no traffic series"));
    let (ids, _) = ids_and_links(&page);
    for f in &r.findings {
        if let Some(e) = &f.entry {
            assert!(ids.contains(&entry_anchor(&e.id)), "{}", e.id);
        }
    }
}

#[test]
fn listeners_page_shows_verdicts_as_text() {
    use crate::classify::tests::{listener, spec};
    use crate::flow::Transport;
    use crate::host::PortRange;
    use crate::report::listeners::{ListenerReport, render as render_l};
    let ls = [
        listener(Transport::Tcp, "0.0.0.0", 22, Some("sshd")),
        listener(Transport::Tcp, "0.0.0.0", 9999, Some("<b>x</b>")),
    ];
    let r = ListenerReport {
        spec: "t.toml".into(),
        listeners: crate::classify::judge_listeners(&spec(), &ls, PortRange::LINUX_DEFAULT),
        not_listening: vec![],
        pids_unreadable: 2,
    };
    let mut out = Vec::new();
    render_l(&r, Format::Html, &mut out).unwrap();
    let s = String::from_utf8(out).unwrap();
    assert!(s.contains("<td class=\"st\"><span class=\"ic\" aria-hidden=\"true\">\u{2714}</span> documented (ssh)</td>"), "{s}");
    assert!(s.contains("class=\"st-undocumented\""), "{s}");
    assert!(
        s.contains("&lt;b&gt;x&lt;/b&gt;[100]") && !s.contains("<b>x"),
        "{s}"
    );
    assert!(s.contains("CAP_SYS_PTRACE"));
    assert!(!s.contains("<script"));
}

#[test]
fn thousands_of_services_keep_the_static_page_bounded() {
    let mut r = build("node-a");
    let undocumented = r
        .services
        .iter()
        .find(|s| s.entries.is_empty())
        .cloned()
        .unwrap();
    for i in 0..1000 {
        let mut s = undocumented.clone();
        s.service = format!("undocumented tcp/{} inbound", 20_000 + i);
        r.services.push(s);
    }
    let page = html(&r);
    let table = &page[page.find("<table class=\"services\">").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    assert_eq!(table.matches("<tr><td>").count(), SERVICES_TABLE);
    // The documented services are all kept.
    for s in r.services.iter().filter(|s| !s.entries.is_empty()) {
        assert!(
            table.contains(&format!("<tr><td>{}</td>", esc(&s.service))),
            "{}",
            s.service
        );
    }
    let more = r.services.len() - SERVICES_TABLE;
    assert!(page.contains(&format!("{more} more services")));
    // The chart still draws its six lines and one for the rest.
    let chart = &page[page.find("<figure class=\"chart\">").unwrap()..];
    let chart = &chart[..chart.find("</figure>").unwrap()];
    assert_eq!(chart.matches("<polyline").count(), CHART_SERIES + 1);
}
