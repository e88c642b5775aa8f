//! `portwatch spec suggest REPORT... -o draft.toml`: a thin adapter over
//! [`crate::report::suggest`]: reads node reports (and an inventory), writes the draft.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::exit;
use crate::inventory::Inventory;
use crate::report::{Report, suggest, write_atomic};

/// Draft spec entries for the undocumented traffic and listeners in node reports.
///
/// One entry per port, transport and direction; peers are folded into the inventory's zones
/// where they fit and into networks otherwise.
#[derive(Debug, Args)]
pub struct SuggestArgs {
    /// Node reports (JSON) written by the agent or `analyze`.
    #[arg(required = true, value_name = "REPORT")]
    pub reports: Vec<PathBuf>,
    /// Inventory whose zones peers are folded into.
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// Where to write the draft spec ("-" for standard output).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// `spec.name` of the draft.
    #[arg(long, default_value = "observed")]
    pub name: String,
}

/// Runs `spec suggest`. Exit status: 0 nothing to suggest, 1 a draft with entries, 2 errors.
pub fn run(a: SuggestArgs) -> anyhow::Result<ExitCode> {
    let reports = a
        .reports
        .iter()
        .map(|p| Report::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let inv = a
        .inventory
        .as_ref()
        .map(Inventory::load)
        .transpose()
        .context("reading the inventory")?;
    let sg = suggest::suggest(&reports);
    let toml = suggest::to_toml(&sg, &reports, inv.as_ref(), &a.name);
    if a.output.as_os_str() == "-" {
        use std::io::Write;
        std::io::stdout().lock().write_all(toml.as_bytes())?;
    } else {
        let dir = a
            .output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let name = a
            .output
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} is not a file name", a.output.display()))?;
        write_atomic(dir, name, |w| w.write_all(toml.as_bytes()))?;
        eprintln!(
            "portwatch: wrote {} suggested entr{} to {}",
            sg.len(),
            if sg.len() == 1 { "y" } else { "ies" },
            a.output.display()
        );
    }
    Ok(ExitCode::from(if sg.is_empty() {
        exit::OK
    } else {
        exit::FINDINGS
    }))
}
