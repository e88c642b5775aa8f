//! `cargo xtask bench html`: builds (release) and runs portwatch-tests' `bench-html`, which
//! classifies a node report with 10,000 findings, renders it as HTML, opens it several times in
//! Debian's headless Chromium and prints load and render times (goal: under two seconds).
//! Figures only; nothing is asserted about time.
use anyhow::Result;
use clap::Args;

use crate::util::{cargo, sh};

/// Options of `cargo xtask bench html`.
#[derive(Debug, Args)]
pub struct BenchHtmlArgs {
    /// Findings in the generated report.
    #[arg(long, default_value_t = 10_000)]
    pub findings: usize,
    /// Times the page is opened (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

/// Runs the benchmark.
pub fn run(a: &BenchHtmlArgs) -> Result<()> {
    // The report is built in memory: the eBPF object is not needed, so not built.
    sh(cargo()
        .env("PORTWATCH_SKIP_EBPF", "1")
        .args([
            "run",
            "--release",
            "-q",
            "-p",
            "portwatch-tests",
            "--bin",
            "bench-html",
            "--",
        ])
        .args(["--findings", &a.findings.to_string()])
        .args(["--runs", &a.runs.to_string()]))
}
