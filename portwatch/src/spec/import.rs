//! The importer: turns a vendor port table (pasted plain text like the vendor pages, CSV, or
//! Markdown) into a draft spec, with a comment on every row it was unsure of. It owns reading
//! tables and guessing; it never decides what a site allows (the draft is for a human to review)
//! and it must not panic on any input.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use super::lint::{LintKind, lint};
use super::model::{
    DirectionSpec, Flags, Peer, PortVariant, Ports, Spec, TransportSpec, ZONE_ALL_NODES,
    is_host_name, is_zone_name, parse_set,
};

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

// ---------------------------------------------------------------------------------------------
// Plain text

/// Column names a text header may use, longest first.
const HEADER_NAMES: &[(&str, Column)] = &[
    ("service name", Column::Service),
    ("process name", Column::Process),
    ("ports/range", Column::Port),
    ("port", Column::Port),
    ("ports", Column::Port),
    ("protocol", Column::Protocol),
    ("service", Column::Service),
    ("direction", Column::Direction),
    ("source", Column::Source),
    ("destination", Column::Destination),
    ("dest.", Column::Destination),
    ("dest", Column::Destination),
    ("description", Column::Description),
    ("process", Column::Process),
];

/// The columns of a text header line: every word must be a column name and at least three
/// distinct columns, one of them the port, must be named.
fn text_header(line: &str) -> Option<Vec<Column>> {
    let words: Vec<String> = line
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    let mut cols = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let two = words.get(i + 1).map(|w| format!("{} {w}", words[i]));
        if let Some(c) = two
            .as_deref()
            .and_then(|t| HEADER_NAMES.iter().find(|(n, _)| *n == t))
        {
            cols.push(c.1);
            i += 2;
        } else if let Some(c) = HEADER_NAMES.iter().find(|(n, _)| *n == words[i]) {
            cols.push(c.1);
            i += 1;
        } else {
            return None;
        }
    }
    let distinct: BTreeSet<Column> = cols.iter().copied().collect();
    (distinct.len() >= 3 && distinct.contains(&Column::Port) && distinct.len() == cols.len())
        .then_some(cols)
}

/// The title of a table: the nearest short line above the header that reads like a heading.
fn title_above(lines: &[&str], header: usize, fallback: usize) -> String {
    for l in lines[..header].iter().rev().take(12) {
        let t = l.trim();
        if t.is_empty() {
            continue;
        }
        if text_header(t).is_some() {
            break;
        }
        if t.chars().count() <= 80
            && !t.ends_with(['.', ':', ')'])
            && t.split_whitespace().count() >= 2
        {
            return t.to_string();
        }
    }
    format!("Table {fallback}")
}

const PROTOCOLS: &[&str] = &[
    "TCP",
    "UDP",
    "SCTP",
    "ICMP",
    "ICMPV4",
    "ICMPV6",
    "HTTP",
    "HTTPS",
    "S-HTTP",
    "RPC",
    "GRPC",
    "SSH",
    "SCP",
    "SFTP",
    "FTP",
    "FTPS",
    "SMB",
    "CIFS",
    "NETBIOS",
    "AMQP",
    "AMQPS",
    "MQTT",
    "SMTP",
    "SMTPS",
    "LDAP",
    "LDAPS",
    "KERBEROS",
    "POSTGRES",
    "POSTGRESQL",
    "MYSQL",
    "MSSQL",
    "MONGODB",
    "REDIS",
    "MEM-CACHED",
    "MEMCACHED",
    "ODBC",
    "JDBC",
    "NTP",
    "DNS",
    "SNMP",
    "SYSLOG",
    "NFS",
    "RDP",
    "WINRM",
    "WEBSOCKET",
    "WEBSOCKETS",
    "WS",
    "WSS",
    "IPMI",
    "RMCP",
    "TLS",
    "SSL",
    "N/A",
];

fn is_known_protocol(tok: &str) -> bool {
    let t = tok.to_ascii_uppercase();
    PROTOCOLS.contains(&t.as_str())
}

/// Skips whitespace from `pos`.
fn skip_ws(s: &str, pos: usize) -> usize {
    s[pos..]
        .char_indices()
        .find(|(_, c)| !c.is_whitespace())
        .map_or(s.len(), |(i, _)| pos + i)
}

/// The whitespace-delimited token at `pos` (after whitespace): (start, end).
fn token_at(s: &str, pos: usize) -> Option<(usize, usize)> {
    let start = skip_ws(s, pos);
    if start >= s.len() {
        return None;
    }
    let end = s[start..]
        .char_indices()
        .find(|(_, c)| c.is_whitespace())
        .map_or(s.len(), |(i, _)| start + i);
    Some((start, end))
}

/// Matches a ports cell at `pos`: numbers, ranges, commas, "or", variant labels ("TLS: 5671"),
/// or N/A. Returns the end.
fn match_ports(s: &str, pos: usize) -> Option<usize> {
    let start = skip_ws(s, pos);
    let b = s.as_bytes();
    if b.get(start..start + 3)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"n/a"))
    {
        let end = start + 3;
        return (end == s.len() || b[end].is_ascii_whitespace()).then_some(end);
    }
    let mut i = start;
    let mut last_good = None;
    let mut need_number = true;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            last_good = Some(i);
            need_number = false;
            continue;
        }
        if c == b',' || c == b'-' || c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        // "or" between numbers.
        if !need_number
            && b.get(i..i + 2)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"or"))
            && b.get(i + 2).is_some_and(u8::is_ascii_whitespace)
        {
            i += 2;
            need_number = true;
            continue;
        }
        // A variant label: letters, spaces, parens and dots up to ':' followed by a number.
        if c.is_ascii_alphabetic() {
            let mut j = i;
            while j < b.len()
                && (b[j].is_ascii_alphanumeric()
                    || b[j] == b' '
                    || b[j] == b'('
                    || b[j] == b')'
                    || b[j] == b'.'
                    || b[j] == b'-')
                && j - i < 40
            {
                j += 1;
            }
            if j < b.len() && b[j] == b':' {
                let after = skip_ws(s, j + 1);
                if after < b.len() && b[after].is_ascii_digit() {
                    i = after;
                    need_number = true;
                    continue;
                }
            }
        }
        break;
    }
    // A trailing "or" or label without a number after it is left out: the cell ends at the last
    // number.
    last_good
}

/// Matches a protocol cell at `pos`. In search mode only known protocols count.
fn match_protocol(s: &str, pos: usize, search: bool) -> Option<usize> {
    let (a, b) = token_at(s, pos)?;
    let tok = &s[a..b];
    if search && !is_known_protocol(tok) {
        return None;
    }
    if !search && tok.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    // "TCP (dynamic)": a parenthesised word after the protocol belongs to it.
    if let Some((c, d)) = token_at(s, b)
        && s[c..d].starts_with('(')
        && s[c..d].ends_with(')')
        && d - c <= 12
    {
        return Some(d);
    }
    Some(b)
}

fn direction_word(tok: &str) -> bool {
    ["inbound", "outbound", "bidirectional", "n/a"]
        .iter()
        .any(|w| tok.eq_ignore_ascii_case(w))
}

fn match_direction(s: &str, pos: usize) -> Option<usize> {
    let (a, b) = token_at(s, pos)?;
    direction_word(&s[a..b]).then_some(b)
}

fn match_typed(c: Column, s: &str, pos: usize, search: bool) -> Option<usize> {
    match c {
        Column::Port => match_ports(s, pos),
        Column::Protocol => match_protocol(s, pos, search),
        Column::Direction => match_direction(s, pos),
        _ => None,
    }
}

/// Matches a run of typed columns at `pos`; every cell must be present.
fn match_run(
    cols: &[Column],
    s: &str,
    pos: usize,
    search: bool,
) -> Option<Vec<(Column, usize, usize)>> {
    let mut out = Vec::new();
    let mut p = pos;
    for &c in cols {
        let start = skip_ws(s, p);
        let end = match_typed(c, s, p, search)?;
        out.push((c, start, end));
        p = end;
    }
    Some(out)
}

/// Token start positions at or after `pos`.
fn token_starts(s: &str, pos: usize) -> Vec<usize> {
    let mut v = Vec::new();
    let mut in_ws = true;
    for (i, c) in s[pos..].char_indices() {
        if c.is_whitespace() {
            in_ws = true;
        } else if in_ws {
            v.push(pos + i);
            in_ws = false;
        }
    }
    v
}

/// Splits a record's text into cells following the header's columns.
fn segment(text: &str, cols: &[Column]) -> (Vec<(Column, String)>, Vec<String>) {
    // Runs of consecutive typed / free columns.
    let mut runs: Vec<(bool, Vec<Column>)> = Vec::new();
    for &c in cols {
        match runs.last_mut() {
            Some((t, v)) if *t == c.typed() => v.push(c),
            _ => runs.push((c.typed(), vec![c])),
        }
    }
    let mut cells = Vec::new();
    let mut doubts = Vec::new();
    let mut pos = 0;
    let mut k = 0;
    while k < runs.len() {
        let (typed, run) = &runs[k];
        if *typed {
            // Anchored: each cell may be empty (an empty cell, e.g. no port for ICMP).
            for &c in run {
                let start = skip_ws(text, pos);
                match match_typed(c, text, pos, false) {
                    Some(end) => {
                        cells.push((c, text[start..end].to_string()));
                        pos = end;
                    }
                    _ => cells.push((c, String::new())),
                }
            }
            k += 1;
            continue;
        }
        let next = runs.get(k + 1).map(|(_, r)| r.clone());
        let found = next.as_ref().and_then(|next| {
            token_starts(text, pos)
                .into_iter()
                .find_map(|p| match_run(next, text, p, true).map(|m| (p, m)))
        });
        match (next, found) {
            (Some(_), Some((p, m))) => {
                split_free(&text[pos..p], run, &mut cells, &mut doubts);
                for (c, a, b) in m {
                    cells.push((c, text[a..b].to_string()));
                    pos = b;
                }
                k += 2;
            }
            (Some(next), None) => {
                // The typed cells are missing: this free run and the next one share the text.
                for c in &next {
                    cells.push((*c, String::new()));
                }
                let mut merged = run.clone();
                if let Some((false, after)) = runs.get(k + 2) {
                    merged.extend(after.iter().copied());
                    k += 1;
                }
                split_free(&text[pos..], &merged, &mut cells, &mut doubts);
                pos = text.len();
                k += 2;
            }
            (None, _) => {
                split_free(&text[pos..], run, &mut cells, &mut doubts);
                pos = text.len();
                k += 1;
            }
        }
    }
    (cells, doubts)
}

/// Whether a token looks like a service identifier ("Sisense.Oxygen", "IIS").
fn service_like(tok: &str) -> bool {
    let t = tok.trim_end_matches([',', ':']);
    let letters = t.chars().filter(char::is_ascii_alphabetic).count();
    (t.contains('.')
        && !t.ends_with('.')
        && letters >= 2
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'))
        || (letters >= 2
            && t.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()))
}

fn split_free(
    text: &str,
    cols: &[Column],
    cells: &mut Vec<(Column, String)>,
    doubts: &mut Vec<String>,
) {
    let mut rest = text.trim();
    for (i, &c) in cols.iter().enumerate() {
        let next = cols.get(i + 1).copied();
        let last = next.is_none();
        let value: String = match (c, next) {
            (Column::Service, Some(Column::Description)) => {
                let first = rest.split_whitespace().next().unwrap_or("");
                if service_like(first) {
                    let v = first.to_string();
                    rest = rest[first.len()..].trim_start();
                    v
                } else {
                    String::new()
                }
            }
            (Column::Service, Some(Column::Source | Column::Destination)) => {
                // The service runs up to the first peer phrase.
                let cut = token_starts(rest, 0)
                    .into_iter()
                    .find(|&p| peer_phrase(&rest[p..]).is_some())
                    .unwrap_or(rest.len());
                let v = rest[..cut].trim().to_string();
                rest = rest[cut..].trim_start();
                v
            }
            (Column::Source | Column::Destination, _) if !last => {
                let (used, _) = leading_peers(rest);
                let v = rest[..used].trim().to_string();
                rest = rest[used..].trim_start();
                if v.is_empty() {
                    doubts.push(format!(
                        "no {} recognised in the text",
                        if c == Column::Source {
                            "source"
                        } else {
                            "destination"
                        }
                    ));
                }
                v
            }
            _ if last => {
                let v = rest.to_string();
                rest = "";
                v
            }
            _ => {
                // Two free columns without a rule to split them: the first takes all.
                let v = rest.to_string();
                rest = "";
                v
            }
        };
        cells.push((c, value));
    }
}

/// Peer phrases, longest first: (phrase, zones).
const PEER_PHRASES: &[(&str, &[&str])] = &[
    (
        "admin ip addresses and all nodes",
        &["admin", ZONE_ALL_NODES],
    ),
    ("administrators ip addresses", &["admin"]),
    ("administrator ip addresses", &["admin"]),
    ("administrators' ip addresses", &["admin"]),
    ("admin ip addresses", &["admin"]),
    ("administrators", &["admin"]),
    ("all users ip addresses", &["all-users"]),
    ("all users", &["all-users"]),
    ("all nodes", &[ZONE_ALL_NODES]),
    ("all cluster nodes", &[ZONE_ALL_NODES]),
    ("cluster nodes", &[ZONE_ALL_NODES]),
    ("smtp relay", &["smtp-relay"]),
    ("email relay", &["smtp-relay"]),
    ("ldap server", &["ldap-server"]),
    ("any", &["any"]),
    ("anywhere", &["any"]),
    ("internet", &["any"]),
];

/// A peer phrase at the start of `s`: (bytes used, zones, phrase as written).
fn peer_phrase(s: &str) -> Option<(usize, Vec<String>, String)> {
    // Phrases are short: look at a bounded prefix (callers try many positions of long texts).
    let mut cut = s.len().min(256);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let s = &s[..cut];
    let lower = s.to_ascii_lowercase();
    let boundary = |n: usize| lower.len() == n || !lower.as_bytes()[n].is_ascii_alphanumeric();
    let mut hit = PEER_PHRASES
        .iter()
        .find(|(p, _)| lower.starts_with(p) && boundary(p.len()))
        .map(|(p, z)| (p.len(), z.iter().map(|z| z.to_string()).collect::<Vec<_>>()));
    if hit.is_none() {
        // "<Vendor> Support"
        let mut w = lower.split_whitespace();
        if let (Some(a), Some(b)) = (w.next(), w.next())
            && (b == "support" || b.starts_with("support"))
            && a.chars().all(|c| c.is_ascii_alphanumeric())
        {
            let end = lower.find(b).map_or(0, |i| i + "support".len());
            if boundary(end) {
                hit = Some((end, vec!["vendor-support".to_string()]));
            }
        }
    }
    let (mut used, mut zones) = hit?;
    // "(provided by customer)" and similar parentheses belong to the phrase.
    let after = skip_ws(s, used);
    if s[after..].starts_with('(')
        && let Some(close) = s[after..].find(')')
        && close < 60
    {
        used = after + close + 1;
    }
    // "X and Y"
    let after = skip_ws(s, used);
    if lower[after..].starts_with("and ")
        && let Some((u2, z2, _)) = peer_phrase(&s[after + 4..])
    {
        used = after + 4 + u2;
        zones.extend(z2);
    }
    Some((used, zones, s[..used].trim().to_string()))
}

/// The peers at the start of `s`: a phrase, or a run of addresses and host names.
fn leading_peers(s: &str) -> (usize, Vec<Peer>) {
    if let Some((used, zones, _)) = peer_phrase(s) {
        return (used, zones.into_iter().map(Peer::Zone).collect());
    }
    let mut used = 0;
    let mut peers = Vec::new();
    while let Some((a, b)) = token_at(s, used) {
        let tok = s[a..b].trim_end_matches(',');
        let peer = if let Ok(ip) = tok.parse::<IpAddr>() {
            Some(Peer::Addr(ip))
        } else if let Ok(net) = tok.parse::<ipnet::IpNet>() {
            Some(Peer::Net(net))
        } else if tok.contains('.')
            && is_host_name(tok)
            && tok.chars().any(|c| c.is_ascii_alphabetic())
        {
            Some(Peer::Host(tok.to_ascii_lowercase()))
        } else {
            None
        };
        match peer {
            Some(p) => {
                peers.push(p);
                used = b;
            }
            None => break,
        }
    }
    (used, peers)
}

/// Parses a whole source/destination cell.
fn peers_of(
    cell: &str,
    zones: &mut BTreeMap<String, String>,
    doubts: &mut Vec<String>,
    what: &str,
) -> Vec<Peer> {
    let mut out = Vec::new();
    let mut rest = cell.trim();
    while !rest.is_empty() {
        if let Some((used, zs, phrase)) = peer_phrase(rest) {
            for z in zs {
                zones.entry(z.clone()).or_insert_with(|| phrase.clone());
                out.push(Peer::Zone(z));
            }
            rest = rest[used..]
                .trim_start()
                .trim_start_matches([',', ';'])
                .trim_start();
            continue;
        }
        let (used, peers) = leading_peers(rest);
        if used > 0 {
            out.extend(peers);
            rest = rest[used..]
                .trim_start()
                .trim_start_matches([',', ';'])
                .trim_start();
            continue;
        }
        // Unknown phrase: a zone named after it.
        let phrase = rest.to_string();
        if let Some(z) = slug(&phrase, 4) {
            doubts.push(format!(
                "{what} \"{phrase}\" is not a known zone: named `{z}`"
            ));
            zones.entry(z.clone()).or_insert(phrase);
            out.push(Peer::Zone(z));
        } else {
            doubts.push(format!("{what} \"{phrase}\" could not be read"));
        }
        break;
    }
    out.dedup();
    out
}

/// Whether a trailing line of a free-first table continues the previous record (process names,
/// an external address label and the addresses after it).
fn trailing_cell(line: &str, after_label: bool) -> bool {
    let t = line.trim();
    let toks: Vec<&str> = t.split_whitespace().collect();
    if toks.is_empty() {
        return true;
    }
    let process = |w: &str| {
        let l = w.to_ascii_lowercase();
        [".exe", ".dll", ".jar", ".sh", ".py", ".bin", ".service"]
            .iter()
            .any(|x| l.ends_with(x) && l.len() > x.len())
    };
    if toks.iter().all(|w| process(w.trim_end_matches(','))) {
        return true;
    }
    if t.ends_with(':') && t.to_ascii_lowercase().contains("address") {
        return true;
    }
    after_label && toks.len() == 1 && leading_peers(t).0 > 0
}

fn text_tables(lines: &[&str]) -> (Vec<Table>, BTreeSet<usize>) {
    let mut tables: Vec<Table> = Vec::new();
    let mut used = BTreeSet::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(cols) = text_header(lines[i]) else {
            i += 1;
            continue;
        };
        used.insert(i);
        let typed_first = cols.first().is_some_and(|c| c.typed());
        let mut table = Table {
            title: title_above(lines, i, tables.len() + 1),
            columns: cols.clone(),
            records: Vec::new(),
        };
        // Build records as (first line, last line, lines).
        let mut recs: Vec<(usize, usize, bool)> = Vec::new(); // (start, end, complete)
        let mut j = i + 1;
        let mut after_label = false;
        while j < lines.len() {
            let l = lines[j];
            if text_header(l).is_some() {
                break;
            }
            if typed_first {
                if l.trim().is_empty() {
                    if !recs.is_empty() {
                        break;
                    }
                    j += 1;
                    continue;
                }
                let starts = match_run(
                    &cols[..cols.iter().take_while(|c| c.typed()).count()],
                    l,
                    0,
                    false,
                )
                .is_some()
                    || (cols[0] == Column::Port && match_protocol(l, 0, true).is_some());
                match recs.last_mut() {
                    Some(r) if !starts => r.1 = j,
                    _ => recs.push((j, j, true)),
                }
            } else {
                let blank = l.trim().is_empty();
                match recs.last_mut() {
                    // A row that has not found its protocol, ports and direction within
                    // MAX_ROW_LINES lines is not a row: start over from this line.
                    Some(r) if !r.2 && j - r.0 >= MAX_ROW_LINES => {
                        *r = (j, j, !blank && record_complete(l, &cols));
                        after_label = false;
                    }
                    Some(r) if !r.2 => {
                        if !blank {
                            r.1 = j;
                        }
                        let text = lines[r.0..=r.1].join("\n");
                        r.2 = record_complete(&text, &cols);
                        after_label = false;
                    }
                    Some(r) if blank || trailing_cell(l, after_label) => {
                        if !blank {
                            r.1 = j;
                            after_label = l.trim().ends_with(':');
                        }
                    }
                    _ if blank => {}
                    _ => {
                        let complete = record_complete(l, &cols);
                        recs.push((j, j, complete));
                        after_label = false;
                    }
                }
            }
            j += 1;
        }
        for &(a, b, complete) in &recs {
            if !complete {
                continue;
            }
            for k in a..=b {
                used.insert(k);
            }
            let text = lines[a..=b].join("\n");
            let (cells, doubts) = segment(&text, &cols);
            table.records.push(Record {
                line: line_no(a),
                line_end: line_no(b),
                cells,
                doubts,
            });
        }
        tables.push(table);
        i = j.max(i + 1);
    }
    (tables, used)
}

/// The most lines a row of a service-first text table may span before its protocol, ports and
/// direction (the vendor rows seen span up to 12).
const MAX_ROW_LINES: usize = 40;

/// Whether a free-first record holds its typed cells yet.
fn record_complete(text: &str, cols: &[Column]) -> bool {
    let typed: Vec<Column> = cols.iter().copied().filter(|c| c.typed()).collect();
    token_starts(text, 0)
        .into_iter()
        .any(|p| match_run(&typed, text, p, true).is_some())
}

// ---------------------------------------------------------------------------------------------
// CSV and Markdown

/// RFC 4180 records with the line each starts on.
fn csv_records(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut line = 0usize;
    let mut start = 0usize;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.trim().is_empty() => {
                field.clear();
                quoted = true;
                any = true;
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                any = true;
            }
            '\r' => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                if any || fields.iter().any(|f| !f.trim().is_empty()) {
                    out.push((start, std::mem::take(&mut fields)));
                } else {
                    fields.clear();
                }
                any = false;
                line += 1;
                start = line;
            }
            c => {
                field.push(c);
                any = true;
            }
        }
    }
    fields.push(field);
    if any || fields.iter().any(|f| !f.trim().is_empty()) {
        out.push((start, fields));
    }
    out
}

fn header_of(cells: &[String]) -> Option<Vec<Column>> {
    let cols: Vec<Column> = cells.iter().map(|c| Column::from_name(c)).collect();
    let known: BTreeSet<Column> = cols
        .iter()
        .copied()
        .filter(|c| *c != Column::Other)
        .collect();
    (known.len() >= 2 && known.contains(&Column::Port)).then_some(cols)
}

fn cell_tables(
    rows: Vec<(usize, usize, Vec<String>)>,
    titles: &dyn Fn(usize, usize) -> String,
) -> (Vec<Table>, BTreeSet<usize>) {
    let mut tables: Vec<Table> = Vec::new();
    let mut used = BTreeSet::new();
    for (a, b, cells) in rows {
        if let Some(cols) = header_of(&cells) {
            let n = tables.len() + 1;
            tables.push(Table {
                title: titles(a, n),
                columns: cols,
                records: Vec::new(),
            });
            used.extend(a..=b);
            continue;
        }
        let Some(t) = tables.last_mut() else { continue };
        if cells.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        used.extend(a..=b);
        let cells = t
            .columns
            .iter()
            .copied()
            .zip(cells.into_iter().chain(std::iter::repeat(String::new())))
            .filter(|(c, _)| *c != Column::Other)
            .collect();
        t.records.push(Record {
            line: line_no(a),
            line_end: line_no(b),
            cells,
            doubts: Vec::new(),
        });
    }
    (tables, used)
}

fn csv_tables(text: &str) -> (Vec<Table>, BTreeSet<usize>) {
    let records = csv_records(text);
    let rows: Vec<(usize, usize, Vec<String>)> = records
        .into_iter()
        .map(|(line, cells)| {
            let extra = cells.iter().map(|c| c.matches('\n').count()).sum::<usize>();
            (line, line + extra, cells)
        })
        .collect();
    let (tables, _) = cell_tables(rows, &|_, n| format!("Table {n}"));
    // CSV has no prose.
    let all: BTreeSet<usize> = (0..text.lines().count()).collect();
    (tables, all)
}

/// Splits a Markdown table line into cells (`\|` is a literal pipe).
fn md_cells(line: &str) -> Vec<String> {
    let t = line.trim();
    let t = t.strip_prefix('|').unwrap_or(t);
    let t = t.strip_suffix('|').unwrap_or(t);
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                cur.push('|');
            }
            '|' => cells.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    cells.push(cur);
    cells
        .into_iter()
        .map(|c| {
            c.replace("<br>", "\n")
                .replace("<br/>", "\n")
                .trim()
                .to_string()
        })
        .collect()
}

fn markdown_tables(lines: &[&str]) -> (Vec<Table>, BTreeSet<usize>) {
    let mut rows = Vec::new();
    let mut seps = BTreeSet::new();
    for (i, l) in lines.iter().enumerate() {
        if !l.trim_start().starts_with('|') {
            continue;
        }
        let cells = md_cells(l);
        if cells
            .iter()
            .all(|c| !c.is_empty() && c.chars().all(|ch| ch == '-' || ch == ':' || ch == ' '))
        {
            seps.insert(i);
            continue;
        }
        rows.push((i, i, cells));
    }
    let title = |a: usize, n: usize| -> String {
        for l in lines[..a].iter().rev().take(8) {
            let t = l.trim().trim_start_matches('#').trim();
            if t.is_empty() || l.trim_start().starts_with('|') {
                continue;
            }
            if t.chars().count() <= 80 && !t.ends_with(['.', ':']) {
                return t.to_string();
            }
        }
        format!("Table {n}")
    };
    let (tables, mut used) = cell_tables(rows, &title);
    used.extend(seps);
    (tables, used)
}

// ---------------------------------------------------------------------------------------------
// Interpretation (shared by every format)

fn clean(s: &str) -> String {
    s.replace('•', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads a ports cell: numbers, ranges ("20123 - 32768"), "25 or 587", labelled variants
/// ("Default: 5672, 15672TLS: 5671,15671"), N/A.
fn ports_of(cell: &str, doubts: &mut Vec<String>) -> Ports {
    let t = clean(cell);
    if t.is_empty() || t.eq_ignore_ascii_case("n/a") || t == "-" || t.eq_ignore_ascii_case("none") {
        return Ports::None;
    }
    // Labelled variants: scan "label: numbers" pairs.
    if t.contains(':') {
        let b = t.as_bytes();
        let mut variants = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let ls = i;
            while i < b.len() && b[i] != b':' && !b[i].is_ascii_digit() {
                i += 1;
            }
            if i >= b.len() || b[i] != b':' {
                break;
            }
            let label: String = t[ls..i]
                .chars()
                .filter(|c| !matches!(c, ';' | ':' | '"' | '\n'))
                .collect::<String>()
                .trim()
                .trim_end_matches(',')
                .trim()
                .to_string();
            i += 1;
            let ns = i;
            while i < b.len()
                && (b[i].is_ascii_digit() || b[i] == b',' || b[i] == b'-' || b[i] == b' ')
            {
                i += 1;
            }
            let nums = t[ns..i].trim().trim_end_matches(',').trim();
            match parse_set(nums) {
                Ok(set) if !label.is_empty() => variants.push(PortVariant { label, ports: set }),
                _ => {
                    doubts.push(format!("could not read the ports \"{t}\""));
                    return Ports::None;
                }
            }
        }
        if !variants.is_empty() && i >= b.len() {
            doubts.push(format!(
                "ports written as labelled variants (\"{t}\"): check which variants are alternatives"
            ));
            return Ports::Variants(variants);
        }
        doubts.push(format!("could not read the ports \"{t}\""));
        return Ports::None;
    }
    let normal = t
        .replace(" and ", ", ")
        .replace(" to ", "-")
        .replace('–', "-");
    match normal.parse::<Ports>() {
        Ok(p) => p,
        Err(_) => {
            doubts.push(format!("could not read the ports \"{t}\""));
            Ports::None
        }
    }
}

/// Transport, application label and flags from a protocol cell.
fn protocol_of(
    cell: &str,
    ports: &Ports,
    doubts: &mut Vec<String>,
) -> (Option<TransportSpec>, Option<String>, Flags) {
    let t = clean(cell);
    let mut flags = Flags::default();
    let lower = t.to_ascii_lowercase();
    let base = match lower.find('(') {
        Some(i) => {
            if lower[i..].contains("dynamic") {
                flags.dynamic_range = true;
            }
            t[..i].trim().to_string()
        }
        None => t.clone(),
    };
    let up = base.to_ascii_uppercase();
    let (transport, app) = match up.as_str() {
        "" => {
            doubts.push("no protocol given; assumed tcp".into());
            (Some(TransportSpec::Tcp), None)
        }
        "N/A" => (None, None),
        "TCP" => (Some(TransportSpec::Tcp), None),
        "UDP" => (Some(TransportSpec::Udp), None),
        "SCTP" => (Some(TransportSpec::Sctp), None),
        "ICMP" | "ICMPV4" => (Some(TransportSpec::Icmp), None),
        "ICMPV6" => (Some(TransportSpec::Icmpv6), None),
        "TCP/UDP" | "UDP/TCP" | "TCP AND UDP" | "BOTH" => (Some(TransportSpec::Any), None),
        "NTP" | "SNMP" | "SYSLOG" | "RMCP" | "DHCP" | "TFTP" => {
            (Some(TransportSpec::Udp), Some(base.clone()))
        }
        "SMB" | "CIFS" | "NETBIOS" => {
            let netbios = ports
                .iter_ranges()
                .any(|(_, r)| r.start <= 138 && 137 <= r.end);
            if netbios {
                doubts.push(format!(
                    "{base} with NetBIOS ports: transport any (NetBIOS uses UDP 137-138 and TCP 139)"
                ));
                (Some(TransportSpec::Any), Some(base.clone()))
            } else {
                (Some(TransportSpec::Tcp), Some(base.clone()))
            }
        }
        "DNS" => {
            doubts.push("DNS uses UDP and TCP: transport any".into());
            (Some(TransportSpec::Any), Some(base.clone()))
        }
        _ => {
            if !is_known_protocol(&base) {
                doubts.push(format!(
                    "unknown protocol \"{base}\": assumed an application protocol over tcp"
                ));
            }
            (Some(TransportSpec::Tcp), Some(base.clone()))
        }
    };
    (transport, app, flags)
}

fn direction_of(cell: &str) -> Option<Option<DirectionSpec>> {
    let t = clean(cell).to_ascii_lowercase();
    match t.as_str() {
        "" => None,
        "n/a" | "none" => Some(None),
        _ => t.parse::<DirectionSpec>().ok().map(Some),
    }
}

fn interpret(
    table: &Table,
    rec: &Record,
    prev: Option<&DraftRow>,
    zones: &mut BTreeMap<String, String>,
) -> DraftRow {
    let mut doubts = rec.doubts.clone();
    let ports = ports_of(rec.cell(Column::Port), &mut doubts);
    let (transport, app, mut flags) = protocol_of(rec.cell(Column::Protocol), &ports, &mut doubts);
    if transport.is_some_and(TransportSpec::is_portless) && !ports.is_none() {
        doubts.push("ICMP row with ports: ports dropped".into());
    }
    let ports = if transport.is_some_and(TransportSpec::is_portless) {
        Ports::None
    } else {
        ports
    };
    if ports.is_none() && transport.is_some_and(|t| !t.is_portless()) {
        doubts.push("no ports".into());
    }
    let direction = match direction_of(rec.cell(Column::Direction)) {
        Some(d) => d,
        None => {
            let raw = clean(rec.cell(Column::Direction));
            if raw.is_empty() {
                doubts.push("no direction given".into());
            } else {
                doubts.push(format!("unknown direction \"{raw}\""));
            }
            None
        }
    };
    let mut service = clean(rec.cell(Column::Service));
    let mut description = clean(rec.cell(Column::Description));
    let mut processes = Vec::new();
    let mut destinations = Vec::new();
    let mut label = false;
    for tok in rec
        .cell(Column::Process)
        .split(|c: char| c.is_whitespace() || c == ',')
    {
        let tok = tok.trim();
        if tok.is_empty() {
            continue;
        }
        if tok.ends_with(':') || tok.eq_ignore_ascii_case("external") {
            label = true;
            continue;
        }
        if label {
            let (used, peers) = leading_peers(tok);
            if used > 0 {
                destinations.extend(peers);
                continue;
            }
        }
        processes.push(tok.to_string());
    }
    if service.is_empty()
        && let Some(p) = prev
    {
        service = p.service.clone();
        if description.is_empty() {
            description = p.description.clone();
        }
        if processes.is_empty() {
            processes = p.processes.clone();
        }
        doubts.push(format!(
            "no service in this row: continuation of \"{}\" (line {})",
            p.service, p.line
        ));
    }
    if service.is_empty() {
        doubts.push("no service name".into());
    }
    let has_peer_columns = table
        .columns
        .iter()
        .any(|c| matches!(c, Column::Source | Column::Destination));
    let mut sources = peers_of(rec.cell(Column::Source), zones, &mut doubts, "source");
    destinations.extend(peers_of(
        rec.cell(Column::Destination),
        zones,
        &mut doubts,
        "destination",
    ));
    if has_peer_columns {
        if destinations.is_empty() && direction == Some(DirectionSpec::Outbound) {
            doubts.push("outbound row without a destination".into());
        }
        // An outbound row whose destination is the cluster and whose source names the remote
        // peer: the vendor swapped or merged the cells.
        let node = Peer::Zone(ZONE_ALL_NODES.to_string());
        if direction == Some(DirectionSpec::Outbound)
            && destinations == [node.clone()]
            && sources.contains(&node)
            && sources.len() > 1
        {
            let remote: Vec<Peer> = sources.iter().filter(|p| **p != node).cloned().collect();
            doubts.push(format!(
                "outbound row with source \"{}\" and destination \"{}\": read as all-nodes connecting to {}",
                clean(rec.cell(Column::Source)),
                clean(rec.cell(Column::Destination)),
                remote.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ));
            sources = vec![node];
            destinations = remote;
        }
    } else if direction.is_some() {
        // No peer columns: the node side is the cluster.
        zones
            .entry(ZONE_ALL_NODES.to_string())
            .or_insert_with(|| "All nodes".to_string());
        let node = Peer::Zone(ZONE_ALL_NODES.to_string());
        match direction {
            Some(DirectionSpec::Inbound) => destinations.insert(0, node),
            Some(DirectionSpec::Outbound) => sources.insert(0, node),
            _ => {}
        }
    }
    let lower = format!("{service} {description}").to_ascii_lowercase();
    if lower.contains("dynamic") && ports.iter_ranges().any(|(_, r)| r.len() > 100) {
        flags.dynamic_range = true;
    }
    if lower.contains("in case") || lower.contains("optional") || lower.contains("if you use") {
        flags.optional = true;
        doubts.push("the row reads as optional".into());
    }
    if lower.contains("during install") || lower.contains("only during") {
        flags.install_only = true;
    }
    DraftRow {
        table: table.title.clone(),
        line: rec.line,
        line_end: rec.line_end,
        service,
        ports,
        transport,
        app,
        direction,
        sources,
        destinations,
        processes,
        description,
        flags,
        doubts,
    }
}

/// Rows without a direction take the table's most common direction (and say so).
fn fill_missing_directions(rows: &mut [DraftRow]) {
    let mut counts: BTreeMap<DirectionSpec, usize> = BTreeMap::new();
    for r in rows.iter() {
        if let Some(d) = r.direction {
            *counts.entry(d).or_default() += 1;
        }
    }
    let Some((&common, _)) = counts.iter().max_by_key(|(_, n)| **n) else {
        return;
    };
    for r in rows.iter_mut() {
        let given = r.doubts.iter().any(|d| d == "no direction given");
        if r.direction.is_none() && given && r.transport.is_some() {
            r.direction = Some(common);
            r.doubts.push(format!(
                "direction assumed {common}, like most rows of the table"
            ));
        }
    }
}

/// Rows drafted from prose outside the tables: "port 5986 should be open", "ICMP ... enabled".
fn prose_rows(lines: &[&str], used: &BTreeSet<usize>) -> Vec<DraftRow> {
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if used.contains(&i) {
            continue;
        }
        let lower = l.to_ascii_lowercase();
        let mut doubts = vec![format!(
            "drafted from prose at line {}, not from a table row",
            i + 1
        )];
        let install = lower.contains("install") || lower.contains("upgrad");
        let mut flags = Flags {
            install_only: install && (lower.contains("closed") || lower.contains("during")),
            ..Flags::default()
        };
        let description: String = clean(l).chars().take(400).collect();
        // "port 5986", "ports 25 and 587"
        let mut found = None;
        for (at, _) in lower.match_indices("port") {
            let after = &l[at + 4..];
            let after = after.strip_prefix('s').unwrap_or(after);
            if !after.starts_with(' ') {
                continue;
            }
            let start = skip_ws(after, 0);
            let mut end = start;
            for (k, c) in after[start..].char_indices() {
                if c.is_ascii_digit() || c == ',' || c == '-' || c == ' ' {
                    end = start + k + c.len_utf8();
                } else {
                    break;
                }
            }
            let nums = after[start..end]
                .trim()
                .trim_end_matches(',')
                .trim_end_matches('-')
                .trim();
            if !nums.is_empty()
                && let Ok(set) = parse_set(nums)
            {
                found = Some(Ports::All(set));
                break;
            }
        }
        let icmp = lower
            .split(|c: char| !c.is_ascii_alphanumeric())
            .find(|w| *w == "icmp" || *w == "icmpv4" || *w == "icmpv6" || *w == "ping");
        let (ports, transport, direction, service) = match (found, icmp) {
            (Some(p), _) => {
                doubts.push("transport not given: assumed tcp".into());
                let dir = if lower.contains("open") || lower.contains("listen") {
                    DirectionSpec::Inbound
                } else {
                    doubts.push("direction not given: assumed bidirectional".into());
                    DirectionSpec::Bidirectional
                };
                let svc = format!("Port {p} (from a note)");
                (p, TransportSpec::Tcp, dir, svc)
            }
            (None, Some(w)) => {
                let t = if w == "icmpv6" {
                    TransportSpec::Icmpv6
                } else {
                    TransportSpec::Icmp
                };
                doubts.push("ICMP echo goes both ways: direction bidirectional".into());
                (
                    Ports::None,
                    t,
                    DirectionSpec::Bidirectional,
                    "ICMP (from a note)".to_string(),
                )
            }
            _ => continue,
        };
        if flags.install_only {
            doubts.push("needed only during installation or upgrade".into());
        } else {
            flags.install_only = false;
        }
        out.push(DraftRow {
            table: "Note".into(),
            line: line_no(i),
            line_end: line_no(i),
            service,
            ports,
            transport: Some(transport),
            app: None,
            direction: Some(direction),
            sources: Vec::new(),
            destinations: Vec::new(),
            processes: Vec::new(),
            description,
            flags,
            doubts,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str, format: Format) -> DraftRow {
        let d = import(text, format);
        assert_eq!(d.rows.len(), 1, "{d:#?}");
        d.rows.into_iter().next().unwrap()
    }

    #[test]
    fn text_port_first_table() {
        let text = "Intro\n\nPort Protocol Service Name Direction Source Destination Description\n\
                    22 SSH SSH bidirectional Administrators IP addresses All nodes Secure shell access.\n\
                    25 or 587 SMTP SMTP or Secure SMTP outbound All nodes and SMTP relay (provided by customer) All nodes Alerts.\n\
                    \x20 ICMPv4 Used for health check bidirectional All nodes All nodes Services\n";
        let d = import(text, Format::Text);
        assert_eq!(d.rows.len(), 3, "{d:#?}");
        let ssh = &d.rows[0];
        assert_eq!(ssh.ports.to_string(), "22");
        assert_eq!(
            (ssh.transport, ssh.app.as_deref()),
            (Some(TransportSpec::Tcp), Some("SSH"))
        );
        assert_eq!(ssh.sources, [Peer::Zone("admin".into())]);
        assert_eq!(ssh.description, "Secure shell access.");
        assert!(ssh.doubts.is_empty(), "{:?}", ssh.doubts);
        let smtp = &d.rows[1];
        assert_eq!(smtp.ports.to_string(), "25 or 587");
        assert_eq!(smtp.service, "SMTP or Secure SMTP");
        assert_eq!(smtp.destinations, [Peer::Zone("smtp-relay".into())]);
        assert_eq!(smtp.doubts.len(), 1, "{:?}", smtp.doubts);
        let icmp = &d.rows[2];
        assert_eq!(
            (icmp.transport, icmp.ports.clone()),
            (Some(TransportSpec::Icmp), Ports::None)
        );
        assert_eq!(d.zones["admin"], "Administrators IP addresses");
    }

    #[test]
    fn text_service_first_table_with_multiline_rows() {
        let text = "Service Description Protocol Ports/Range Direction Process Name\n\
                    Acme.Web Web front HTTP 8080 Inbound acme-web.exe\n\
                    HTTP 443 Outbound\n\
                    Acme.Bus\n\nMessage bus\n  • one\nAMQP Default: 5672, 15672TLS: 5671,15671\nDist: 25672\nInbound\n\nbus.exe\n\nerl.exe\n\
                    Acme.Ship Shipper TCP 5052 Outbound\n\nship.exe\n\nExternal Address:\n\nlogs.example.com\n\
                    Acme.Idle Watchdog N/A N/A N/A idle.exe\n\n\
                    Note:\n\nDuring installation port 5986 should be open on all nodes; it can be closed after.\n";
        let d = import(text, Format::Text);
        let summary: Vec<(u32, u32, String, String)> = d
            .rows
            .iter()
            .map(|r| (r.line, r.line_end, r.service.clone(), r.ports.to_string()))
            .collect();
        assert_eq!(
            summary,
            [
                (2, 2, "Acme.Web".to_string(), "8080".to_string()),
                (3, 3, "Acme.Web".into(), "443".into()),
                (
                    4,
                    14,
                    "Acme.Bus".into(),
                    "Default: 5672, 15672; TLS: 5671, 15671; Dist: 25672".into()
                ),
                (15, 21, "Acme.Ship".into(), "5052".into()),
                (22, 22, "Acme.Idle".into(), "none".into()),
                (26, 26, "Port 5986 (from a note)".into(), "5986".into()),
            ],
            "{d:#?}"
        );
        assert_eq!(d.rows[2].processes, ["bus.exe", "erl.exe"]);
        assert_eq!(d.rows[2].description, "Message bus one");
        assert_eq!(
            d.rows[3].destinations,
            [Peer::Host("logs.example.com".into())]
        );
        assert_eq!(d.rows[3].processes, ["ship.exe"]);
        assert_eq!(d.rows[1].direction, Some(DirectionSpec::Outbound));
        assert_eq!(d.rows[4].transport, None);
        assert!(d.rows[5].flags.install_only);
    }

    #[test]
    fn csv_and_markdown_read_explicit_cells() {
        let csv = "Port,Protocol,Service,Direction,Source,Destination\n\"389 or 636\",TCP,\"LDAP, or LDAPS\",outbound,All nodes,LDAP server (provided by customer)\n";
        let r = one(csv, Format::Csv);
        assert_eq!(r.ports.to_string(), "389 or 636");
        assert_eq!(r.service, "LDAP, or LDAPS");
        assert_eq!(r.destinations, [Peer::Zone("ldap-server".into())]);
        assert_eq!(r.line, 2);
        let md = "# Ports\n\n| Port | Protocol | Service | Direction | Source |\n|---|---|---|---|---|\n| 623 | UDP | Serial-over-LAN | bidirectional | Web servers |\n";
        let r = one(md, Format::Markdown);
        assert_eq!(
            (r.ports.to_string(), r.transport),
            ("623".to_string(), Some(TransportSpec::Udp))
        );
        assert_eq!(r.sources, [Peer::Zone("web-servers".into())]);
        assert_eq!(r.table, "Ports");
        assert!(
            r.doubts.iter().any(|d| d.contains("not a known zone")),
            "{:?}",
            r.doubts
        );
    }

    #[test]
    fn draft_parses_as_a_spec() {
        let text = "Port Protocol Service Name Direction Source Destination Description\n\
                    80 HTTP HTTP bidirectional All users IP addresses All nodes Web.\n\
                    80 HTTP HTTP bidirectional All users IP addresses All nodes Web.\n\
                    20123 - 32768 TCP (dynamic) Dynamic range for services All nodes Services\n";
        let d = import(text, Format::Text);
        let toml = d.to_toml("My Vendor!", "doc.txt");
        let spec = Spec::parse(&toml, "draft.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(spec.entries.len(), 3);
        assert_eq!(spec.name, "my-vendor");
        assert_eq!(spec.entries[1].id, "http-80-2");
        let dynamic = &spec.entries[2];
        assert!(dynamic.flags.dynamic_range);
        assert_eq!(dynamic.direction, Some(DirectionSpec::Bidirectional));
        assert!(toml.contains("# unsure: no direction given"), "{toml}");
    }

    /// Found by the spec_import fuzz target: a control character in a cell ended up in an
    /// `# unsure:` comment, where TOML forbids it, and the draft did not parse.
    #[test]
    fn regression_control_character_in_a_doubt_comment() {
        let csv = "Port,Protocol,Service,Direction,Source,Destination\n25 or 587,SMTP,,outbound,All nodes,\u{1}tSMTP relay\u{7f} (x)\n";
        let d = import(csv, Format::Csv);
        assert!(
            d.rows[0].doubts.iter().any(|d| d.contains('\u{1}')),
            "{:?}",
            d.rows[0].doubts
        );
        let toml = d.to_toml("x", "x.csv");
        Spec::parse(&toml, "draft.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert!(toml.contains("\\u{1}tSMTP"), "{toml}");
    }

    #[test]
    fn garbage_gives_an_empty_draft() {
        for f in [Format::Text, Format::Csv, Format::Markdown] {
            let d = import("\u{0}\"|||\n,,,\nPort Protocol Direction\n||\n\"", f);
            let toml = d.to_toml("", "");
            Spec::parse(&toml, "x.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
        }
    }
}
