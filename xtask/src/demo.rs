//! `cargo xtask demo`: the cluster scenario of the end-to-end test, for a person: three nodes
//! with real daemons in network namespaces, real clients, portwatch's reports per node and for
//! the cluster left in a folder (printed at the end). Builds what it needs and runs the
//! scenario (tests/src/bin/cluster-demo.rs) as root, via `sudo -E` when not root.
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};

use crate::{setup, util};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where to leave the reports (default: target/portwatch-demo); emptied first.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Skip `cargo xtask setup` (the daemons and tools are known to be installed).
    #[arg(long)]
    pub no_setup: bool,
}

pub fn run(a: &DemoArgs) -> Result<()> {
    if !a.no_setup {
        setup::run(&setup::SetupArgs { no_packages: false })?;
    }
    util::sh(util::cargo().args([
        "build",
        "-p",
        "portwatch",
        "--bin",
        "portwatch",
        "-p",
        "portwatch-tests",
        "--bin",
        "cluster-demo",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::root().join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        util::root().join(target)
    };
    let debug = target.join("debug");
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| target.join("portwatch-demo"));
    let demo = debug.join("cluster-demo");
    let mut cmd = if util::is_root() {
        Command::new(&demo)
    } else {
        let mut c = Command::new("sudo");
        c.arg("-E").arg(&demo);
        c
    };
    cmd.arg("--out")
        .arg(&out)
        .env("PORTWATCH_BIN", debug.join("portwatch"))
        .current_dir(util::root());
    eprintln!("xtask: $ {}", util::show(&cmd));
    let status = cmd.status()?;
    if !status.success() {
        bail!("the demo exited with {status}");
    }
    Ok(())
}
