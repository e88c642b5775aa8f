//! Command-line definitions (clap) and the thin adapters that turn parsed arguments into library
//! calls. One file per subcommand family; no product logic lives here.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod analyze;
pub mod listeners;
pub mod merge;
pub mod report;
pub mod run;
pub mod spec;
pub mod suggest;

/// Documented exit codes.
pub mod exit {
    /// Success, nothing to report.
    pub const OK: u8 = 0;
    /// Findings or lint errors the user asked to be told about.
    pub const FINDINGS: u8 = 1;
    /// Bad input, bad usage or a runtime failure.
    pub const ERROR: u8 = 2;
}

/// portwatch holds a node's traffic against its vendor's port documentation.
///
/// It counts flows per port (eBPF on Linux, libpcap elsewhere or for capture files), classifies
/// them against a port spec (TOML) and reports undocumented traffic, documented ports that were
/// never used, direction and zone violations, and listeners nobody documented.
#[derive(Debug, Parser)]
#[command(
    name = "portwatch",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: capture, classify against a spec, report every interval.
    Run(run::RunArgs),
    /// Analyse pcap/pcapng capture files offline.
    Analyze(analyze::AnalyzeArgs),
    /// Check a port spec or import a vendor port table into a draft spec.
    Spec(spec::SpecArgs),
    /// List listening sockets against a spec, without capture.
    Listeners(listeners::ListenersArgs),
    /// Merge node reports into the cluster view.
    Merge(merge::MergeArgs),
    /// Build a report from the agent's history database (e.g. the last 30 days).
    Report(report::ReportArgs),
}

/// Runs a parsed command line.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Analyze(a) => analyze::run(a),
        Command::Spec(a) => spec::run(a),
        Command::Listeners(a) => listeners::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Report(a) => report::run(a),
    }
}
