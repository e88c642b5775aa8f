//! Markdown rendering (GitHub-flavoured tables), for tickets, wikis and pull requests.
//! Deterministic; cell text is escaped so a `|` in a name cannot break a table.
use std::io::{self, Write};

use super::text::{entry_cell, peers_cell};
use super::units;
use super::{ClusterReport, Report, describe};
use crate::classify::{Finding, ServiceStats};

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('\n', " ")
}

fn row(w: &mut impl Write, cells: &[String]) -> io::Result<()> {
    let c: Vec<String> = cells.iter().map(|c| esc(c)).collect();
    writeln!(w, "| {} |", c.join(" | "))
}

fn head(w: &mut impl Write, cols: &[&str], right: &[bool]) -> io::Result<()> {
    writeln!(w, "| {} |", cols.join(" | "))?;
    let seps: Vec<&str> = right
        .iter()
        .map(|r| if *r { "---:" } else { "---" })
        .collect();
    writeln!(w, "| {} |", seps.join(" | "))
}

fn seen(ns: u64) -> String {
    if ns == 0 {
        "-".to_owned()
    } else {
        super::model::rfc3339(ns)
    }
}

fn findings_table(w: &mut impl Write, v: &[(Option<&str>, &Finding)]) -> io::Result<()> {
    let node_col = v.iter().any(|(n, _)| n.is_some());
    let mut cols = vec!["Severity"];
    let mut right = vec![false];
    if node_col {
        cols.push("Node");
        right.push(false);
    }
    cols.extend([
        "Kind",
        "Subject",
        "Entry",
        "Flows",
        "Packets",
        "Bytes",
        "First seen",
        "Last seen",
        "Top peers",
        "Detail",
    ]);
    right.extend([
        false, false, false, true, true, true, false, false, false, false,
    ]);
    head(w, &cols, &right)?;
    for (node, f) in v {
        let t = &f.traffic;
        let mut r = vec![f.severity.to_string()];
        if node_col {
            r.push(node.unwrap_or("-").to_owned());
        }
        let has = t.flows > 0;
        r.extend([
            format!("`{}`", f.kind.name()),
            f.subject(),
            entry_cell(f),
            if has { t.flows.to_string() } else { "-".into() },
            if has {
                t.packets().to_string()
            } else {
                "-".into()
            },
            if has {
                units::bytes(t.bytes())
            } else {
                "-".into()
            },
            seen(t.first_seen),
            seen(t.last_seen),
            peers_cell(f, 5),
            describe(f),
        ]);
        row(w, &r)?;
    }
    Ok(())
}

fn services_table(w: &mut impl Write, services: &[ServiceStats]) -> io::Result<()> {
    head(
        w,
        &[
            "Service",
            "Flows",
            "Duration p50 / p90 / p99 / max",
            "Bytes per flow p50 / p90 / p99 / max",
        ],
        &[false, true, false, false],
    )?;
    for s in services {
        let (d, b) = (&s.duration_us, &s.bytes);
        row(
            w,
            &[
                s.service.clone(),
                d.count.to_string(),
                format!(
                    "{} / {} / {} / {}",
                    units::micros(d.p50),
                    units::micros(d.p90),
                    units::micros(d.p99),
                    units::micros(d.max)
                ),
                format!(
                    "{} / {} / {} / {}",
                    units::bytes(b.p50),
                    units::bytes(b.p90),
                    units::bytes(b.p99),
                    units::bytes(b.max)
                ),
            ],
        )?;
    }
    Ok(())
}

fn kinds_table(
    w: &mut impl Write,
    kinds: &std::collections::BTreeMap<String, u64>,
) -> io::Result<()> {
    head(w, &["Kind", "Findings"], &[false, true])?;
    for k in crate::classify::FindingKind::NAMES {
        if let Some(n) = kinds.get(k) {
            row(w, &[format!("`{k}`"), n.to_string()])?;
        }
    }
    Ok(())
}

/// Writes a node report as Markdown.
pub fn render(r: &Report, w: &mut impl Write) -> io::Result<()> {
    writeln!(w, "# portwatch report: {}", esc(&r.node.name))?;
    writeln!(w)?;
    head(w, &["", ""], &[false, false])?;
    for (k, v) in super::header_lines(r) {
        row(w, &[k.to_owned(), v])?;
    }
    writeln!(w)?;
    writeln!(w, "## Summary")?;
    writeln!(w)?;
    kinds_table(w, &r.summary.kinds)?;
    writeln!(w)?;
    writeln!(w, "## Findings")?;
    writeln!(w)?;
    if r.findings.is_empty() {
        writeln!(w, "No findings.")?;
    } else {
        let v: Vec<(Option<&str>, &Finding)> = r.findings.iter().map(|f| (None, f)).collect();
        findings_table(w, &v)?;
    }
    if !r.services.is_empty() {
        writeln!(w)?;
        writeln!(w, "## Services")?;
        writeln!(w)?;
        services_table(w, &r.services)?;
    }
    Ok(())
}

/// Writes a cluster report as Markdown.
pub fn render_cluster(r: &ClusterReport, w: &mut impl Write) -> io::Result<()> {
    writeln!(w, "# portwatch cluster report: {}", esc(&r.spec.name))?;
    writeln!(w)?;
    head(w, &["", ""], &[false, false])?;
    for (k, v) in super::cluster_header_lines(r) {
        row(w, &[k.to_owned(), v])?;
    }
    writeln!(w)?;
    writeln!(w, "## Nodes")?;
    writeln!(w)?;
    head(
        w,
        &["Node", "Window end", "Flows", "Findings"],
        &[false, false, true, false],
    )?;
    for n in &r.nodes {
        row(
            w,
            &[
                n.name.clone(),
                n.window.end.utc.clone(),
                n.flows.to_string(),
                super::kinds_line(&n.kinds),
            ],
        )?;
    }
    writeln!(w)?;
    writeln!(w, "## Unused on every node")?;
    writeln!(w)?;
    if r.unused.is_empty() {
        writeln!(w, "None: every documented entry saw traffic on some node.")?;
    } else {
        head(w, &["Entry", "Service", "Ports"], &[false, false, false])?;
        for e in &r.unused {
            row(
                w,
                &[
                    format!("{} ({}:{})", e.id, e.file, e.line),
                    e.service.clone(),
                    format!("{} {} {}", e.transport, e.ports, e.direction),
                ],
            )?;
        }
    }
    if !r.not_listening_anywhere.is_empty() {
        writeln!(w)?;
        writeln!(w, "## Inbound entries with nothing listening on any node")?;
        writeln!(w)?;
        for e in &r.not_listening_anywhere {
            writeln!(w, "- {} ({}:{})", esc(&e.id), esc(&e.file), e.line)?;
        }
    }
    writeln!(w)?;
    writeln!(w, "## Entries")?;
    writeln!(w)?;
    head(
        w,
        &[
            "Entry",
            "Used on",
            "Unused on",
            "Unknown on",
            "Flows",
            "Bytes",
            "Ports unused where used",
        ],
        &[false, false, false, false, true, true, false],
    )?;
    for e in &r.entries {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.join(", ")
            }
        };
        row(
            w,
            &[
                e.entry.id.clone(),
                list(&e.used_on),
                list(&e.unused_on),
                list(&e.unknown_on),
                e.traffic.flows.to_string(),
                units::bytes(e.traffic.bytes()),
                list(&e.unused_ports),
            ],
        )?;
    }
    writeln!(w)?;
    writeln!(w, "## Findings per node")?;
    writeln!(w)?;
    kinds_table(w, &r.kinds)?;
    if !r.findings.is_empty() {
        writeln!(w)?;
        let v: Vec<(Option<&str>, &Finding)> = r
            .findings
            .iter()
            .map(|f| (Some(f.node.as_str()), &f.finding))
            .collect();
        findings_table(w, &v)?;
    }
    if !r.services.is_empty() {
        writeln!(w)?;
        writeln!(w, "## Services (all nodes)")?;
        writeln!(w)?;
        services_table(w, &r.services)?;
    }
    Ok(())
}
