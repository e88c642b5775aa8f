//! `cargo xtask bench kernel`: builds and runs the kernel benchmark (tests/src/bin/
//! bench_kernel.rs, root needed, via `sudo -E` otherwise): the TC program's cost per packet from
//! BPF_PROG_TEST_RUN, and the UDP packet rate between two namespaces with and without the
//! programs attached, as interleaved medians and a ratio.
use std::process::Command;

use anyhow::Result;
use clap::Args;

use crate::util;

/// Options of `cargo xtask bench kernel`.
#[derive(Debug, Args)]
pub struct BenchKernelArgs {
    /// BPF_PROG_TEST_RUN repetitions per measurement.
    #[arg(long, default_value_t = 2_000_000)]
    pub repeat: u32,
    /// Measurements per figure (the median is printed).
    #[arg(long, default_value_t = 7)]
    pub rounds: u32,
    /// Interleaved rounds of the packet-rate comparison (each runs the three configurations
    /// back to back; ratios are per round, and their median and spread are printed).
    #[arg(long, default_value_t = 21)]
    pub rate_rounds: u32,
    /// Seconds per rate run.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Compare built variants of the eBPF object instead (per-packet cost only, interleaved).
    #[arg(long)]
    pub object: Vec<String>,
    /// Only the per-packet cost, not the packet rate.
    #[arg(long)]
    pub no_rate: bool,
    /// Seconds of the toggled-stream rate comparison (an empty TCX program, then portwatch,
    /// attached and detached every --toggle-ms within one stream; 0 skips it).
    #[arg(long, default_value_t = 20.0)]
    pub toggle_seconds: f64,
    /// Milliseconds per segment of the toggled stream.
    #[arg(long, default_value_t = 100)]
    pub toggle_ms: u64,
    /// Attach these built eBPF objects in the rate part instead of the embedded one (each a
    /// configuration of its own; same map and program names).
    #[arg(long)]
    pub rate_object: Vec<String>,
}

/// Builds the benchmark in release mode and runs it (as root, with realtime priority so that
/// other processes do not preempt the kernel's timing loop).
pub fn run(a: &BenchKernelArgs) -> Result<()> {
    util::sh(util::cargo().args([
        "build",
        "--release",
        "-p",
        "portwatch-tests",
        "--bin",
        "bench_kernel",
    ]))?;
    let bin = util::root().join("target/release/bench_kernel");
    let mut cmd = if util::is_root() {
        Command::new("chrt")
    } else {
        let mut c = Command::new("sudo");
        c.args(["-E", "chrt"]);
        c
    };
    cmd.args(["-f", "10"]).arg(&bin);
    cmd.args(["--repeat", &a.repeat.to_string()]);
    cmd.args(["--rounds", &a.rounds.to_string()]);
    cmd.args(["--rate-rounds", &a.rate_rounds.to_string()]);
    cmd.args(["--seconds", &a.seconds.to_string()]);
    for o in &a.object {
        cmd.args(["--object", o]);
    }
    if a.no_rate {
        cmd.arg("--no-rate");
    }
    cmd.args(["--toggle-seconds", &a.toggle_seconds.to_string()]);
    cmd.args(["--toggle-ms", &a.toggle_ms.to_string()]);
    for o in &a.rate_object {
        cmd.args(["--rate-object", o]);
    }
    util::sh(&mut cmd)
}
