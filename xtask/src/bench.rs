//! `cargo xtask bench <what>`: benchmarks that print figures and ratios (never timed
//! assertions). One file per benchmark; this one only dispatches.
use anyhow::Result;
use clap::{Args, Subcommand};

use crate::{bench_classify, bench_html, bench_kernel, bench_overhead, bench_pcap};

/// Options of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// The TC program's cost per packet (BPF_PROG_TEST_RUN) and the UDP rate between two
    /// namespaces with and without it (needs root).
    Kernel(bench_kernel::BenchKernelArgs),
    /// Offline capture reading (10M packets, many flows) against tcpdump, softflowd, tshark.
    Pcap(bench_pcap::BenchPcapArgs),
    /// The HTML report with 10,000 findings in headless Chromium: load and first render.
    Html(bench_html::BenchHtmlArgs),
    /// Classification and report rendering of a synthetic window (1M flows) against a shipped spec.
    Classify(bench_classify::BenchClassifyArgs),
    /// The agent's CPU and memory at 500,000 packets/s through the eBPF backend, with few and
    /// with one million flows, against tcpdump on the same load (needs root).
    Overhead(bench_overhead::BenchOverheadArgs),
}

/// Runs the chosen benchmark.
pub fn run(a: &BenchArgs) -> Result<()> {
    match &a.what {
        Bench::Kernel(k) => bench_kernel::run(k),
        Bench::Pcap(p) => bench_pcap::run(p),
        Bench::Html(h) => bench_html::run(h),
        Bench::Classify(c) => bench_classify::run(c),
        Bench::Overhead(o) => bench_overhead::run(o),
    }
}
