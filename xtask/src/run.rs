//! `cargo xtask run`: set up, build, then start the agent as root (via `sudo -E` otherwise).
use std::process::Command;

use anyhow::{Result, bail};

use crate::{setup, util};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Arguments for `portwatch` (default: `run --spec specs/thoughtspot.toml --out out/reports`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(a: &RunArgs) -> Result<()> {
    setup::run(&setup::SetupArgs { no_packages: false })?;
    util::build_release()?;
    let bin = util::root().join("target/release/portwatch");
    let args: Vec<String> = if a.args.is_empty() {
        [
            "run",
            "--spec",
            "specs/thoughtspot.toml",
            "--out",
            "out/reports",
        ]
        .map(String::from)
        .to_vec()
    } else {
        a.args.clone()
    };
    let mut cmd = if util::is_root() {
        Command::new(&bin)
    } else {
        let mut c = Command::new("sudo");
        c.arg("-E").arg(&bin);
        c
    };
    cmd.args(&args).current_dir(util::root());
    eprintln!("xtask: $ {}", util::show(&cmd));
    let status = cmd.status()?;
    if !status.success() {
        bail!("portwatch exited with {status}");
    }
    Ok(())
}
