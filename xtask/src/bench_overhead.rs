//! `cargo xtask bench overhead`: builds the agent and the overhead benchmark (tests/src/bin/
//! bench_overhead.rs) in release mode and runs it as root (via `sudo -E` otherwise): the real
//! `portwatch run` agent's CPU and memory at a steady packet rate through the eBPF backend, with
//! a few flows and with one million distinct flows, and tcpdump on the same load for a ratio.
use std::process::Command;

use anyhow::Result;
use clap::Args;

use crate::util;

/// Options of `cargo xtask bench overhead`.
#[derive(Debug, Args)]
pub struct BenchOverheadArgs {
    /// Packets per second the paced sender puts on the veth.
    #[arg(long, default_value_t = 500_000)]
    pub rate: u64,
    /// Seconds of load before the measurement window.
    #[arg(long, default_value_t = 15.0)]
    pub warmup: f64,
    /// Seconds of the measurement window.
    #[arg(long, default_value_t = 120.0)]
    pub seconds: f64,
    /// The agent's report interval (`portwatch run --interval`; 60s is its default).
    #[arg(long, default_value = "60s")]
    pub interval: String,
    /// Distinct flows of the many-flows scenario.
    #[arg(long, default_value_t = 1 << 20)]
    pub many: u32,
    /// The agent's `--flow-capacity` (its default when not given).
    #[arg(long)]
    pub flow_capacity: Option<u32>,
    /// Skip the tcpdump runs.
    #[arg(long)]
    pub no_peers: bool,
    /// Only one scenario: `steady` or `many`.
    #[arg(long)]
    pub only: Option<String>,
    /// Print the agent's per-interval phase timings (its debug log).
    #[arg(long)]
    pub timings: bool,
}

/// Builds both binaries (release) and runs the benchmark.
pub fn run(a: &BenchOverheadArgs) -> Result<()> {
    util::build_release()?;
    util::sh(util::cargo().args([
        "build",
        "--release",
        "-p",
        "portwatch-tests",
        "--bin",
        "bench_overhead",
    ]))?;
    let root = util::root();
    let mut cmd = if util::is_root() {
        Command::new(root.join("target/release/bench_overhead"))
    } else {
        let mut c = Command::new("sudo");
        c.arg("-E").arg(root.join("target/release/bench_overhead"));
        c
    };
    cmd.env("PORTWATCH_BIN", root.join("target/release/portwatch"));
    cmd.args(["--rate", &a.rate.to_string()]);
    cmd.args(["--warmup", &a.warmup.to_string()]);
    cmd.args(["--seconds", &a.seconds.to_string()]);
    cmd.args(["--interval", &a.interval]);
    cmd.args(["--many", &a.many.to_string()]);
    if let Some(c) = a.flow_capacity {
        cmd.args(["--flow-capacity", &c.to_string()]);
    }
    if a.no_peers {
        cmd.arg("--no-peers");
    }
    if let Some(o) = &a.only {
        cmd.args(["--only", o]);
    }
    if a.timings {
        cmd.arg("--timings");
    }
    util::sh(&mut cmd)
}
