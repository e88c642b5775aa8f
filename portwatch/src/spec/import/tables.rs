//! CSV (RFC 4180 quoting, records spanning lines) and Markdown pipe tables.
use std::collections::BTreeSet;

use super::{Column, Record, Table, line_no};

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

pub(super) fn csv_tables(text: &str) -> (Vec<Table>, BTreeSet<usize>) {
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

pub(super) fn markdown_tables(lines: &[&str]) -> (Vec<Table>, BTreeSet<usize>) {
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
