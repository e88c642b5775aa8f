//! The `portwatch listeners` report: every listening socket with its verdict against the spec,
//! and the documented inbound entries nothing listens for. Rendering only; the judging is
//! [`crate::classify::judge_listeners`].
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use super::Format;
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
        Format::Html => super::html::render_listeners(r, w),
    }
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
    }
}
