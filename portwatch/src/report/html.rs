//! HTML rendering: one self-contained page per report (CSS, JS and SVG inline, nothing fetched)
//! with a summary, the port map, traffic per service over time, the top undocumented flows and
//! every finding, plus the report itself embedded as JSON. Deterministic; it owns this file and
//! the assets under html/, and reads the report model without changing it.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{self, Write};

use serde::Serialize;

use super::model::{Timestamp, rfc3339};
use super::text::{peers_cell, short_time};
use super::units;
use super::{ClusterReport, Report, cluster_header_lines, describe, header_lines};
use crate::classify::{EntryRef, Finding, FindingKind, Series, ServiceStats, Severity, Traffic};

mod services;
#[cfg(test)]
use services::nice_ceiling;
use services::{chart_svg, services_table};

/// The page's style sheet (screen and print).
pub const CSS: &str = include_str!("html/report.css");
/// The page's script: the findings table (filters, pages, printing every row).
pub const JS: &str = include_str!("html/report.js");

/// How many undocumented subjects the port map shows (the findings table has them all).
const MAP_UNDOCUMENTED: usize = 60;
/// How many undocumented flows the "top" table lists.
const TOP_UNDOCUMENTED: usize = 20;
/// How many services the duration and size table lists (documented ones first).
const SERVICES_TABLE: usize = 40;
/// How many services the chart draws one by one (the rest are summed).
const CHART_SERIES: usize = 6;

/// Renders a node report as a self-contained HTML page.
pub fn render(r: &Report, w: &mut impl Write) -> io::Result<()> {
    let page = Page::node(r);
    page.write(w, &|w: &mut dyn Write| json_in_script(w, r))
}

/// Renders a cluster report as a self-contained HTML page.
pub fn render_cluster(r: &ClusterReport, w: &mut impl Write) -> io::Result<()> {
    let page = Page::cluster(r);
    page.write(w, &|w: &mut dyn Write| json_in_script(w, r))
}

/// Text safe in HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The anchor of a spec entry's row: `entry-` and the id, every character outside
/// `[A-Za-z0-9_.-]` written as `_<hex>_` (report.js builds the same).
pub fn entry_anchor(id: &str) -> String {
    let mut s = String::from("entry-");
    for c in id.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
            s.push(c);
        } else {
            let _ = write!(s, "_{:x}_", c as u32);
        }
    }
    s
}

/// A writer that makes JSON safe inside `<script>`: `<`, `>` and `&` (which JSON only has
/// inside strings) become `\u003c`, `\u003e`, `\u0026`, so no string can close the element or
/// open a comment.
struct ScriptSafe<'a>(&'a mut dyn Write);

impl Write for ScriptSafe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut start = 0;
        for (i, b) in buf.iter().enumerate() {
            let rep: &[u8] = match b {
                b'<' => b"\\u003c",
                b'>' => b"\\u003e",
                b'&' => b"\\u0026",
                _ => continue,
            };
            self.0.write_all(&buf[start..i])?;
            self.0.write_all(rep)?;
            start = i + 1;
        }
        self.0.write_all(&buf[start..])?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

fn json_in_script(w: &mut dyn Write, v: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(ScriptSafe(w), v).map_err(io::Error::other)
}

/// Where an entry stands, as the port map shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Status {
    Violation,
    Used,
    Unused,
    Undocumented,
    Unknown,
    NotObservable,
}

impl Status {
    const ALL: [Status; 6] = [
        Status::Used,
        Status::Unused,
        Status::Violation,
        Status::Undocumented,
        Status::Unknown,
        Status::NotObservable,
    ];
    pub(super) fn class(self) -> &'static str {
        match self {
            Self::Violation => "st-violation",
            Self::Used => "st-used",
            Self::Unused => "st-unused",
            Self::Undocumented => "st-undocumented",
            Self::Unknown => "st-unknown",
            Self::NotObservable => "st-na",
        }
    }
    pub(super) fn icon(self) -> &'static str {
        match self {
            Self::Violation => "\u{26a0}",
            Self::Used => "\u{2714}",
            Self::Unused => "\u{25cb}",
            Self::Undocumented => "\u{2716}",
            Self::Unknown => "?",
            Self::NotObservable => "\u{2013}",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Self::Violation => "violation",
            Self::Used => "documented, used",
            Self::Unused => "documented, unused",
            Self::Undocumented => "undocumented",
            Self::Unknown => "usage unknown",
            Self::NotObservable => "not observable",
        }
    }
    fn meaning(self) -> &'static str {
        match self {
            Self::Violation => {
                "traffic on a documented port that breaks its rule (direction, transport, zone or process): hatched"
            }
            Self::Used => "documented and seen in the window: solid",
            Self::Unused => {
                "documented, no traffic in the window: a candidate for closing; outlined"
            }
            Self::Undocumented => "seen on the wire or listening, no entry documents it: dotted",
            Self::Unknown => {
                "no classified flow, but per-port totals saw packets while flow detail was incomplete"
            }
            Self::NotObservable => "the vendor lists no port or transport: nothing to observe",
        }
    }
}

fn severity_icon(s: Severity) -> &'static str {
    match s {
        Severity::Violation => "\u{26a0}",
        Severity::Warning => "\u{2716}",
        Severity::Notice => "\u{25cb}",
        Severity::Info => "\u{2714}",
    }
}

/// One spec entry in the port map.
struct EntryRow {
    entry: EntryRef,
    status: Status,
    /// Cluster: on which nodes it was used, unused, unknown.
    nodes: String,
    traffic: Traffic,
    /// Findings naming the entry, by kind.
    kinds: BTreeMap<&'static str, u64>,
}

/// Undocumented traffic or listeners with one subject (over nodes, in a cluster).
struct UndocRow {
    kind: &'static str,
    subject: String,
    nodes: BTreeSet<String>,
    traffic: Traffic,
    peers: u64,
}

/// The table row of one finding, as report.js shows it.
#[derive(Serialize)]
struct FindingRow<'a>(
    /// severity
    String,
    /// node ("" in a node report)
    &'a str,
    /// kind name
    &'static str,
    /// subject
    String,
    /// entry anchor ("" when the finding names no entry)
    String,
    /// entry label: `id (file:line)`
    String,
    /// flows, packets, bytes (formatted), first seen, last seen
    u64,
    u64,
    String,
    String,
    String,
    /// peers
    String,
    /// detail
    String,
);

fn finding_row<'a>(node: Option<&'a str>, f: &Finding) -> FindingRow<'a> {
    let t = &f.traffic;
    let (anchor, label) = match &f.entry {
        Some(e) => (
            entry_anchor(&e.id),
            format!("{} ({}:{})", e.id, e.file, e.line),
        ),
        None => (String::new(), String::new()),
    };
    FindingRow(
        f.severity.to_string(),
        node.unwrap_or(""),
        f.kind.name(),
        f.subject(),
        anchor,
        label,
        t.flows,
        t.packets(),
        if t.flows > 0 {
            units::bytes(t.bytes())
        } else {
            String::new()
        },
        short_time(t.first_seen),
        short_time(t.last_seen),
        peers_cell(f, 5),
        describe(f),
    )
}

/// Everything a page shows, from a node or a cluster report.
struct Page<'a> {
    title: String,
    cluster: bool,
    header: Vec<(&'static str, String)>,
    window: (&'a Timestamp, &'a Timestamp),
    generated: &'a Timestamp,
    generator: String,
    /// (node, flows, note)
    nodes: Vec<(String, u64, String)>,
    kinds: Vec<(&'static str, u64)>,
    notes: Vec<String>,
    entries: Vec<EntryRow>,
    undocumented: Vec<UndocRow>,
    services: &'a [ServiceStats],
    top: Vec<(Option<&'a str>, &'a Finding)>,
    rows: Vec<FindingRow<'a>>,
}

fn is_violation(k: &FindingKind) -> bool {
    matches!(
        k,
        FindingKind::WrongDirection { .. }
            | FindingKind::WrongTransport { .. }
            | FindingKind::PeerOutsideZone { .. }
            | FindingKind::ProcessMismatch { .. }
    )
}

/// Entries without a transport (the vendor says N/A): nothing on the wire can match them.
fn not_observable(e: &EntryRef) -> bool {
    e.transport == "none"
}

/// The spec's entries in file order: the report's list, or (older reports) those findings name.
fn entry_list<'a>(
    list: &'a [EntryRef],
    named: impl Iterator<Item = &'a EntryRef>,
) -> Vec<EntryRef> {
    if !list.is_empty() {
        return list.to_vec();
    }
    let mut seen = BTreeMap::new();
    for e in named {
        seen.entry(e.id.clone()).or_insert_with(|| e.clone());
    }
    let mut v: Vec<EntryRef> = seen.into_values().collect();
    v.sort_by(|a, b| (&a.file, a.line, &a.id).cmp(&(&b.file, b.line, &b.id)));
    v
}

fn undocumented_rows<'a>(
    it: impl Iterator<Item = (Option<&'a str>, &'a Finding)>,
) -> Vec<UndocRow> {
    let mut m: BTreeMap<(&'static str, String), UndocRow> = BTreeMap::new();
    for (node, f) in it {
        if !matches!(
            f.kind,
            FindingKind::Undocumented | FindingKind::UndocumentedListener { .. }
        ) {
            continue;
        }
        let kind = f.kind.name();
        let subject = f.subject();
        let row = m
            .entry((kind, subject.clone()))
            .or_insert_with(|| UndocRow {
                kind,
                subject,
                nodes: BTreeSet::new(),
                traffic: Traffic::default(),
                peers: 0,
            });
        if let Some(n) = node {
            row.nodes.insert(n.to_owned());
        }
        row.traffic.add(&f.traffic);
        row.peers = row.peers.max(f.peers_total);
    }
    let mut v: Vec<UndocRow> = m.into_values().collect();
    v.sort_by(|a, b| {
        b.traffic
            .bytes()
            .cmp(&a.traffic.bytes())
            .then_with(|| a.kind.cmp(b.kind))
            .then_with(|| a.subject.cmp(&b.subject))
    });
    v
}

fn top_undocumented<'a>(
    it: impl Iterator<Item = (Option<&'a str>, &'a Finding)>,
) -> Vec<(Option<&'a str>, &'a Finding)> {
    let mut v: Vec<_> = it
        .filter(|(_, f)| f.kind == FindingKind::Undocumented)
        .collect();
    v.sort_by(|a, b| {
        b.1.traffic
            .bytes()
            .cmp(&a.1.traffic.bytes())
            .then_with(|| a.0.cmp(&b.0))
            .then_with(|| a.1.sort_key().cmp(&b.1.sort_key()))
    });
    v.truncate(TOP_UNDOCUMENTED);
    v
}

impl<'a> Page<'a> {
    fn node(r: &'a Report) -> Self {
        let mut named: BTreeMap<&str, (BTreeMap<&'static str, u64>, Traffic)> = BTreeMap::new();
        for f in &r.findings {
            if let Some(e) = &f.entry {
                let n = named.entry(e.id.as_str()).or_default();
                *n.0.entry(f.kind.name()).or_default() += 1;
                if f.traffic.flows > 0 && f.kind != FindingKind::Undocumented {
                    n.1.add(&f.traffic);
                }
            }
        }
        let list = entry_list(
            &r.spec.entry_list,
            r.findings.iter().filter_map(|f| f.entry.as_ref()),
        );
        let entries = list
            .into_iter()
            .map(|entry| {
                let (kinds, traffic) = named.get(entry.id.as_str()).cloned().unwrap_or_default();
                let has = |k: &str| kinds.contains_key(k);
                let status = if r.findings.iter().any(|f| {
                    is_violation(&f.kind) && f.entry.as_ref().is_some_and(|e| e.id == entry.id)
                }) {
                    Status::Violation
                } else if has("documented") || has("peer_outside_zone") {
                    Status::Used
                } else if has("unused") {
                    Status::Unused
                } else if not_observable(&entry) {
                    Status::NotObservable
                } else {
                    Status::Unknown
                };
                EntryRow {
                    entry,
                    status,
                    nodes: String::new(),
                    traffic,
                    kinds,
                }
            })
            .collect();
        let mut notes = Vec::new();
        if r.summary.flows_approximate {
            notes.push(
                "Flow detail is incomplete (see health): flow counts are lower bounds, per-port totals are exact."
                    .to_owned(),
            );
        }
        if let Some(why) = &r.capture.listeners_unavailable {
            notes.push(format!("Listening sockets were not examined: {why}."));
        }
        let all = || r.findings.iter().map(|f| (None, f));
        Page {
            title: format!("portwatch: {} against {}", r.node.name, r.spec.name),
            cluster: false,
            header: header_lines(r),
            window: (&r.window.start, &r.window.end),
            generated: &r.generated,
            generator: format!("{} {}", r.generator.name, r.generator.version),
            nodes: vec![(r.node.name.clone(), r.summary.flows.total, String::new())],
            kinds: FindingKind::NAMES
                .iter()
                .map(|k| (*k, r.summary.kinds.get(*k).copied().unwrap_or(0)))
                .collect(),
            notes,
            entries,
            undocumented: undocumented_rows(all()),
            services: &r.services,
            top: top_undocumented(all()),
            rows: r.findings.iter().map(|f| finding_row(None, f)).collect(),
        }
    }

    fn cluster(c: &'a ClusterReport) -> Self {
        let mut named: BTreeMap<&str, BTreeMap<&'static str, u64>> = BTreeMap::new();
        let mut violating: BTreeSet<&str> = BTreeSet::new();
        for nf in &c.findings {
            if let Some(e) = &nf.finding.entry {
                *named
                    .entry(e.id.as_str())
                    .or_default()
                    .entry(nf.finding.kind.name())
                    .or_default() += 1;
                if is_violation(&nf.finding.kind) {
                    violating.insert(e.id.as_str());
                }
            }
        }
        let usage: BTreeMap<&str, &super::merge::EntryUsage> =
            c.entries.iter().map(|u| (u.entry.id.as_str(), u)).collect();
        let unused: BTreeSet<&str> = c.unused.iter().map(|e| e.id.as_str()).collect();
        let list = entry_list(
            &c.spec.entry_list,
            c.entries
                .iter()
                .map(|u| &u.entry)
                .chain(c.unused.iter())
                .chain(c.findings.iter().filter_map(|f| f.finding.entry.as_ref())),
        );
        let entries = list
            .into_iter()
            .map(|entry| {
                let id = entry.id.as_str();
                let u = usage.get(id);
                let mut kinds = named.get(id).cloned().unwrap_or_default();
                let used = u.is_some_and(|u| !u.used_on.is_empty());
                if used {
                    kinds.insert("documented", u.map_or(0, |u| u.used_on.len() as u64));
                }
                if unused.contains(id) {
                    kinds.insert("unused", c.nodes.len() as u64);
                }
                let status = if violating.contains(id) {
                    Status::Violation
                } else if used {
                    Status::Used
                } else if unused.contains(id) {
                    Status::Unused
                } else if not_observable(&entry) {
                    Status::NotObservable
                } else {
                    Status::Unknown
                };
                let mut where_ = Vec::new();
                if let Some(u) = u {
                    for (what, v) in [
                        ("used on", &u.used_on),
                        ("unused on", &u.unused_on),
                        ("unknown on", &u.unknown_on),
                    ] {
                        if !v.is_empty() {
                            where_.push(format!("{what} {}", v.join(", ")));
                        }
                    }
                    if !u.unused_ports.is_empty() {
                        where_.push(format!(
                            "no traffic on {} where used",
                            u.unused_ports.join(", ")
                        ));
                    }
                }
                EntryRow {
                    status,
                    nodes: where_.join("; "),
                    traffic: u.map(|u| u.traffic).unwrap_or_default(),
                    kinds,
                    entry,
                }
            })
            .collect::<Vec<_>>();
        let mut kinds: Vec<(&'static str, u64)> = FindingKind::NAMES
            .iter()
            .map(|k| (*k, c.kinds.get(*k).copied().unwrap_or(0)))
            .collect();
        for (k, n) in kinds.iter_mut() {
            match *k {
                "unused" => *n = c.unused.len() as u64,
                "documented" => {
                    *n = entries
                        .iter()
                        .filter(|e| e.kinds.contains_key("documented"))
                        .count() as u64
                }
                _ => {}
            }
        }
        let nodes = c
            .nodes
            .iter()
            .map(|n| {
                let mut note = Vec::new();
                if n.flows_approximate {
                    note.push("flows approximate");
                }
                if !n.listeners_examined {
                    note.push("listeners not examined");
                }
                (n.name.clone(), n.flows, note.join(", "))
            })
            .collect();
        let all = || {
            c.findings
                .iter()
                .map(|nf| (Some(nf.node.as_str()), &nf.finding))
        };
        Page {
            title: format!(
                "portwatch: cluster of {} nodes against {}",
                c.nodes.len(),
                c.spec.name
            ),
            cluster: true,
            header: cluster_header_lines(c),
            window: (&c.window.start, &c.window.end),
            generated: &c.generated,
            generator: format!("{} {}", c.generator.name, c.generator.version),
            nodes,
            kinds,
            notes: vec![
                "Cluster view: an entry is unused only if it is unused on every node; documented and unused counts are entries, the other counts are node findings."
                    .to_owned(),
            ],
            entries,
            undocumented: undocumented_rows(all()),
            services: &c.services,
            top: top_undocumented(all()),
            rows: all().map(|(n, f)| finding_row(n, f)).collect(),
        }
    }

    fn write(
        &self,
        w: &mut dyn Write,
        report_json: &dyn Fn(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut s = String::with_capacity(64 * 1024);
        self.head(&mut s);
        self.summary(&mut s);
        self.port_map(&mut s);
        self.chart(&mut s);
        self.top_flows(&mut s);
        self.findings(&mut s);
        w.write_all(s.as_bytes())?;
        // The rows and the script come before the full report, so the findings table is drawn
        // while the browser is still reading the (much larger) embedded report.
        w.write_all(b"<script type=\"application/json\" id=\"portwatch-rows\">")?;
        json_in_script(w, &self.rows)?;
        w.write_all(b"</script>\n<script>\n")?;
        w.write_all(JS.as_bytes())?;
        w.write_all(b"</script>\n<script type=\"application/json\" id=\"portwatch-report\">")?;
        report_json(w)?;
        w.write_all(b"</script>\n</body>\n</html>\n")
    }

    fn head(&self, s: &mut String) {
        let _ = write!(
            s,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n\
             <meta name=\"generator\" content=\"{}\">\n\
             <link rel=\"icon\" href=\"data:,\">\n<title>{}</title>\n<style>\n{CSS}</style>\n</head>\n<body class=\"{}\">\n",
            esc(&self.generator),
            esc(&self.title),
            if self.cluster { "cluster" } else { "node" }
        );
        let _ = write!(
            s,
            "<header>\n<h1>{}</h1>\n<p class=\"sub\">Observed {} to {} ({}). Generated {} by {}.</p>\n\
             <nav class=\"toc\"><a href=\"#summary\">Summary</a> <a href=\"#port-map\">Port map</a> <a href=\"#traffic\">Traffic over time</a> <a href=\"#top-undocumented\">Top undocumented flows</a> <a href=\"#findings\">Findings</a></nav>\n</header>\n<main>\n",
            esc(&self.title),
            esc(&self.window.0.utc),
            esc(&self.window.1.utc),
            duration(self.window.1.unix_ns.saturating_sub(self.window.0.unix_ns)),
            esc(&self.generated.utc),
            esc(&self.generator),
        );
    }

    fn summary(&self, s: &mut String) {
        s.push_str("<section id=\"summary\">\n<h2>Summary</h2>\n<div class=\"cards\">\n");
        for (k, n) in &self.kinds {
            let sev = kind_severity(k);
            let _ = writeln!(
                s,
                "<a class=\"card sev-{sev}{}\" href=\"#findings\" data-kind=\"{k}\"><span class=\"n\">{n}</span><span class=\"k\"><span class=\"ic\" aria-hidden=\"true\">{}</span> {}</span><span class=\"sev\">{sev}</span></a>",
                if *n == 0 { " zero" } else { "" },
                severity_icon(severity_of(sev)),
                k.replace('_', " "),
            );
        }
        s.push_str("</div>\n<dl class=\"facts\">\n");
        for (k, v) in &self.header {
            let _ = writeln!(s, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
        }
        s.push_str("</dl>\n");
        let _ = write!(
            s,
            "<h3>Nodes</h3>\n<table class=\"nodes\"><thead><tr><th>Node</th><th class=\"r\">Flows</th><th>Note</th></tr></thead><tbody>\n"
        );
        for (n, flows, note) in &self.nodes {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td class=\"r\">{flows}</td><td>{}</td></tr>",
                esc(n),
                esc(note)
            );
        }
        s.push_str("</tbody></table>\n");
        for n in &self.notes {
            let _ = writeln!(s, "<p class=\"note\">{}</p>", esc(n));
        }
        s.push_str("</section>\n");
    }

    fn port_map(&self, s: &mut String) {
        s.push_str("<section id=\"port-map\">\n<h2>Port map</h2>\n<p>Every spec entry against what was seen, and the undocumented traffic and listeners. Each tile links to its row below.</p>\n");
        s.push_str("<ul class=\"legend\" aria-label=\"Legend\">\n");
        for st in Status::ALL {
            let n = if st == Status::Undocumented {
                self.undocumented.len()
            } else {
                self.entries.iter().filter(|e| e.status == st).count()
            };
            let _ = writeln!(
                s,
                "<li><span class=\"swatch {}\"><span class=\"ic\" aria-hidden=\"true\">{}</span></span> <b>{}</b> ({n}): {}</li>",
                st.class(),
                st.icon(),
                st.label(),
                esc(st.meaning())
            );
        }
        s.push_str("</ul>\n<div class=\"tiles\">\n");
        for e in &self.entries {
            let _ = writeln!(
                s,
                "<a class=\"tile {}\" href=\"#{}\" title=\"{} ({}): {}\"><span class=\"ic\" aria-hidden=\"true\">{}</span><span class=\"p\">{}/{}</span><span class=\"sv\">{}</span><span class=\"sl\">{}</span></a>",
                e.status.class(),
                entry_anchor(&e.entry.id),
                esc(&e.entry.id),
                esc(&e.entry.service),
                e.status.label(),
                e.status.icon(),
                esc(&e.entry.transport),
                esc(&e.entry.ports),
                esc(&e.entry.service),
                e.status.label(),
            );
        }
        for (i, u) in self.undocumented.iter().take(MAP_UNDOCUMENTED).enumerate() {
            let st = Status::Undocumented;
            let _ = writeln!(
                s,
                "<a class=\"tile {}\" href=\"#undoc-{i}\" title=\"{}\"><span class=\"ic\" aria-hidden=\"true\">{}</span><span class=\"p\">{}</span><span class=\"sv\">{}</span><span class=\"sl\">{}</span></a>",
                st.class(),
                esc(&u.subject),
                st.icon(),
                esc(&u.subject),
                u.kind.replace('_', " "),
                st.label(),
            );
        }
        s.push_str("</div>\n");
        if self.undocumented.len() > MAP_UNDOCUMENTED {
            let _ = writeln!(
                s,
                "<p class=\"note\">{} more undocumented subjects (smaller by bytes) are in the findings table.</p>",
                self.undocumented.len() - MAP_UNDOCUMENTED
            );
        }
        // The entries table.
        let _ = write!(
            s,
            "<h3>Spec entries</h3>\n<table class=\"entries\"><thead><tr><th>Status</th><th>Entry</th><th>Service</th><th>Ports</th><th>Direction</th><th>Source</th>{}<th class=\"r\">Flows</th><th class=\"r\">Bytes</th><th>Findings</th></tr></thead><tbody>\n",
            if self.cluster { "<th>Nodes</th>" } else { "" }
        );
        for e in &self.entries {
            let x = &e.entry;
            let kinds: Vec<String> = FindingKind::NAMES
                .iter()
                .filter_map(|k| {
                    e.kinds
                        .get(*k)
                        .map(|n| format!("{n}\u{a0}{}", k.replace('_', "\u{a0}")))
                })
                .collect();
            let _ = write!(
                s,
                "<tr id=\"{}\" class=\"{}\"><td class=\"st\"><span class=\"ic\" aria-hidden=\"true\">{}</span> {}</td><td><code>{}</code></td><td>{}</td><td>{}/{}</td><td>{}</td><td class=\"loc\">{}:{}</td>",
                entry_anchor(&x.id),
                e.status.class(),
                e.status.icon(),
                e.status.label(),
                esc(&x.id),
                esc(&x.service),
                esc(&x.transport),
                esc(&x.ports),
                esc(&x.direction),
                esc(&x.file),
                x.line,
            );
            if self.cluster {
                let _ = write!(s, "<td>{}</td>", esc(&e.nodes));
            }
            let _ = writeln!(
                s,
                "<td class=\"r\">{}</td><td class=\"r\">{}</td><td>{}</td></tr>",
                num(e.traffic.flows),
                bytes_or_dash(&e.traffic),
                esc(&kinds.join(", "))
            );
        }
        s.push_str("</tbody></table>\n");
        if !self.undocumented.is_empty() {
            let _ = write!(
                s,
                "<h3>Undocumented (no entry)</h3>\n<table class=\"undoc\"><thead><tr><th>Status</th><th>Kind</th><th>Subject</th>{}<th class=\"r\">Flows</th><th class=\"r\">Bytes</th><th class=\"r\">Peers</th></tr></thead><tbody>\n",
                if self.cluster { "<th>Nodes</th>" } else { "" }
            );
            for (i, u) in self.undocumented.iter().take(MAP_UNDOCUMENTED).enumerate() {
                let st = Status::Undocumented;
                let _ = write!(
                    s,
                    "<tr id=\"undoc-{i}\" class=\"{}\"><td class=\"st\"><span class=\"ic\" aria-hidden=\"true\">{}</span> {}</td><td>{}</td><td>{}</td>",
                    st.class(),
                    st.icon(),
                    st.label(),
                    u.kind.replace('_', " "),
                    esc(&u.subject),
                );
                if self.cluster {
                    let nodes: Vec<&str> = u.nodes.iter().map(String::as_str).collect();
                    let _ = write!(s, "<td>{}</td>", esc(&nodes.join(", ")));
                }
                let _ = writeln!(
                    s,
                    "<td class=\"r\">{}</td><td class=\"r\">{}</td><td class=\"r\">{}</td></tr>",
                    num(u.traffic.flows),
                    bytes_or_dash(&u.traffic),
                    num(u.peers)
                );
            }
            s.push_str("</tbody></table>\n");
        }
        s.push_str("</section>\n");
    }

    fn chart(&self, s: &mut String) {
        s.push_str("<section id=\"traffic\">\n<h2>Traffic per service over time</h2>\n");
        let with: Vec<&ServiceStats> = self
            .services
            .iter()
            .filter(|x| !x.series.is_empty())
            .collect();
        if with.is_empty() {
            s.push_str("<p class=\"note\">This report has no traffic series (no classified flows, or a report written before portwatch recorded them).</p>\n");
        } else {
            chart_svg(s, &with);
        }
        services_table(s, self.services);
        s.push_str("</section>\n");
    }

    fn top_flows(&self, s: &mut String) {
        s.push_str("<section id=\"top-undocumented\">\n<h2>Top undocumented flows</h2>\n");
        if self.top.is_empty() {
            s.push_str("<p>No undocumented traffic.</p>\n</section>\n");
            return;
        }
        let _ = write!(
            s,
            "<p>The {} undocumented subjects that carried the most bytes, with their peers.</p>\n<table class=\"top\"><thead><tr>{}<th>Subject</th><th class=\"r\">Flows</th><th class=\"r\">Packets</th><th class=\"r\">Bytes</th><th>First seen</th><th>Last seen</th><th>Peers (by bytes)</th><th>Process</th></tr></thead><tbody>\n",
            self.top.len(),
            if self.cluster { "<th>Node</th>" } else { "" }
        );
        for (node, f) in &self.top {
            let t = &f.traffic;
            s.push_str("<tr>");
            if let Some(n) = node {
                let _ = write!(s, "<td>{}</td>", esc(n));
            }
            let _ = write!(
                s,
                "<td>{}</td><td class=\"r\">{}</td><td class=\"r\">{}</td><td class=\"r\">{}</td><td>{}</td><td>{}</td><td><ul class=\"peers\">",
                esc(&f.subject()),
                t.flows,
                t.packets(),
                units::bytes(t.bytes()),
                short_time(t.first_seen),
                short_time(t.last_seen),
            );
            for p in f.peers.iter().take(5) {
                let _ = write!(
                    s,
                    "<li><code>{}</code> {} flows, {}</li>",
                    esc(&p.addr.to_string()),
                    p.flows,
                    units::bytes(p.bytes)
                );
            }
            let more = f.peers_total.saturating_sub(f.peers.len().min(5) as u64);
            if more > 0 {
                let _ = write!(s, "<li>and {more} more</li>");
            }
            let _ = writeln!(
                s,
                "</ul></td><td>{}</td></tr>",
                esc(&f.processes.join(", "))
            );
        }
        s.push_str("</tbody></table>\n</section>\n");
    }

    fn findings(&self, s: &mut String) {
        let _ = write!(
            s,
            "<section id=\"findings\">\n<h2>Findings ({})</h2>\n<p>Every finding, most serious first. The entry column links to the spec entry in the port map (file:line of the spec).</p>\n\
             <form class=\"filters\" id=\"filters\" onsubmit=\"return false\">\n<label>Severity <select id=\"f-sev\"><option value=\"\">all</option>",
            self.rows.len()
        );
        for sev in ["violation", "warning", "notice", "info"] {
            let _ = write!(s, "<option>{sev}</option>");
        }
        s.push_str(
            "</select></label>\n<label>Kind <select id=\"f-kind\"><option value=\"\">all</option>",
        );
        for (k, n) in &self.kinds {
            if *n > 0 && self.rows.iter().any(|r| r.2 == *k) {
                let _ = write!(s, "<option value=\"{k}\">{}</option>", k.replace('_', " "));
            }
        }
        s.push_str("</select></label>\n");
        if self.cluster {
            s.push_str("<label>Node <select id=\"f-node\"><option value=\"\">all</option>");
            for (n, _, _) in &self.nodes {
                let _ = write!(s, "<option>{}</option>", esc(n));
            }
            s.push_str("</select></label>\n");
        }
        s.push_str(
            "<label>Search <input id=\"f-text\" type=\"search\" placeholder=\"port, peer, entry, process\"></label>\n\
             <label>Rows per page <select id=\"f-size\"><option>50</option><option selected>100</option><option>500</option></select></label>\n</form>\n\
             <p class=\"pager\"><button type=\"button\" id=\"p-prev\">\u{2190} previous</button> <span id=\"p-info\" role=\"status\"></span> <button type=\"button\" id=\"p-next\">next \u{2192}</button></p>\n",
        );
        let _ = write!(
            s,
            "<table class=\"findings\" id=\"findings-table\"><thead><tr><th>Severity</th>{}<th>Kind</th><th>Subject</th><th>Spec entry</th><th class=\"r\">Flows</th><th class=\"r\">Packets</th><th class=\"r\">Bytes</th><th>First seen</th><th>Last seen</th><th>Top peers</th><th>Detail</th></tr></thead>\n<tbody id=\"findings-body\"></tbody></table>\n\
             <noscript><p class=\"note\">The findings table needs JavaScript; the same findings are in the JSON embedded at the end of this file (script id portwatch-report) and in the text and Markdown reports.</p></noscript>\n</section>\n</main>\n",
            if self.cluster { "<th>Node</th>" } else { "" }
        );
        let _ = writeln!(
            s,
            "<footer><p>portwatch report: {}. The report data is embedded in this file as JSON (<code>script#portwatch-report</code>).</p></footer>",
            esc(&self.generator)
        );
    }
}

fn kind_severity(k: &str) -> &'static str {
    match k {
        "wrong_direction" | "wrong_transport" | "peer_outside_zone" => "violation",
        "undocumented" | "undocumented_listener" | "process_mismatch" => "warning",
        "documented" => "info",
        _ => "notice",
    }
}

fn severity_of(s: &str) -> Severity {
    match s {
        "violation" => Severity::Violation,
        "warning" => Severity::Warning,
        "info" => Severity::Info,
        _ => Severity::Notice,
    }
}

fn num(n: u64) -> String {
    if n == 0 { "-".into() } else { n.to_string() }
}

fn bytes_or_dash(t: &Traffic) -> String {
    if t.flows == 0 {
        "-".into()
    } else {
        units::bytes(t.bytes())
    }
}

/// A duration in nanoseconds, in words: `10 min`, `2 h 5 min`, `3 d 4 h`.
fn duration(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

#[cfg(test)]
mod tests;
