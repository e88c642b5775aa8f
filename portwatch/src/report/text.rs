//! The terminal rendering: a header, a findings table and per-service distributions. Plain
//! ASCII, columns sized to their content, deterministic.
use std::io::{self, Write};

use super::model::{Report, rfc3339};
use super::units;
use super::{ClusterReport, describe};
use crate::classify::{Finding, ServiceStats};

/// A table with left-aligned text columns and right-aligned number columns.
pub(crate) struct Table {
    head: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(cols: &[(&'static str, bool)]) -> Self {
        Self {
            head: cols.iter().map(|c| c.0).collect(),
            right: cols.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, r: Vec<String>) {
        self.rows.push(r);
    }

    pub(crate) fn write(&self, w: &mut impl Write, indent: &str) -> io::Result<()> {
        let mut width: Vec<usize> = self.head.iter().map(|h| h.len()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |w: &mut dyn Write, cells: &[String]| -> io::Result<()> {
            let mut s = String::from(indent);
            for (i, c) in cells.iter().enumerate() {
                let pad = width[i].saturating_sub(c.chars().count());
                if i > 0 {
                    s.push_str("  ");
                }
                if self.right[i] {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    if i + 1 < cells.len() {
                        s.push_str(&" ".repeat(pad));
                    }
                }
            }
            writeln!(w, "{}", s.trim_end())
        };
        let head: Vec<String> = self.head.iter().map(|h| (*h).to_owned()).collect();
        line(w, &head)?;
        for r in &self.rows {
            line(w, r)?;
        }
        Ok(())
    }
}

/// `MM-DD HH:MM:SS` (UTC), or `-` for never.
pub(crate) fn short_time(ns: u64) -> String {
    if ns == 0 {
        return "-".to_owned();
    }
    let t = rfc3339(ns);
    format!("{} {}", &t[5..10], &t[11..19])
}

pub(crate) fn peers_cell(f: &Finding, max: usize) -> String {
    if f.peers.is_empty() {
        return "-".to_owned();
    }
    let mut s: Vec<String> = f
        .peers
        .iter()
        .take(max)
        .map(|p| p.addr.to_string())
        .collect();
    let more = f.peers_total.saturating_sub(s.len() as u64);
    if more > 0 {
        s.push(format!("+{more}"));
    }
    s.join(" ")
}

pub(crate) fn entry_cell(f: &Finding) -> String {
    match &f.entry {
        Some(e) => format!("{} ({}:{})", e.id, e.file, e.line),
        None => "-".to_owned(),
    }
}

fn num_or_dash(flows: u64, v: String) -> String {
    if flows == 0 { "-".to_owned() } else { v }
}

fn findings_table(findings: &[(Option<&str>, &Finding)], w: &mut impl Write) -> io::Result<()> {
    let node_col = findings.iter().any(|(n, _)| n.is_some());
    let mut cols = vec![("SEVERITY", false)];
    if node_col {
        cols.push(("NODE", false));
    }
    cols.extend([
        ("KIND", false),
        ("SUBJECT", false),
        ("ENTRY", false),
        ("FLOWS", true),
        ("PACKETS", true),
        ("BYTES", true),
        ("FIRST SEEN", false),
        ("LAST SEEN", false),
        ("PEERS", false),
        ("DETAIL", false),
    ]);
    let mut t = Table::new(&cols);
    for (node, f) in findings {
        let tr = &f.traffic;
        let mut r = vec![f.severity.to_string()];
        if node_col {
            r.push(node.unwrap_or("-").to_owned());
        }
        r.extend([
            f.kind.name().to_owned(),
            f.subject(),
            entry_cell(f),
            num_or_dash(tr.flows, tr.flows.to_string()),
            num_or_dash(tr.flows, tr.packets().to_string()),
            num_or_dash(tr.flows, units::bytes(tr.bytes())),
            short_time(tr.first_seen),
            short_time(tr.last_seen),
            peers_cell(f, 3),
            describe(f),
        ]);
        t.row(r);
    }
    t.write(w, "  ")
}

fn services_table(services: &[ServiceStats], w: &mut impl Write) -> io::Result<()> {
    let mut t = Table::new(&[
        ("SERVICE", false),
        ("FLOWS", true),
        ("DURATION p50", true),
        ("p90", true),
        ("p99", true),
        ("max", true),
        ("BYTES/FLOW p50", true),
        ("p90", true),
        ("p99", true),
        ("max", true),
    ]);
    for s in services {
        let (d, b) = (&s.duration_us, &s.bytes);
        t.row(vec![
            s.service.clone(),
            d.count.to_string(),
            units::micros(d.p50),
            units::micros(d.p90),
            units::micros(d.p99),
            units::micros(d.max),
            units::bytes(b.p50),
            units::bytes(b.p90),
            units::bytes(b.p99),
            units::bytes(b.max),
        ]);
    }
    t.write(w, "  ")
}

/// Writes a node report as text.
pub fn render(r: &Report, w: &mut impl Write) -> io::Result<()> {
    writeln!(w, "portwatch report for {}", r.node.name)?;
    for (k, v) in super::header_lines(r) {
        writeln!(w, "  {k:<10} {v}")?;
    }
    writeln!(w)?;
    writeln!(w, "findings: {}", super::kinds_line(&r.summary.kinds))?;
    if !r.findings.is_empty() {
        let v: Vec<(Option<&str>, &Finding)> = r.findings.iter().map(|f| (None, f)).collect();
        findings_table(&v, w)?;
    }
    if !r.services.is_empty() {
        writeln!(w)?;
        writeln!(w, "services:")?;
        services_table(&r.services, w)?;
    }
    Ok(())
}

/// Writes a cluster report as text.
pub fn render_cluster(r: &ClusterReport, w: &mut impl Write) -> io::Result<()> {
    writeln!(w, "portwatch cluster report: {} node(s)", r.nodes.len())?;
    for (k, v) in super::cluster_header_lines(r) {
        writeln!(w, "  {k:<10} {v}")?;
    }
    writeln!(w)?;
    let mut t = Table::new(&[
        ("NODE", false),
        ("WINDOW END", false),
        ("FLOWS", true),
        ("FINDINGS", false),
    ]);
    for n in &r.nodes {
        t.row(vec![
            n.name.clone(),
            n.window.end.utc.clone(),
            n.flows.to_string(),
            super::kinds_line(&n.kinds),
        ]);
    }
    writeln!(w, "nodes:")?;
    t.write(w, "  ")?;
    writeln!(w)?;
    writeln!(
        w,
        "unused on every node ({}): candidates for closing",
        r.unused.len()
    )?;
    let mut t = Table::new(&[("ENTRY", false), ("SERVICE", false), ("PORTS", false)]);
    for e in &r.unused {
        t.row(vec![
            format!("{} ({}:{})", e.id, e.file, e.line),
            e.service.clone(),
            format!("{} {} {}", e.transport, e.ports, e.direction),
        ]);
    }
    if !r.unused.is_empty() {
        t.write(w, "  ")?;
    }
    writeln!(w)?;
    writeln!(w, "entries:")?;
    let mut t = Table::new(&[
        ("ENTRY", false),
        ("USED ON", false),
        ("UNUSED ON", false),
        ("UNKNOWN ON", false),
        ("FLOWS", true),
        ("BYTES", true),
        ("PORTS UNUSED WHERE USED", false),
    ]);
    for e in &r.entries {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.join(",")
            }
        };
        t.row(vec![
            e.entry.id.clone(),
            list(&e.used_on),
            list(&e.unused_on),
            list(&e.unknown_on),
            e.traffic.flows.to_string(),
            units::bytes(e.traffic.bytes()),
            list(&e.unused_ports),
        ]);
    }
    t.write(w, "  ")?;
    writeln!(w)?;
    writeln!(w, "findings per node: {}", super::kinds_line(&r.kinds))?;
    if !r.findings.is_empty() {
        let v: Vec<(Option<&str>, &Finding)> = r
            .findings
            .iter()
            .map(|f| (Some(f.node.as_str()), &f.finding))
            .collect();
        findings_table(&v, w)?;
    }
    if !r.services.is_empty() {
        writeln!(w)?;
        writeln!(w, "services (all nodes):")?;
        services_table(&r.services, w)?;
    }
    Ok(())
}
