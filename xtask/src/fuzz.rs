//! `cargo xtask fuzz`: runs every cargo-fuzz target under fuzz/fuzz_targets for a set time each,
//! with the corpus kept in fuzz/corpus/<target> (seeded from the repository, grown by each run).
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::setup::NIGHTLY;
use crate::util::{self, output, sh};

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Only these targets (default: all).
    pub targets: Vec<String>,
}

/// The fuzz targets in the repository.
pub fn targets() -> Result<Vec<String>> {
    let dir = util::root().join("fuzz/fuzz_targets");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    v.sort();
    Ok(v)
}

fn ensure_cargo_fuzz() -> Result<()> {
    if output(Command::new("cargo").args(["fuzz", "--version"])).is_some() {
        return Ok(());
    }
    sh(util::cargo().args(["install", "cargo-fuzz", "--locked"]))
}

pub fn run(a: &FuzzArgs) -> Result<()> {
    ensure_cargo_fuzz()?;
    let all = targets()?;
    let chosen: Vec<String> = if a.targets.is_empty() {
        all.clone()
    } else {
        for t in &a.targets {
            if !all.contains(t) {
                bail!("no fuzz target {t:?}; the targets are: {}", all.join(", "));
            }
        }
        a.targets.clone()
    };
    let mut failed = Vec::new();
    for t in &chosen {
        let corpus = util::root().join("fuzz/corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        eprintln!("xtask fuzz: {t} for {} s", a.seconds);
        let r = sh(Command::new("rustup")
            .args(["run", NIGHTLY, "cargo", "fuzz", "run", t])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={}", a.seconds))
            .current_dir(util::root().join("fuzz")));
        if r.is_err() {
            failed.push(t.clone());
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets found crashes: {} (artefacts in fuzz/artifacts/)",
            failed.join(", ")
        );
    }
    eprintln!("xtask fuzz: {} targets, no crash", chosen.len());
    Ok(())
}
