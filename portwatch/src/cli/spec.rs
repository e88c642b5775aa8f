//! `portwatch spec check|import`: thin adapters over [`crate::spec`] (parse, lint, import) and
//! [`crate::inventory`]. They read files, print, and map results to exit codes; no product logic.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use super::exit;
use crate::inventory::Inventory;
use crate::spec::Spec;
use crate::spec::import::{self, Format};
use crate::spec::lint::{self, Warning};

/// Check a spec file or import a vendor document into a draft spec.
#[derive(Debug, Args)]
pub struct SpecArgs {
    #[command(subcommand)]
    pub command: SpecCommand,
}

#[derive(Debug, Subcommand)]
pub enum SpecCommand {
    /// Validate a spec (and optionally an inventory) and lint it.
    ///
    /// Exit status: 0 clean, 1 warnings, 2 an invalid file (the error names file:line:column).
    Check(CheckArgs),
    /// Draft a spec from a vendor port table (plain text, CSV or Markdown).
    ///
    /// Every row the importer was unsure of carries an `# unsure:` comment in the draft.
    Import(ImportArgs),
    /// Draft spec entries for the undocumented traffic in node reports.
    Suggest(super::suggest::SuggestArgs),
}

/// Output formats of `spec check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    /// One line per warning, then a summary.
    Text,
    /// A JSON array of warnings.
    Json,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The spec file (TOML).
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// An inventory file: also check that it binds every zone and host the spec uses.
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// The vendor document to check `origin.line` against (default: the spec's `copy`).
    #[arg(long, value_name = "FILE")]
    pub document: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    pub format: CheckFormat,
}

/// Input formats of `spec import`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// A table pasted as plain text (rows may span lines).
    Text,
    /// Comma-separated values with a header row.
    Csv,
    /// Markdown pipe tables.
    Markdown,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The vendor document.
    #[arg(value_name = "DOC")]
    pub doc: PathBuf,
    /// Input format (default: from the extension: .csv, .md/.markdown, otherwise text).
    #[arg(long, value_enum)]
    pub format: Option<ImportFormat>,
    /// Where to write the draft spec (default: standard output).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The spec's name (default: the document's file stem).
    #[arg(long)]
    pub name: Option<String>,
}

/// Runs `portwatch spec ...`.
pub fn run(args: SpecArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        SpecCommand::Check(a) => check(a, &mut std::io::stdout().lock()),
        SpecCommand::Import(a) => import_doc(a),
        SpecCommand::Suggest(a) => super::suggest::run(a),
    }
}

/// The document copy a spec names, resolved next to the spec file.
fn document_path(spec: &Spec) -> Option<PathBuf> {
    let copy = spec.document.copy.as_ref()?;
    let base = spec.path.parent().unwrap_or(Path::new("."));
    Some(base.join(copy))
}

/// `spec check`: prints warnings to `out`; invalid files are errors (exit 2 via `main`).
pub fn check(args: CheckArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let spec = Spec::load(&args.spec)?;
    let inventory = args.inventory.as_ref().map(Inventory::load).transpose()?;
    let doc_path = args.document.clone().or_else(|| document_path(&spec));
    let document = match &doc_path {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t),
            Err(e) if args.document.is_some() => {
                return Err(e).with_context(|| format!("cannot read document {}", p.display()));
            }
            Err(e) => {
                tracing::warn!(
                    "{}: document copy {} not readable ({e}); origin lines not checked",
                    spec.path.display(),
                    p.display()
                );
                None
            }
        },
        None => None,
    };
    let warnings = lint::lint(&spec, inventory.as_ref(), document.as_deref());
    write_report(&spec, inventory.as_ref(), &warnings, args.format, out)?;
    Ok(ExitCode::from(if warnings.is_empty() {
        exit::OK
    } else {
        exit::FINDINGS
    }))
}

fn write_report(
    spec: &Spec,
    inventory: Option<&Inventory>,
    warnings: &[Warning],
    format: CheckFormat,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match format {
        CheckFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, warnings)?;
            writeln!(out)?;
        }
        CheckFormat::Text => {
            for w in warnings {
                writeln!(out, "{w}")?;
            }
            let inv = inventory
                .map(|i| format!(" (inventory {})", i.path.display()))
                .unwrap_or_default();
            writeln!(
                out,
                "{}: {} entr{}, {} warning{}{inv}",
                spec.path.display(),
                spec.entries.len(),
                if spec.entries.len() == 1 { "y" } else { "ies" },
                warnings.len(),
                if warnings.len() == 1 { "" } else { "s" }
            )?;
        }
    }
    Ok(())
}

fn import_doc(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.doc)
        .with_context(|| format!("cannot read {}", args.doc.display()))?;
    let ext = args
        .doc
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let format = match args.format {
        Some(ImportFormat::Text) => Format::Text,
        Some(ImportFormat::Csv) => Format::Csv,
        Some(ImportFormat::Markdown) => Format::Markdown,
        None => match ext.as_deref() {
            Some("csv") => Format::Csv,
            Some("md" | "markdown") => Format::Markdown,
            _ => Format::Text,
        },
    };
    let draft = import::import(&text, format);
    let name = args.name.clone().unwrap_or_else(|| {
        args.doc.file_stem().map_or_else(
            || "imported".to_string(),
            |s| s.to_string_lossy().into_owned(),
        )
    });
    let toml = draft.to_toml(&name, &args.doc.display().to_string());
    match &args.output {
        Some(p) => {
            std::fs::write(p, &toml).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => std::io::stdout().lock().write_all(toml.as_bytes())?,
    }
    eprintln!(
        "{}: {} rows from {} table{}, {} marked unsure{}",
        args.doc.display(),
        draft.rows.len(),
        draft.tables,
        if draft.tables == 1 { "" } else { "s" },
        draft.unsure(),
        args.output
            .as_ref()
            .map(|p| format!("; draft written to {}", p.display()))
            .unwrap_or_default()
    );
    if draft.rows.is_empty() {
        anyhow::bail!(
            "no port table found in {} (format {format:?}): a table needs a header naming at least a port column and two others (Port, Protocol, Service, Direction, Source, Destination, Description, Process)",
            args.doc.display()
        );
    }
    Ok(ExitCode::from(exit::OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_check(spec: &str, inventory: Option<&str>) -> (anyhow::Result<ExitCode>, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, spec).unwrap();
        let inventory = inventory.map(|text| {
            let p = dir.path().join("inv.toml");
            std::fs::write(&p, text).unwrap();
            p
        });
        let mut out = Vec::new();
        let args = CheckArgs {
            spec: path,
            inventory,
            document: None,
            format: CheckFormat::Text,
        };
        let r = check(args, &mut out);
        (r, String::from_utf8(out).unwrap())
    }

    const CLEAN: &str = "[spec]\nname = \"x\"\n[zones]\nall-nodes = \"nodes\"\n[[entry]]\nid = \"a\"\nservice = \"s\"\nports = 80\ntransport = \"tcp\"\ndirection = \"inbound\"\ndestinations = [\"all-nodes\"]\n";

    #[test]
    fn exit_status_tells_clean_from_warnings_from_errors() {
        let (r, out) = run_check(CLEAN, None);
        assert_eq!(r.unwrap(), ExitCode::from(exit::OK));
        assert!(out.ends_with("s.toml: 1 entry, 0 warnings\n"), "{out}");
        let (r, out) = run_check(CLEAN, Some("[zones]\nadmin = [\"10.0.0.0/8\"]\n"));
        assert_eq!(r.unwrap(), ExitCode::from(exit::FINDINGS));
        assert!(
            out.contains("warning[unbound-zone]: zone `all-nodes`"),
            "{out}"
        );
        let (r, _) = run_check(&CLEAN.replace("ports = 80", "ports = 0"), None);
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains("s.toml:8:9: ports: expected a port number"),
            "{msg}"
        );
    }
}
