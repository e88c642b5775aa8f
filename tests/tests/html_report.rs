//! The HTML report in a real browser (Debian's headless Chromium, driven over the DevTools
//! protocol): no console errors, nothing fetched, the expected findings present, finding links
//! landing on their spec entry, filters and printing working; screenshots kept under
//! target/artefacts/. Needs no privileges; needs `chromium` (`cargo xtask setup` installs it).
use std::path::PathBuf;

use anyhow::{Context, Result};
use portwatch::report::{self, Format, Report};
use portwatch_tests::browser::{Browser, Tab, file_url, find_chromium};
use portwatch_tests::report_fixture::node_report;
use serde_json::Value;

fn artefacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let d = target.join("artefacts");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn chromium() -> PathBuf {
    find_chromium().expect(
        "this test needs Chromium (Debian package `chromium`; `cargo xtask setup` installs it, or set PORTWATCH_CHROMIUM)",
    )
}

fn write_page(name: &str, render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> PathBuf {
    let mut v = Vec::new();
    render(&mut v).unwrap();
    let p = artefacts().join(name);
    std::fs::write(&p, v).unwrap();
    p
}

fn open(b: &mut Browser, page: &std::path::Path) -> Result<Tab> {
    let mut tab = b.new_tab(1280, 900)?;
    b.navigate(&mut tab, &file_url(page)?)?;
    Ok(tab)
}

fn errors(tab: &Tab) -> Vec<String> {
    tab.console
        .iter()
        .filter(|m| m.is_error())
        .map(|m| format!("{}: {}", m.kind, m.text))
        .collect()
}

fn strings(v: Value) -> Vec<String> {
    serde_json::from_value(v).unwrap()
}

#[test]
fn node_report_in_chromium() -> Result<()> {
    let r = node_report(0);
    let kinds: Vec<&str> = r.findings.iter().map(|f| f.kind.name()).collect();
    for k in [
        "wrong_direction",
        "peer_outside_zone",
        "process_mismatch",
        "undocumented",
        "undocumented_listener",
        "unused",
        "documented",
    ] {
        assert!(kinds.contains(&k), "fixture lacks {k}: {kinds:?}");
    }
    let page = write_page("report.html", |w| report::render(&r, Format::Html, w));
    let scratch = artefacts().join("tmp");
    let mut b = Browser::launch(&chromium(), &scratch)?;
    let mut tab = open(&mut b, &page)?;

    // The script ran to its end and drew the first page of findings.
    let ready = b.eval(&mut tab, "document.body.getAttribute('data-ready')")?;
    assert_eq!(ready, Value::from(r.findings.len().to_string()));
    let shown = b.eval(
        &mut tab,
        "document.querySelectorAll('#findings-body tr').length",
    )?;
    assert_eq!(shown, Value::from(r.findings.len().min(100)));
    // Nothing was fetched: no resource entries besides the document itself.
    let fetched = b.eval(&mut tab, "performance.getEntriesByType('resource').length")?;
    assert_eq!(fetched, Value::from(0));

    // The expected findings are in the table, as a reader sees them.
    let kinds_shown = strings(b.eval(
        &mut tab,
        "Array.from(document.querySelectorAll('#findings-body tr td:nth-child(2)')).map(t => t.textContent)",
    )?);
    for k in [
        "wrong direction",
        "peer outside zone",
        "process mismatch",
        "undocumented",
        "unused",
    ] {
        assert!(
            kinds_shown.iter().any(|s| s == k),
            "{k} not shown: {kinds_shown:?}"
        );
    }
    let text = b.eval(
        &mut tab,
        "document.getElementById('findings-table').innerText",
    )?;
    let text = text.as_str().context("innerText")?;
    for s in [
        "tcp/6379 inbound",
        "10.20.3.99",
        "python3",
        "spec names java",
    ] {
        assert!(text.contains(s), "{s} missing from the findings table");
    }

    // The wrong-direction finding links to its spec entry, which shows file:line.
    let wd = r
        .findings
        .iter()
        .find(|f| f.kind.name() == "wrong_direction")
        .and_then(|f| f.entry.clone())
        .context("wrong_direction names an entry")?;
    let href = b.eval(
        &mut tab,
        "(() => { const tr = Array.from(document.querySelectorAll('#findings-body tr')).find(t => t.children[1].textContent === 'wrong direction'); const a = tr.querySelector('a'); a.click(); return a.getAttribute('href'); })()",
    )?;
    assert_eq!(href, Value::from(format!("#entry-{}", wd.id)));
    let target = strings(b.eval(
        &mut tab,
        "(() => { const t = document.querySelector(':target'); return [t.id, t.querySelector('td.loc').textContent, String(Math.round(t.getBoundingClientRect().top))]; })()",
    )?);
    assert_eq!(target[0], format!("entry-{}", wd.id));
    assert_eq!(target[1], format!("{}:{}", wd.file, wd.line));
    let top: f64 = target[2].parse()?;
    assert!(
        (0.0..900.0).contains(&top),
        "entry row not scrolled into view: top {top}"
    );

    // The port map: one tile per spec entry plus the undocumented subjects, each labelled.
    let tiles = strings(b.eval(
        &mut tab,
        "Array.from(document.querySelectorAll('.tiles .tile .sl')).map(t => t.textContent)",
    )?);
    assert!(tiles.len() >= r.spec.entries as usize + 3, "{tiles:?}");
    for l in [
        "documented, used",
        "documented, unused",
        "violation",
        "undocumented",
        "not observable",
    ] {
        assert!(tiles.iter().any(|t| t == l), "no {l} tile: {tiles:?}");
    }
    // The chart has lines and a legend in words.
    let lines = b.eval(
        &mut tab,
        "document.querySelectorAll('#traffic svg polyline').length",
    )?;
    assert!(lines.as_u64().unwrap_or(0) >= 3, "{lines}");

    // Filters: by kind, then by text.
    let und = strings(b.eval(
        &mut tab,
        "(() => { const s = document.getElementById('f-kind'); s.value = 'undocumented'; s.dispatchEvent(new Event('change')); return Array.from(document.querySelectorAll('#findings-body tr td:nth-child(2)')).map(t => t.textContent); })()",
    )?);
    let n_und = r
        .findings
        .iter()
        .filter(|f| f.kind.name() == "undocumented")
        .count();
    assert_eq!(und.len(), n_und);
    assert!(und.iter().all(|k| k == "undocumented"), "{und:?}");
    let found = b.eval(
        &mut tab,
        "(() => { const s = document.getElementById('f-kind'); s.value = ''; const t = document.getElementById('f-text'); t.value = '3128'; t.dispatchEvent(new Event('input')); return document.querySelectorAll('#findings-body tr').length; })()",
    )?;
    assert_eq!(found, Value::from(1));

    // A summary card filters the table by its kind.
    let after_card = strings(b.eval(
        &mut tab,
        "(() => { document.getElementById('f-text').value = ''; document.querySelector('a.card[data-kind=unused]').click(); return Array.from(document.querySelectorAll('#findings-body tr td:nth-child(2)')).map(t => t.textContent); })()",
    )?);
    assert!(
        !after_card.is_empty() && after_card.iter().all(|k| k == "unused"),
        "{after_card:?}"
    );

    // Printing: controls hidden, every row drawn.
    b.call(
        Some(tab_session(&tab)),
        "Emulation.setEmulatedMedia",
        serde_json::json!({ "media": "print" }),
    )?;
    let printed = strings(b.eval(
        &mut tab,
        "(() => { const s = document.getElementById('f-kind'); s.value = ''; s.dispatchEvent(new Event('change')); window.dispatchEvent(new Event('beforeprint')); return [getComputedStyle(document.getElementById('filters')).display, String(document.querySelectorAll('#findings-body tr').length)]; })()",
    )?);
    assert_eq!(printed, ["none".to_owned(), r.findings.len().to_string()]);
    b.call(
        Some(tab_session(&tab)),
        "Emulation.setEmulatedMedia",
        serde_json::json!({ "media": "" }),
    )?;
    b.eval(&mut tab, "window.dispatchEvent(new Event('afterprint')); window.scrollTo(0, 0); location.hash = ''; 1")?;

    let errs = errors(&tab);
    assert!(errs.is_empty(), "console errors: {errs:#?}");

    std::fs::write(artefacts().join("report.png"), b.screenshot(&tab, 8000)?)?;
    std::fs::write(
        artefacts().join("report-top.png"),
        b.screenshot(&tab, 1500)?,
    )?;
    Ok(())
}

fn tab_session(t: &Tab) -> &str {
    t.session()
}

#[test]
fn cluster_report_in_chromium() -> Result<()> {
    let a = node_report(0);
    let mut b_rep: Report = a.clone();
    b_rep.node.name = "node-b".into();
    // node-b saw no undocumented proxy traffic and no mail.
    b_rep
        .findings
        .retain(|f| !(f.kind.name() == "undocumented" && f.port == Some(3128)));
    let c = report::merge(&[a, b_rep])?;
    let page = write_page("cluster.html", |w| {
        report::render_cluster(&c, Format::Html, w)
    });
    let mut b = Browser::launch(&chromium(), &artefacts().join("tmp"))?;
    let mut tab = open(&mut b, &page)?;
    let ready = b.eval(&mut tab, "document.body.getAttribute('data-ready')")?;
    assert_eq!(ready, Value::from(c.findings.len().to_string()));
    let nodes = strings(b.eval(
        &mut tab,
        "Array.from(document.querySelectorAll('#f-node option')).map(o => o.textContent)",
    )?);
    assert_eq!(nodes, ["all", "node-a", "node-b"]);
    let only_b = b.eval(
        &mut tab,
        "(() => { const s = document.getElementById('f-node'); s.value = 'node-b'; s.dispatchEvent(new Event('change')); return Array.from(document.querySelectorAll('#findings-body tr td:nth-child(2)')).every(t => t.textContent === 'node-b'); })()",
    )?;
    assert_eq!(only_b, Value::Bool(true));
    let errs = errors(&tab);
    assert!(errs.is_empty(), "console errors: {errs:#?}");
    std::fs::write(artefacts().join("cluster.png"), b.screenshot(&tab, 1500)?)?;
    Ok(())
}

/// The console check can fail: a page that throws and logs an error is caught.
#[test]
fn console_errors_are_caught() -> Result<()> {
    let p = artefacts().join("broken.html");
    std::fs::write(
        &p,
        "<!DOCTYPE html><title>x</title><script>console.error('deliberate'); undefinedFunction();</script>",
    )?;
    let mut b = Browser::launch(&chromium(), &artefacts().join("tmp"))?;
    let tab = open(&mut b, &p)?;
    let errs = errors(&tab);
    assert!(errs.iter().any(|e| e.contains("deliberate")), "{errs:?}");
    assert!(
        errs.iter().any(|e| e.contains("undefinedFunction")),
        "{errs:?}"
    );
    Ok(())
}
