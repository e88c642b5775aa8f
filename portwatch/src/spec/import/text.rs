//! Plain-text tables: finding header lines, splitting space-separated rows into cells by
//! column type, and rows that span lines.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::{Column, Record, Table, line_no, slug};
use crate::spec::model::{Peer, ZONE_ALL_NODES, is_host_name};

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

pub(super) fn is_known_protocol(tok: &str) -> bool {
    let t = tok.to_ascii_uppercase();
    PROTOCOLS.contains(&t.as_str())
}

/// Skips whitespace from `pos`.
pub(super) fn skip_ws(s: &str, pos: usize) -> usize {
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
pub(super) fn leading_peers(s: &str) -> (usize, Vec<Peer>) {
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
pub(super) fn peers_of(
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

pub(super) fn text_tables(lines: &[&str]) -> (Vec<Table>, BTreeSet<usize>) {
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
