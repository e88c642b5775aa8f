//! `portwatch listeners --spec SPEC`: a thin adapter: reads the host's listening sockets
//! through [`crate::host`], judges them with [`crate::classify`] and renders the result. No
//! capture.
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::exit;
use crate::classify::{ClassifyInput, FindingKind, NodeInfo, classify, judge_listeners};
use crate::flow::Snapshot;
use crate::host::{self, Host, ProcFs};
use crate::report::Format;
use crate::report::listeners::{ListenerReport, render};
use crate::spec::Spec;

/// List the node's listening sockets against a spec, without capturing traffic.
///
/// Every TCP listener and bound UDP socket is shown with its owning process and its verdict:
/// documented (naming the entries), undocumented, process mismatch, loopback only, or an
/// ephemeral UDP client socket; then the documented inbound entries nothing listens for.
/// Exit status: 0 nothing undocumented, 1 undocumented or mismatched listeners, 2 errors.
#[derive(Debug, Args)]
pub struct ListenersArgs {
    /// The spec to hold listeners against.
    #[arg(long, value_name = "SPEC")]
    pub spec: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Read a /proc tree at this path instead of the system's (Linux; for tests and for
    /// inspecting a copied /proc).
    #[arg(long, value_name = "DIR")]
    pub proc_root: Option<PathBuf>,
}

/// Runs `listeners`.
pub fn run(a: ListenersArgs) -> anyhow::Result<ExitCode> {
    let spec = Spec::load(&a.spec)?;
    let host: Box<dyn Host> = match &a.proc_root {
        Some(root) => Box::new(ProcFs::new(root)),
        None => host::system(),
    };
    let scan = host.sockets().context("reading listening sockets")?;
    let ephemeral = host
        .ephemeral_range()
        .context("reading the ephemeral port range")?;
    let window = Snapshot::default();
    let node = NodeInfo::default();
    let findings = classify(&ClassifyInput {
        spec: &spec,
        inventory: None,
        window: &window,
        listeners: Some(&scan.listeners),
        connections: None,
        ephemeral,
        node: &node,
    });
    let report = ListenerReport {
        spec: a.spec.display().to_string(),
        listeners: judge_listeners(&spec, &scan.listeners, ephemeral),
        not_listening: findings
            .findings
            .into_iter()
            .filter(|f| matches!(f.kind, FindingKind::NotListening { .. }))
            .collect(),
        pids_unreadable: scan.pids_unreadable,
    };
    let mut out = std::io::stdout().lock();
    render(&report, a.format, &mut out)?;
    out.flush()?;
    Ok(ExitCode::from(if report.has_problems() {
        exit::FINDINGS
    } else {
        exit::OK
    }))
}
