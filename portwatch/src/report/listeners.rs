//! The `portwatch listeners` report: every listening socket with its verdict against the spec,
//! and the documented inbound entries nothing listens for. Rendering only; the judging is
//! [`crate::classify::judge_listeners`].
use std::fmt::Write as _;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use super::Format;
use super::html::{CSS, Status, esc};
use super::text::Table;
use crate::classify::{Finding, JudgedListener};

/// Listeners against a spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerReport {
    pub spec: String,
    pub listeners: Vec<JudgedListener>,
    /// `not_listening` findings.
    pub not_listening: Vec<Finding>,
    /// Processes whose sockets could not be read (their listeners show no owner).
    pub pids_unreadable: u64,
}

impl ListenerReport {
    /// Whether anything is worth an exit status of 1 (undocumented or mismatched listeners).
    pub fn has_problems(&self) -> bool {
        self.listeners.iter().any(|l| l.verdict.is_problem())
    }
}

fn owner(l: &JudgedListener) -> String {
    let v: Vec<String> = l
        .listener
        .processes
        .iter()
        .map(|p| format!("{}[{}]", p.name, p.pid))
        .collect();
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.join(", ")
    }
}

fn missing(f: &Finding) -> String {
    match &f.kind {
        crate::classify::FindingKind::NotListening { missing } => missing.join(", "),
        _ => String::new(),
    }
}

/// Renders the listener report.
pub fn render(r: &ListenerReport, format: Format, w: &mut impl Write) -> io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *w, r).map_err(io::Error::other)?;
            w.write_all(b"\n")
        }
        Format::Text => {
            writeln!(w, "listeners against {}:", r.spec)?;
            let mut t = Table::new(&[
                ("TRANSPORT", false),
                ("ADDRESS", false),
                ("PORT", true),
                ("PROCESS", false),
                ("VERDICT", false),
            ]);
            for l in &r.listeners {
                t.row(vec![
                    l.listener.transport.to_string(),
                    l.listener.addr.to_string(),
                    l.listener.port.to_string(),
                    owner(l),
                    l.verdict.to_string(),
                ]);
            }
            t.write(w, "  ")?;
            writeln!(w)?;
            writeln!(
                w,
                "documented inbound entries with nothing listening: {}",
                r.not_listening.len()
            )?;
            if !r.not_listening.is_empty() {
                let mut t = Table::new(&[("ENTRY", false), ("SUBJECT", false), ("MISSING", false)]);
                for f in &r.not_listening {
                    t.row(vec![super::text::entry_cell(f), f.subject(), missing(f)]);
                }
                t.write(w, "  ")?;
            }
            if r.pids_unreadable > 0 {
                writeln!(w)?;
                writeln!(w, "{}", unreadable_hint(r.pids_unreadable))?;
            }
            Ok(())
        }
        Format::Markdown => {
            writeln!(w, "# Listeners against {}", r.spec)?;
            writeln!(w)?;
            writeln!(w, "| Transport | Address | Port | Process | Verdict |")?;
            writeln!(w, "| --- | --- | ---: | --- | --- |")?;
            for l in &r.listeners {
                writeln!(
                    w,
                    "| {} | {} | {} | {} | {} |",
                    l.listener.transport,
                    l.listener.addr,
                    l.listener.port,
                    owner(l).replace('|', "\\|"),
                    l.verdict.to_string().replace('|', "\\|")
                )?;
            }
            writeln!(w)?;
            writeln!(w, "## Documented inbound entries with nothing listening")?;
            writeln!(w)?;
            if r.not_listening.is_empty() {
                writeln!(w, "None.")?;
            }
            for f in &r.not_listening {
                writeln!(
                    w,
                    "- {}: {} (missing {})",
                    super::text::entry_cell(f),
                    f.subject(),
                    missing(f)
                )?;
            }
            if r.pids_unreadable > 0 {
                writeln!(w)?;
                writeln!(w, "{}", unreadable_hint(r.pids_unreadable))?;
            }
            Ok(())
        }
        Format::Html => render_html(r, w),
    }
}

/// Renders the `portwatch listeners` report as a self-contained HTML page (no script).
fn render_html(r: &ListenerReport, w: &mut impl Write) -> io::Result<()> {
    let title = format!("portwatch: listeners against {}", r.spec);
    let mut s = String::with_capacity(16 * 1024);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <link rel=\"icon\" href=\"data:,\">\n<title>{t}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n\
         <header><h1>{t}</h1></header>\n<main>\n<h2>Listening sockets ({})</h2>\n\
         <table><thead><tr><th>Transport</th><th>Address</th><th class=\"r\">Port</th><th>Process</th><th>Verdict</th></tr></thead><tbody>\n",
        r.listeners.len(),
        t = esc(&title),
    );
    for l in &r.listeners {
        let procs: Vec<String> = l
            .listener
            .processes
            .iter()
            .map(|p| format!("{}[{}]", p.name, p.pid))
            .collect();
        let (class, icon) = if l.verdict.is_problem() {
            (Status::Undocumented.class(), Status::Undocumented.icon())
        } else {
            (Status::Used.class(), Status::Used.icon())
        };
        let _ = writeln!(
            s,
            "<tr class=\"{class}\"><td>{}</td><td><code>{}</code></td><td class=\"r\">{}</td><td>{}</td><td class=\"st\"><span class=\"ic\" aria-hidden=\"true\">{icon}</span> {}</td></tr>",
            l.listener.transport,
            l.listener.addr,
            l.listener.port,
            esc(&procs.join(", ")),
            esc(&l.verdict.to_string()),
        );
    }
    let _ = write!(
        s,
        "</tbody></table>\n<h2>Documented inbound entries with nothing listening ({})</h2>\n<table><thead><tr><th>Entry</th><th>Subject</th><th>Detail</th></tr></thead><tbody>\n",
        r.not_listening.len()
    );
    for f in &r.not_listening {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&super::text::entry_cell(f)),
            esc(&f.subject()),
            esc(&f.kind.to_string()),
        );
    }
    s.push_str("</tbody></table>\n");
    if r.pids_unreadable > 0 {
        let _ = writeln!(
            s,
            "<p class=\"note\">{}</p>",
            esc(&unreadable_hint(r.pids_unreadable))
        );
    }
    s.push_str("</main>\n</body>\n</html>\n");
    w.write_all(s.as_bytes())
}

/// What to do when other users' processes could not be inspected.
pub fn unreadable_hint(n: u64) -> String {
    format!(
        "note: the sockets of {n} process(es) could not be read, so their listeners show no owner; \
         run as root, or grant the binary CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH \
         (sudo setcap cap_sys_ptrace,cap_dac_read_search+ep \"$(command -v portwatch)\")"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::tests::{listener, spec};
    use crate::flow::Transport;
    use crate::host::PortRange;

    #[test]
    fn text_lists_verdicts_missing_entries_and_the_permission_hint() {
        let ls = [
            listener(Transport::Tcp, "0.0.0.0", 22, Some("sshd")),
            listener(Transport::Tcp, "0.0.0.0", 9999, None),
        ];
        let r = ListenerReport {
            spec: "t.toml".into(),
            listeners: crate::classify::judge_listeners(&spec(), &ls, PortRange::LINUX_DEFAULT),
            not_listening: vec![],
            pids_unreadable: 3,
        };
        assert!(r.has_problems());
        let mut out = Vec::new();
        render(&r, Format::Text, &mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains("tcp        0.0.0.0    22  sshd[100]  documented (ssh)"),
            "{s}"
        );
        assert!(
            s.contains("tcp        0.0.0.0  9999  -          undocumented"),
            "{s}"
        );
        assert!(s.contains("CAP_SYS_PTRACE"), "{s}");
        let mut out = Vec::new();
        render(&r, Format::Json, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["listeners"][1]["verdict"], "undocumented");
        assert_eq!(v["listeners"][0]["entries"][0]["id"], "ssh");
        let mut out = Vec::new();
        render(&r, Format::Html, &mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("default-src 'none'"), "{s}");
        assert!(s.contains("Listening sockets (2)"), "{s}");
        assert!(s.contains("<td>sshd[100]</td>"), "{s}");
        assert!(s.contains("undocumented</td></tr>"), "{s}");
        assert!(s.contains("CAP_SYS_PTRACE"), "{s}");
        assert!(s.ends_with("</html>\n"));
    }
}
