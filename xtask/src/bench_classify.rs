//! `cargo xtask bench classify`: classification and report rendering over a synthetic window
//! against the shipped ThoughtSpot spec (portwatch/benches/classify.rs); prints figures.
use anyhow::Result;
use clap::Args;

use crate::util;

/// Options of `cargo xtask bench classify`.
#[derive(Debug, Args)]
pub struct BenchClassifyArgs {
    /// Flows in the synthetic window.
    #[arg(long, default_value_t = 1_000_000)]
    pub flows: u64,
}

/// Runs the benchmark (release build, no eBPF object needed).
pub fn run(a: &BenchClassifyArgs) -> Result<()> {
    util::sh(
        util::cargo()
            .env("PORTWATCH_SKIP_EBPF", "1")
            .args(["bench", "-p", "portwatch", "--bench", "classify", "--"])
            .arg(a.flows.to_string()),
    )
}
