//! `cargo xtask test`: the whole suite, in the order CI runs it: setup, rustfmt, clippy on the
//! userspace crates and on the eBPF crate for its bpf target, unit tests, privileged end-to-end
//! tests (skipped with the reason when not root), and cargo check for Windows and macOS.
use anyhow::Result;

use crate::setup::{self, NIGHTLY};
use crate::util::{self, cargo, sh};

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Skip `cargo xtask setup` (the toolchain and packages are known to be there).
    #[arg(long)]
    pub no_setup: bool,
    /// Only the unit tests and lints (no privileged tests, no cross checks).
    #[arg(long)]
    pub quick: bool,
    /// Extra arguments for the privileged test run (e.g. a test name filter).
    #[arg(trailing_var_arg = true)]
    pub filter: Vec<String>,
}

const USER_CRATES: &[&str] = &[
    "-p",
    "portwatch",
    "-p",
    "portwatch-common",
    "-p",
    "xtask",
    "-p",
    "portwatch-tests",
];

pub fn run(a: &TestArgs) -> Result<()> {
    if !a.no_setup {
        setup::run(&setup::SetupArgs { no_packages: false })?;
    }
    sh(cargo().args(["fmt", "--all", "--", "--check"]))?;
    sh(cargo()
        .arg("clippy")
        .args(USER_CRATES)
        .args(["--all-targets", "--", "-D", "warnings"]))?;
    sh(std::process::Command::new("rustup")
        .args([
            "run",
            NIGHTLY,
            "cargo",
            "clippy",
            "-p",
            "portwatch-ebpf",
            "--release",
        ])
        .args([
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ]))?;
    sh(cargo().args([
        "test",
        "-p",
        "portwatch",
        "-p",
        "portwatch-common",
        "-p",
        "xtask",
    ]))?;
    if a.quick {
        return Ok(());
    }
    if util::is_root() {
        sh(cargo()
            .args(["test", "-p", "portwatch-tests", "--", "--test-threads=1"])
            .args(&a.filter))?;
    } else {
        eprintln!(
            "xtask test: SKIPPED the privileged end-to-end tests: they create network namespaces and load eBPF programs, which needs root (run `sudo -E cargo xtask test`)"
        );
        // The HTML report in headless Chromium needs no privileges.
        sh(cargo().args(["test", "-p", "portwatch-tests", "--test", "html_report"]))?;
    }
    for target in ["x86_64-pc-windows-gnu", "x86_64-apple-darwin"] {
        // rusqlite's bundled SQLite is C compiled by its build script for the target, which
        // needs a cross C compiler (and for macOS an SDK) this machine lacks. `check` never
        // links, so let libsqlite3-sys take its "link the system library" path for it: it
        // keeps the bundled bindings and compiles nothing. Native builds still bundle SQLite.
        sh(cargo().env("LIBSQLITE3_SYS_USE_PKG_CONFIG", "1").args([
            "check",
            "-p",
            "portwatch",
            "--target",
            target,
        ]))?;
    }
    eprintln!("xtask test: all passed");
    Ok(())
}
