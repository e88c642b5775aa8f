//! xtask: setup, build, run, test and benchmark orchestration for portwatch. Never a runtime
//! dependency of the agent; every install step a fresh machine needs lives here.
mod bench;
mod bench_classify;
mod bench_html;
mod bench_kernel;
mod bench_overhead;
mod bench_pcap;
mod demo;
mod fuzz;
mod setup;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// portwatch's development tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", max_term_width = 100)]
struct Xtask {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what this machine lacks (pinned nightly, rust-src, bpf-linker, cross targets,
    /// Debian packages); idempotent, says what it did.
    Setup(setup::SetupArgs),
    /// Build the eBPF object and the agent (release).
    Build,
    /// Set up, build, then start the agent as root (via `sudo -E` when not root).
    /// Without arguments it watches every interface against specs/thoughtspot.toml.
    Run(run::RunArgs),
    /// The whole test suite: fmt, clippy (userspace and bpf target), unit tests, privileged
    /// end-to-end tests, and cargo check for Windows and macOS.
    Test(test::TestArgs),
    /// Run every fuzz target (cargo-fuzz, pinned nightly) for a set time with a kept corpus.
    Fuzz(fuzz::FuzzArgs),
    /// Benchmarks printing figures and ratios (`cargo xtask bench pcap`).
    /// Benchmarks printing figures and ratios (`cargo xtask bench html`).
    Bench(bench::BenchArgs),
    /// The end-to-end cluster scenario for a person: reports left in a folder, printed at the end.
    Demo(demo::DemoArgs),
}

mod run;
mod test;

fn main() -> Result<()> {
    let x = Xtask::parse();
    match x.command {
        Task::Setup(a) => setup::run(&a),
        Task::Build => util::build_release(),
        Task::Run(a) => run::run(&a),
        Task::Test(a) => test::run(&a),
        Task::Fuzz(a) => fuzz::run(&a),
        Task::Bench(a) => bench::run(&a),
        Task::Demo(a) => demo::run(&a),
    }
}
