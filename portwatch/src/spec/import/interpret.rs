//! Interpretation shared by every format: a record's cells become a draft row (ports,
//! transport, direction, peers), with a doubt for anything guessed; prose outside tables too.
use std::collections::{BTreeMap, BTreeSet};

use super::text::{is_known_protocol, leading_peers, peers_of, skip_ws};
use super::{Column, DraftRow, Record, Table, line_no};
use crate::spec::model::{
    DirectionSpec, Flags, Peer, PortVariant, Ports, TransportSpec, ZONE_ALL_NODES, parse_set,
};

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

pub(super) fn interpret(
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
pub(super) fn fill_missing_directions(rows: &mut [DraftRow]) {
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
pub(super) fn prose_rows(lines: &[&str], used: &BTreeSet<usize>) -> Vec<DraftRow> {
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
