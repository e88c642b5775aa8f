//! Reports: the versioned report model built from findings, deterministic renderers (JSON,
//! text, Markdown, HTML) that write to any `impl Write`, the cluster merge, and the sink that writes
//! files atomically. Renderers do no I/O of their own beyond the writer they are given.
pub mod html;
pub mod json;
pub mod listeners;
pub mod markdown;
pub mod merge;
pub mod model;
pub mod sink;
pub mod suggest;
pub mod text;
mod units;

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

pub use merge::{ClusterReport, merge};
pub use model::{CaptureInfo, Report, ReportError, ReportMeta, SCHEMA, SCHEMA_VERSION, Timestamp};
pub use sink::{SinkError, write_atomic, write_report};

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Format {
    /// Versioned JSON (docs/report.md).
    Json,
    /// A table for the terminal.
    Text,
    /// Markdown (tickets, wikis, pull requests).
    Markdown,
    /// One self-contained HTML page (port map, charts, every finding; nothing fetched).
    Html,
}

impl Format {
    /// The file extension for the format.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Text => "txt",
            Self::Markdown => "md",
            Self::Html => "html",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Json => "json",
            Self::Text => "text",
            Self::Markdown => "markdown",
            Self::Html => "html",
        })
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "text" | "txt" => Ok(Self::Text),
            "markdown" | "md" => Ok(Self::Markdown),
            "html" | "htm" => Ok(Self::Html),
            other => Err(format!(
                "unknown report format {other:?}: expected json, text, markdown or html"
            )),
        }
    }
}

/// Renders a node report.
pub fn render(report: &Report, format: Format, w: &mut impl Write) -> io::Result<()> {
    match format {
        Format::Json => json::render(report, w),
        Format::Text => text::render(report, w),
        Format::Markdown => markdown::render(report, w),
        Format::Html => html::render(report, w),
    }
}

/// Renders a cluster report.
pub fn render_cluster(
    report: &ClusterReport,
    format: Format,
    w: &mut impl Write,
) -> io::Result<()> {
    match format {
        Format::Json => json::render_cluster(report, w),
        Format::Text => text::render_cluster(report, w),
        Format::Markdown => markdown::render_cluster(report, w),
        Format::Html => html::render_cluster(report, w),
    }
}

/// A finding's kind-specific detail in a few words (text and Markdown).
pub(crate) fn describe(f: &crate::classify::Finding) -> String {
    use crate::classify::FindingKind as K;
    let mut parts: Vec<String> = Vec::new();
    match &f.kind {
        K::Documented | K::Undocumented => {}
        K::WrongDirection { expected, .. } => parts.push(format!("spec says {expected}")),
        K::WrongTransport { expected, .. } => parts.push(format!("spec says {expected}")),
        K::PeerOutsideZone {
            allowed,
            outside,
            outside_total,
        } => {
            let shown: Vec<String> = outside.iter().take(5).map(ToString::to_string).collect();
            let more = outside_total.saturating_sub(shown.len() as u64);
            let mut s = format!(
                "allowed {}; outside {}",
                allowed.join(", "),
                shown.join(" ")
            );
            if more > 0 {
                s.push_str(&format!(" +{more}"));
            }
            parts.push(s);
        }
        K::Unused { note } => {
            if let Some(n) = note {
                parts.push(n.clone());
            }
        }
        K::UndocumentedListener { addrs } => {
            let a: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            parts.push(format!("bound to {}", a.join(" ")));
        }
        K::NotListening { missing } => parts.push(format!("missing {}", missing.join(", "))),
        K::UnusedPorts { ports } => parts.push(format!("no traffic on {}", ports.join(", "))),
        K::ProcessMismatch { expected, .. } => {
            parts.push(format!("spec names {}", expected.join(", ")))
        }
        K::UnknownDirection {
            reason,
            remote_port,
            candidates,
        } => {
            parts.push(reason.to_string());
            if let Some(p) = remote_port {
                parts.push(format!("peer port {p}"));
            }
            if !candidates.is_empty() {
                let c: Vec<&str> = candidates.iter().map(|c| c.id.as_str()).collect();
                parts.push(format!("could be {}", c.join(", ")));
            }
        }
    }
    if !f.ports_seen.is_empty() {
        let shown: Vec<String> = f.ports_seen.iter().take(8).map(u16::to_string).collect();
        let mut s = format!("ports {}", shown.join(","));
        let more = f.ports_seen.len() - shown.len();
        if more > 0 {
            s.push_str(&format!(" +{more}"));
        }
        parts.push(s);
    }
    if !f.processes.is_empty() {
        parts.push(format!("process {}", f.processes.join(", ")));
    }
    parts.join("; ")
}

/// `2 wrong_direction, 1 undocumented, ...` (non-zero kinds in report order), or `none`.
pub(crate) fn kinds_line(kinds: &std::collections::BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = crate::classify::FindingKind::NAMES
        .iter()
        .filter_map(|k| {
            kinds
                .get(*k)
                .filter(|n| **n > 0)
                .map(|n| format!("{n} {k}"))
        })
        .collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The key/value lines that head a node report.
pub(crate) fn header_lines(r: &Report) -> Vec<(&'static str, String)> {
    let s = &r.summary;
    let mut v = vec![
        (
            "spec",
            format!(
                "{} ({}, {} entries)",
                r.spec.name, r.spec.path, r.spec.entries
            ),
        ),
        (
            "inventory",
            match &r.inventory {
                Some(i) => format!("{} ({})", i.name, i.path),
                None => "none (peers not checked against zones)".to_owned(),
            },
        ),
        ("window", format!("{} to {}", r.window.start, r.window.end)),
    ];
    let mut capture = r.capture.backend.clone().unwrap_or_else(|| "-".to_owned());
    if !r.capture.interfaces.is_empty() {
        capture.push_str(&format!(" on {}", r.capture.interfaces.join(", ")));
    }
    v.push(("capture", capture));
    v.push((
        "listeners",
        match (&s.listeners, &r.capture.listeners_unavailable) {
            (Some(l), _) => format!(
                "{} examined: {} documented, {} undocumented, {} loopback only, {} ephemeral udp, {} without owner",
                l.total, l.documented, l.undocumented, l.loopback_only, l.ephemeral_udp, l.without_process
            ),
            (None, Some(why)) => format!("not examined: {why}"),
            (None, None) => "not examined".to_owned(),
        },
    ));
    let f = &s.flows;
    v.push((
        "flows",
        format!(
            "{} total: {} documented, {} undocumented, {} violating, {} direction unknown, {} infrastructure, {} peer unverifiable",
            f.total, f.documented, f.undocumented, f.violating, f.unknown_direction, f.infrastructure, f.peer_unverifiable
        ),
    ));
    let e = &s.entries;
    v.push((
        "entries",
        format!(
            "{} total: {} used, {} unused, {} usage unknown, {} not observable",
            e.total, e.used, e.unused, e.usage_unknown, e.not_observable
        ),
    ));
    v.push(("health", health_line(&r.health)));
    v
}

/// One line on losses: `ok`, or what was lost and what that means.
pub(crate) fn health_line(h: &crate::flow::Health) -> String {
    let mut parts = Vec::new();
    for (n, what) in [
        (h.flow_table_full, "flows not recorded (table full)"),
        (h.flow_update_errors, "flow update errors"),
        (h.capture_drops, "packets dropped by capture"),
        (h.port_table_full, "port totals lost (table full)"),
        (h.malformed, "malformed frames"),
        (h.truncated, "truncated frames"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    let mut s = format!("{} packets seen", h.packets_seen);
    if parts.is_empty() {
        s.push_str(", no loss");
    } else {
        s.push_str(&format!(", {}", parts.join(", ")));
        if h.flows_approximate() {
            s.push_str("; flow detail approximate, per-port totals exact");
        }
    }
    s
}

/// The key/value lines that head a cluster report.
pub(crate) fn cluster_header_lines(r: &ClusterReport) -> Vec<(&'static str, String)> {
    vec![
        (
            "spec",
            format!("{} ({} entries)", r.spec.name, r.spec.entries),
        ),
        ("window", format!("{} to {}", r.window.start, r.window.end)),
        (
            "nodes",
            r.nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ]
}

#[cfg(test)]
mod tests;
