//! `portwatch merge REPORT...`: a thin adapter over [`crate::report::merge`]: reads node
//! reports, merges them into the cluster view and renders it.
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::exit;
use crate::classify::Severity;
use crate::report::{Format, Report, merge, render_cluster, write_atomic};

/// Merge node reports into the cluster view.
///
/// An entry is unused only if it is unused on every node; undocumented traffic, violations and
/// listener findings are listed per node. Exit status: 0 nothing to report, 1 violations,
/// undocumented traffic or entries unused everywhere, 2 errors.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Node reports (JSON), one per node, all against the same spec.
    #[arg(required = true, value_name = "REPORT")]
    pub reports: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write to this file (atomically) instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Runs `merge`.
pub fn run(a: MergeArgs) -> anyhow::Result<ExitCode> {
    let reports = a
        .reports
        .iter()
        .map(|p| Report::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let cluster = merge(&reports).context("merging reports")?;
    match &a.output {
        None => {
            let mut out = std::io::stdout().lock();
            render_cluster(&cluster, a.format, &mut out)?;
            out.flush()?;
        }
        Some(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("{} is not a file name", path.display()))?;
            write_atomic(dir, name, |mut w| {
                render_cluster(&cluster, a.format, &mut w)
            })?;
        }
    }
    let problems = !cluster.unused.is_empty()
        || cluster
            .findings
            .iter()
            .any(|f| matches!(f.finding.severity, Severity::Violation | Severity::Warning));
    Ok(ExitCode::from(if problems {
        exit::FINDINGS
    } else {
        exit::OK
    }))
}
