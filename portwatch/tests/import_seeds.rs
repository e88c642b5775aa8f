//! Importing each vendor document (the copies in specs/vendor-docs/) must give, for every row the
//! shipped spec transcribes, the same ports, transport and direction. Prints the match rate.
use std::path::PathBuf;

use portwatch::spec::import::{Format, import};
use portwatch::spec::{Entry, Spec};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// (matched, total, mismatches) for one document and its shipped spec.
fn compare(doc: &str, spec: &str) -> (usize, usize, Vec<String>) {
    let text = std::fs::read_to_string(repo().join("specs/vendor-docs").join(doc)).unwrap();
    let spec = Spec::load(repo().join("specs").join(spec)).unwrap_or_else(|e| panic!("{e}"));
    let draft = import(&text, Format::Text);
    // The draft itself must be a valid spec.
    let toml = draft.to_toml("draft", doc);
    let parsed = Spec::parse(&toml, "draft.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(parsed.entries.len(), draft.rows.len());
    let mut matched = 0;
    let mut problems = Vec::new();
    let rows: Vec<&Entry> = spec
        .entries
        .iter()
        .filter(|e| e.origin.line.is_some())
        .collect();
    for e in &rows {
        let line = e.origin.line.unwrap();
        let Some(d) = parsed.entries.iter().find(|d| d.origin.line == Some(line)) else {
            problems.push(format!("{} (line {line}): not imported", e.id));
            continue;
        };
        // Where the spec corrected the document, the importer must read what the document says
        // and say it is unsure.
        let written = e.origin.document_ports.as_ref().unwrap_or(&e.ports);
        if e.origin.document_ports.is_some() {
            let doubts = draft
                .rows
                .iter()
                .find(|r| r.line == line)
                .map(|r| r.doubts.join("; "));
            assert!(
                doubts
                    .as_deref()
                    .is_some_and(|d| d.contains("dropped digit")),
                "{}: the importer should doubt {written}: {doubts:?}",
                e.id
            );
        }
        let want = (written.to_string(), e.transport, e.direction);
        let got = (d.ports.to_string(), d.transport, d.direction);
        if want == got {
            matched += 1;
        } else {
            problems.push(format!(
                "{} (line {line}): shipped {want:?}, imported {got:?}",
                e.id
            ));
        }
    }
    let extra: Vec<String> = parsed
        .entries
        .iter()
        .filter(|d| !rows.iter().any(|e| e.origin.line == d.origin.line))
        .map(|d| {
            format!(
                "imported {} (line {:?}) has no shipped entry",
                d.id, d.origin.line
            )
        })
        .collect();
    problems.extend(extra);
    (matched, rows.len(), problems)
}

#[test]
fn importing_the_seeds_reproduces_the_shipped_specs() {
    let mut all = 0;
    let mut ok = 0;
    let mut problems = Vec::new();
    for (doc, spec) in [
        ("sisense-multinode.txt", "sisense-multinode.toml"),
        ("thoughtspot.txt", "thoughtspot.toml"),
    ] {
        let (m, n, p) = compare(doc, spec);
        println!(
            "import {doc}: {m}/{n} rows match {spec} on ports, transport and direction ({:.1}%)",
            100.0 * m as f64 / n as f64
        );
        all += n;
        ok += m;
        problems.extend(p);
    }
    println!(
        "import match rate: {ok}/{all} ({:.1}%)",
        100.0 * ok as f64 / all as f64
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
