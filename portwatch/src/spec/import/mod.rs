//! The importer: turns a vendor port table (pasted plain text like the vendor pages, CSV, or
//! Markdown) into a draft spec, with a comment on every row it was unsure of. It owns reading
//! tables and guessing; it never decides what a site allows (the draft is for a human to review)
//! and it must not panic on any input.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::lint::{LintKind, lint};
use super::model::{DirectionSpec, Flags, Peer, Ports, Spec, TransportSpec, is_zone_name};

/// The input formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A table pasted as plain text: a header line of column names, then rows whose cells are
    /// separated by spaces only (rows may span lines).
    Text,
    /// Comma-separated values with a header row (RFC 4180 quoting).
    Csv,
    /// Markdown pipe tables.
    Markdown,
}

/// A column of a vendor table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    Port,
    Protocol,
    Service,
    Direction,
    Source,
    Destination,
    Description,
    Process,
    /// A column the importer does not know (kept out of the draft).
    Other,
}

impl Column {
    fn typed(self) -> bool {
        matches!(self, Self::Port | Self::Protocol | Self::Direction)
    }

    /// The column a header cell names.
    fn from_name(name: &str) -> Column {
        let n = name.trim().trim_end_matches('.').to_ascii_lowercase();
        let n = n.as_str();
        match n {
            "port" | "ports" | "ports/range" | "port range" | "port(s)" | "ports/ranges" => {
                Self::Port
            }
            "protocol" | "protocols" | "transport" => Self::Protocol,
            "service" | "service name" | "name" | "component" => Self::Service,
            "direction" => Self::Direction,
            "source" | "from" | "src" => Self::Source,
            "destination" | "dest" | "to" | "dst" | "target" => Self::Destination,
            "description" | "purpose" | "notes" | "comment" => Self::Description,
            "process" | "process name" | "process names" | "executable" => Self::Process,
            _ if n.contains("port") && !n.contains("protocol") => Self::Port,
            _ if n.contains("protocol") => Self::Protocol,
            _ if n.contains("direction") => Self::Direction,
            _ if n.contains("source") => Self::Source,
            _ if n.contains("dest") => Self::Destination,
            _ if n.contains("process") => Self::Process,
            _ if n.contains("description") => Self::Description,
            _ if n.contains("service") => Self::Service,
            _ => Self::Other,
        }
    }
}

/// One imported row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DraftRow {
    /// The table's title (or "Table N").
    pub table: String,
    /// First and last line of the row in the input (1-based).
    pub line: u32,
    pub line_end: u32,
    pub service: String,
    pub ports: Ports,
    pub transport: Option<TransportSpec>,
    pub app: Option<String>,
    pub direction: Option<DirectionSpec>,
    pub sources: Vec<Peer>,
    pub destinations: Vec<Peer>,
    pub processes: Vec<String>,
    pub description: String,
    pub flags: Flags,
    /// Why the importer is unsure of this row (empty when it is sure).
    pub doubts: Vec<String>,
}

/// The result of an import.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Draft {
    pub rows: Vec<DraftRow>,
    /// Zone names used, with the document's phrase for each.
    pub zones: BTreeMap<String, String>,
    /// How many tables were found.
    pub tables: usize,
}

impl Draft {
    /// Rows with at least one doubt.
    pub fn unsure(&self) -> usize {
        self.rows.iter().filter(|r| !r.doubts.is_empty()).count()
    }

    /// Renders the draft as a spec file that [`Spec::parse`](super::Spec::parse) accepts.
    /// `name` becomes `spec.name`; `source` is named in the header comment.
    pub fn to_toml(&self, name: &str, source: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Draft spec imported by `portwatch spec import` from {source}.\n\
             # {} row{} from {} table{}; {} carry an `# unsure:` comment. Review every entry\n\
             # against the document, then run `portwatch spec check` on this file.\n",
            self.rows.len(),
            if self.rows.len() == 1 { "" } else { "s" },
            self.tables,
            if self.tables == 1 { "" } else { "s" },
            self.unsure()
        );
        let name = slug(name, 8).unwrap_or_else(|| "imported".to_string());
        let _ = writeln!(s, "[spec]\nname = {}", quote(&name));
        let _ = writeln!(s, "document = {}\n", quote(source));
        if !self.zones.is_empty() {
            s.push_str("[zones]\n");
            for (z, phrase) in &self.zones {
                let _ = writeln!(s, "{z} = {}", quote(phrase));
            }
            s.push('\n');
        }
        let mut ids = BTreeSet::new();
        for r in &self.rows {
            for d in &r.doubts {
                // TOML comments may not hold control characters.
                let d: String = d
                    .chars()
                    .map(|c| {
                        if c.is_control() && c != '\n' && c != '\t' {
                            c.escape_default().to_string()
                        } else {
                            c.to_string()
                        }
                    })
                    .collect();
                for (i, l) in d.lines().enumerate() {
                    let _ = writeln!(s, "# {}{l}", if i == 0 { "unsure: " } else { "  " });
                }
            }
            let first = r
                .ports
                .iter_ranges()
                .next()
                .map_or_else(|| "noport".to_string(), |(_, p)| p.start.to_string());
            let base = slug(&r.service, 5)
                .map(|s| format!("{s}-{first}"))
                .unwrap_or_else(|| format!("row-{}", r.line));
            let base: String = base.chars().take(56).collect();
            let base = base.trim_end_matches('-').to_string();
            let mut id = base.clone();
            let mut n = 2;
            while !ids.insert(id.clone()) {
                id = format!("{base}-{n}");
                n += 1;
            }
            let _ = writeln!(s, "[[entry]]\nid = {}", quote(&id));
            let service = if r.service.trim().is_empty() {
                format!("row at line {}", r.line)
            } else {
                r.service.clone()
            };
            let _ = writeln!(s, "service = {}", quote(&service));
            let _ = writeln!(s, "ports = {}", quote(&r.ports.to_string()));
            let _ = writeln!(
                s,
                "transport = {}",
                quote(r.transport.map_or("none", TransportSpec::as_str))
            );
            if let Some(app) = &r.app {
                let _ = writeln!(s, "app = {}", quote(app));
            }
            let _ = writeln!(
                s,
                "direction = {}",
                quote(r.direction.map_or("none", DirectionSpec::as_str))
            );
            for (key, peers) in [("sources", &r.sources), ("destinations", &r.destinations)] {
                if !peers.is_empty() {
                    let list: Vec<String> = peers.iter().map(|p| quote(&p.to_string())).collect();
                    let _ = writeln!(s, "{key} = [{}]", list.join(", "));
                }
            }
            if !r.processes.is_empty() {
                let list: Vec<String> = r.processes.iter().map(|p| quote(p)).collect();
                let _ = writeln!(s, "processes = [{}]", list.join(", "));
            }
            if !r.description.is_empty() {
                let _ = writeln!(s, "description = {}", quote(&r.description));
            }
            let flags = r.flags.names();
            if !flags.is_empty() {
                let list: Vec<String> = flags.iter().map(|f| quote(f)).collect();
                let _ = writeln!(s, "flags = [{}]", list.join(", "));
            }
            let end = if r.line_end > r.line {
                format!(", line_end = {}", r.line_end)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "origin = {{ table = {}, line = {}{end} }}\n",
                quote(&r.table),
                r.line
            );
        }
        s
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A zone-name-shaped slug of the first `words` words of `s`, if any letter or digit is left.
fn slug(s: &str, words: usize) -> Option<String> {
    let lower = s.to_ascii_lowercase();
    let parts: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(words)
        .collect();
    if parts.is_empty() {
        return None;
    }
    let mut out = parts.join("-");
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert_str(0, "x-");
    }
    let out: String = out.chars().take(64).collect();
    let out = out.trim_end_matches('-').to_string();
    is_zone_name(&out).then_some(out)
}

/// Imports a document.
pub fn import(text: &str, format: Format) -> Draft {
    let lines: Vec<&str> = text.lines().collect();
    let (tables, used) = match format {
        Format::Text => text_tables(&lines),
        Format::Csv => csv_tables(text),
        Format::Markdown => markdown_tables(&lines),
    };
    let mut draft = Draft {
        tables: tables.len(),
        ..Draft::default()
    };
    let mut rows: Vec<(usize, DraftRow)> = Vec::new();
    for (t, table) in tables.iter().enumerate() {
        let mut prev: Option<DraftRow> = None;
        let mut table_rows = Vec::new();
        for rec in &table.records {
            let row = interpret(table, rec, prev.as_ref(), &mut draft.zones);
            prev = Some(row.clone());
            table_rows.push(row);
        }
        fill_missing_directions(&mut table_rows);
        rows.extend(table_rows.into_iter().map(|r| (t, r)));
    }
    for row in prose_rows(&lines, &used) {
        rows.push((usize::MAX, row));
    }
    rows.sort_by_key(|(_, r)| r.line);
    draft.rows = rows.into_iter().map(|(_, r)| r).collect();
    lint_draft(&mut draft);
    draft
}

/// Runs the linter over the draft and turns what it says about rows (duplicates, conflicts,
/// suspicious ranges, swapped processes) into doubts on those rows.
fn lint_draft(draft: &mut Draft) {
    let toml = draft.to_toml("draft", "");
    let Ok(spec) = Spec::parse(&toml, "draft.toml") else {
        return;
    };
    for w in lint(&spec, None, None) {
        if !matches!(
            w.kind,
            LintKind::DuplicateRow
                | LintKind::PortConflict
                | LintKind::OverlappingRanges
                | LintKind::SuspiciousRange
                | LintKind::SwappedProcess
        ) {
            continue;
        }
        // A range overlapping many rows is the range's problem, not theirs.
        let primary_only = matches!(
            w.kind,
            LintKind::OverlappingRanges | LintKind::SuspiciousRange
        );
        let ids = if primary_only {
            &w.entries[..w.entries.len().min(1)]
        } else {
            &w.entries[..]
        };
        for id in ids {
            if let Some(i) = spec.entries.iter().position(|e| &e.id == id)
                && let Some(row) = draft.rows.get_mut(i)
            {
                row.doubts.push(format!("{}: {}", w.kind, w.message));
            }
        }
    }
}

/// A table: its title, its columns and its records (cells by column).
#[derive(Debug, Default)]
struct Table {
    title: String,
    columns: Vec<Column>,
    records: Vec<Record>,
}

#[derive(Debug, Default, Clone)]
struct Record {
    line: u32,
    line_end: u32,
    cells: Vec<(Column, String)>,
    doubts: Vec<String>,
}

impl Record {
    fn cell(&self, c: Column) -> &str {
        self.cells
            .iter()
            .find(|(k, _)| *k == c)
            .map_or("", |(_, v)| v.as_str())
    }
}

fn line_no(i: usize) -> u32 {
    u32::try_from(i + 1).unwrap_or(u32::MAX)
}

mod interpret;
mod tables;
#[cfg(test)]
mod tests;
mod text;

use interpret::{fill_missing_directions, interpret, prose_rows};
use tables::{csv_tables, markdown_tables};
use text::text_tables;
