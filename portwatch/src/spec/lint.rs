//! The spec linter: finds what a vendor table (or its transcription) gets wrong or leaves open:
//! duplicate rows, a port under two services or protocols, overlapping or suspicious ranges,
//! swapped process names, zones nobody declared or bound, rows without ports or direction, and
//! origins that do not point at the row they claim. Pure: it reads nothing; the caller passes the
//! inventory and the vendor document's text.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::model::{
    DirectionSpec, Entry, Location, Peer, PortRange, Ports, Spec, TransportSpec, ZONE_ALL_NODES,
    ZONE_ANY,
};
use crate::inventory::Inventory;

/// What a warning is about. The kebab-case name is shown as `warning[name]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LintKind {
    /// Two entries identical in every field but id.
    DuplicateRow,
    /// One port (same transport) listed under two services in one table, or under two
    /// application protocols anywhere.
    PortConflict,
    /// Two ranges that overlap without being equal.
    OverlappingRanges,
    /// A range whose start looks like it lost a digit (1500-15050 for 15000-15050).
    SuspiciousRange,
    /// A process name that is another entry's service name (two rows' processes swapped).
    SwappedProcess,
    /// A zone used by entries but missing from the spec's `[zones]`.
    UndeclaredZone,
    /// A zone declared in `[zones]` that no entry uses.
    UnusedZone,
    /// A zone used by entries that the inventory does not bind.
    UnboundZone,
    /// A host name used by entries that the inventory's `[hosts]` does not bind.
    UnboundHost,
    /// An entry without ports that is not ICMP.
    NoPorts,
    /// An entry with a transport and ports but no direction.
    NoDirection,
    /// An ICMP entry that lists ports.
    PortsOnIcmp,
    /// `origin.line` is outside the document, or the document line does not mention the ports.
    OriginMismatch,
}

impl LintKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DuplicateRow => "duplicate-row",
            Self::PortConflict => "port-conflict",
            Self::OverlappingRanges => "overlapping-ranges",
            Self::SuspiciousRange => "suspicious-range",
            Self::SwappedProcess => "swapped-process",
            Self::UndeclaredZone => "undeclared-zone",
            Self::UnusedZone => "unused-zone",
            Self::UnboundZone => "unbound-zone",
            Self::UnboundHost => "unbound-host",
            Self::NoPorts => "no-ports",
            Self::NoDirection => "no-direction",
            Self::PortsOnIcmp => "ports-on-icmp",
            Self::OriginMismatch => "origin-mismatch",
        }
    }
}

impl fmt::Display for LintKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One lint warning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub kind: LintKind,
    /// Where to look first (the entry the warning is about).
    pub location: Location,
    /// The ids of the entries involved.
    pub entries: Vec<String>,
    pub message: String,
    /// Other places involved (the first of a duplicate pair, the other side of a conflict).
    pub related: Vec<Location>,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: warning[{}]: {}",
            self.location, self.kind, self.message
        )?;
        for r in &self.related {
            write!(f, "\n  see also {r}")?;
        }
        Ok(())
    }
}

/// Lints a spec. `inventory` enables the binding checks; `document` (the text of the vendor
/// document copy) enables the origin checks.
pub fn lint(spec: &Spec, inventory: Option<&Inventory>, document: Option<&str>) -> Vec<Warning> {
    let mut out = Vec::new();
    let duplicates = duplicate_rows(spec, &mut out);
    port_conflicts(spec, &duplicates, &mut out);
    overlapping_ranges(spec, &mut out);
    suspicious_ranges(spec, &mut out);
    swapped_processes(spec, &mut out);
    zones(spec, inventory, &mut out);
    shapes(spec, &mut out);
    if let Some(doc) = document {
        origins(spec, doc, &mut out);
    }
    out.sort_by(|a, b| {
        (a.location.line, a.location.column, a.kind).cmp(&(
            b.location.line,
            b.location.column,
            b.kind,
        ))
    });
    out
}

fn line_of(e: &Entry) -> String {
    match (e.origin.line, e.origin.line_end) {
        (Some(a), Some(b)) if b != a => format!(" (document lines {a}-{b})"),
        (Some(a), _) => format!(" (document line {a})"),
        _ => String::new(),
    }
}

/// ", document line N" for an entry named inside parentheses.
fn cited(e: &Entry) -> String {
    match (e.origin.line, e.origin.line_end) {
        (Some(a), Some(b)) if b != a => format!(", document lines {a}-{b}"),
        (Some(a), _) => format!(", document line {a}"),
        _ => String::new(),
    }
}

fn transports_meet(a: Option<TransportSpec>, b: Option<TransportSpec>) -> bool {
    match (a, b) {
        (Some(TransportSpec::Any), Some(_)) | (Some(_), Some(TransportSpec::Any)) => true,
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

fn transport_name(e: &Entry) -> &'static str {
    e.transport.map_or("none", TransportSpec::as_str)
}

/// Application labels that name the same thing on the wire.
fn app_family(app: &str) -> String {
    let a = app.trim().to_ascii_uppercase();
    match a.as_str() {
        "SCP" | "SFTP" | "SSH" => "SSH".into(),
        "HTTPS" | "S-HTTP" | "SHTTP" | "TLS" | "SSL" => "HTTPS".into(),
        "SMTPS" | "SMTP" => "SMTP".into(),
        "MEMCACHED" | "MEM-CACHED" => "MEMCACHED".into(),
        _ => a,
    }
}

/// Returns the set of (earlier, later) index pairs that are exact duplicates.
fn duplicate_rows(spec: &Spec, out: &mut Vec<Warning>) -> BTreeSet<(usize, usize)> {
    let mut pairs = BTreeSet::new();
    let mut first: BTreeMap<String, usize> = BTreeMap::new();
    for (i, e) in spec.entries.iter().enumerate() {
        let key = format!(
            "{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{:?}",
            e.service,
            e.ports,
            e.transport,
            e.app,
            e.direction,
            e.sources,
            e.destinations,
            e.processes,
            e.description,
            e.flags
        );
        match first.get(&key) {
            Some(&j) => {
                pairs.insert((j, i));
                let f = &spec.entries[j];
                out.push(Warning {
                    kind: LintKind::DuplicateRow,
                    location: e.location.clone(),
                    entries: vec![f.id.clone(), e.id.clone()],
                    message: format!(
                        "entry `{}`{} repeats entry `{}`{} field for field: {} {}/{} {}",
                        e.id,
                        line_of(e),
                        f.id,
                        line_of(f),
                        e.service,
                        e.ports,
                        transport_name(e),
                        e.app.as_deref().unwrap_or(""),
                    )
                    .trim_end()
                    .to_string(),
                    related: vec![f.location.clone()],
                });
            }
            None => {
                first.insert(key, i);
            }
        }
    }
    pairs
}

fn opposite(a: Option<DirectionSpec>, b: Option<DirectionSpec>) -> bool {
    matches!(
        (a, b),
        (Some(DirectionSpec::Inbound), Some(DirectionSpec::Outbound))
            | (Some(DirectionSpec::Outbound), Some(DirectionSpec::Inbound))
    )
}

fn port_conflicts(spec: &Spec, duplicates: &BTreeSet<(usize, usize)>, out: &mut Vec<Warning>) {
    // Single ports (not ranges) to the entries that list them.
    let mut by_port: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, e) in spec.entries.iter().enumerate() {
        if e.flags.dynamic_range || e.transport.is_none() {
            continue;
        }
        let mut seen = BTreeSet::new();
        for (_, r) in e.ports.iter_ranges() {
            if r.start == r.end && seen.insert(r.start) {
                by_port.entry(r.start).or_default().push(i);
            }
        }
    }
    for (port, idx) in by_port {
        let mut services: BTreeSet<usize> = BTreeSet::new();
        let mut apps: BTreeSet<usize> = BTreeSet::new();
        for (n, &i) in idx.iter().enumerate() {
            for &j in &idx[n + 1..] {
                let (a, b) = (&spec.entries[i], &spec.entries[j]);
                if duplicates.contains(&(i, j))
                    || !transports_meet(a.transport, b.transport)
                    || opposite(a.direction, b.direction)
                {
                    continue;
                }
                if let (Some(x), Some(y)) = (&a.app, &b.app)
                    && app_family(x) != app_family(y)
                {
                    apps.extend([i, j]);
                }
                if a.origin.table == b.origin.table && !a.service.eq_ignore_ascii_case(&b.service) {
                    services.extend([i, j]);
                }
            }
        }
        if apps.is_empty() && services.is_empty() {
            continue;
        }
        let involved: BTreeSet<usize> = apps.union(&services).copied().collect();
        let first = *involved.iter().next().unwrap_or(&0);
        let e0 = &spec.entries[first];
        let mut parts = Vec::new();
        if !apps.is_empty() {
            let mut labels: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for &i in &apps {
                let e = &spec.entries[i];
                labels
                    .entry(e.app.clone().unwrap_or_default())
                    .or_default()
                    .push(format!("`{}`{}", e.id, cited(e)));
            }
            parts.push(format!(
                "under two protocols: {}",
                labels
                    .iter()
                    .map(|(l, ids)| format!("{l} ({})", ids.join(", ")))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ));
        }
        if !services.is_empty() {
            let mut names: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for &i in &services {
                let e = &spec.entries[i];
                names.entry(e.service.as_str()).or_default().push(format!(
                    "`{}`{}",
                    e.id,
                    cited(e)
                ));
            }
            parts.push(format!(
                "under {} services of one table: {}",
                names.len(),
                names
                    .iter()
                    .map(|(s, ids)| format!("\"{s}\" ({})", ids.join(", ")))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ));
        }
        out.push(Warning {
            kind: LintKind::PortConflict,
            location: e0.location.clone(),
            entries: involved
                .iter()
                .map(|&i| spec.entries[i].id.clone())
                .collect(),
            message: format!(
                "port {port}/{} is listed {}",
                transport_name(e0),
                parts.join("; and ")
            ),
            related: involved
                .iter()
                .skip(1)
                .map(|&i| spec.entries[i].location.clone())
                .collect(),
        });
    }
}

fn overlapping_ranges(spec: &Spec, out: &mut Vec<Warning>) {
    for (i, a) in spec.entries.iter().enumerate() {
        for (_, ra) in a.ports.iter_ranges() {
            if ra.start == ra.end {
                continue;
            }
            let mut hits: Vec<(&Entry, PortRange)> = Vec::new();
            for (j, b) in spec.entries.iter().enumerate() {
                if i == j || !transports_meet(a.transport, b.transport) {
                    continue;
                }
                for (_, rb) in b.ports.iter_ranges() {
                    let partial = ra.overlaps(&rb) && ra != rb;
                    // A wider range containing a smaller one is reported on the wider one only;
                    // two partial overlaps on the entry that comes first.
                    let contains_b = ra.start <= rb.start && rb.end <= ra.end;
                    let inside_b = rb.start <= ra.start && ra.end <= rb.end;
                    let report_here = if rb.start == rb.end || contains_b {
                        true
                    } else if inside_b {
                        false
                    } else {
                        i < j
                    };
                    if partial && report_here {
                        hits.push((b, rb));
                    }
                }
            }
            if hits.is_empty() {
                continue;
            }
            let list: Vec<String> = hits
                .iter()
                .map(|(b, rb)| format!("{rb} of `{}`", b.id))
                .collect();
            let dynamic = if a.flags.dynamic_range {
                " (a dynamic range: a service that picks a port in it may take a static one)"
            } else {
                ""
            };
            out.push(Warning {
                kind: LintKind::OverlappingRanges,
                location: a.location.clone(),
                entries: std::iter::once(a.id.clone())
                    .chain(hits.iter().map(|(b, _)| b.id.clone()))
                    .collect(),
                message: format!(
                    "range {ra}/{} of `{}`{} overlaps {}{dynamic}",
                    transport_name(a),
                    a.id,
                    line_of(a),
                    list.join(", ")
                ),
                related: hits.iter().map(|(b, _)| b.location.clone()).collect(),
            });
        }
    }
}

fn digits(n: u32) -> u32 {
    n.checked_ilog10().map_or(1, |d| d + 1)
}

fn suspicious_ranges(spec: &Spec, out: &mut Vec<Warning>) {
    // Range starts in use, by end: a start with a dropped digit is compared with these.
    let mut starts_by_end: BTreeMap<u16, BTreeMap<u16, BTreeSet<usize>>> = BTreeMap::new();
    for (i, e) in spec.entries.iter().enumerate() {
        for (_, r) in e.ports.iter_ranges() {
            if r.start != r.end {
                starts_by_end
                    .entry(r.end)
                    .or_default()
                    .entry(r.start)
                    .or_default()
                    .insert(i);
            }
        }
    }
    for (i, e) in spec.entries.iter().enumerate() {
        let written = e.origin.document_ports.as_ref();
        let sources: Vec<(&Ports, bool)> = std::iter::once((&e.ports, false))
            .chain(written.map(|p| (p, true)))
            .collect();
        for (ports, from_document) in sources {
            for (_, r) in ports.iter_ranges() {
                let (start, end) = (u32::from(r.start), u32::from(r.end));
                if r.start == r.end || digits(start) >= digits(end) {
                    continue;
                }
                // Candidates: the start with one digit inserted anywhere.
                let s = start.to_string();
                let mut candidates: BTreeSet<u32> = BTreeSet::new();
                for pos in 0..=s.len() {
                    for d in '0'..='9' {
                        let mut c = s.clone();
                        c.insert(pos, d);
                        if let Ok(v) = c.parse::<u32>()
                            && v > start
                            && v <= end
                            && !c.starts_with('0')
                        {
                            candidates.insert(v);
                        }
                    }
                }
                let siblings = starts_by_end.get(&r.end);
                let sibling = candidates.iter().find_map(|&c| {
                    let c16 = u16::try_from(c).ok()?;
                    let n = siblings?.get(&c16)?.iter().filter(|&&j| j != i).count();
                    (n > 0).then_some((c16, n))
                });
                let guess = match sibling {
                    Some((c, n)) => Some(format!(
                        "{c}-{end} with a dropped digit ({n} other {} {c}-{end})",
                        if n == 1 { "entry uses" } else { "entries use" }
                    )),
                    // Without a sibling: a start far below the bulk of the range.
                    None => {
                        let c = start * 10;
                        (c <= end && (end - c) * 10 < end - start)
                            .then(|| format!("{c}-{end} with a dropped digit"))
                    }
                };
                let Some(guess) = guess else { continue };
                let message = if from_document {
                    format!(
                        "the document writes {r}{} for `{}`, which looks like {guess}; the spec uses {}",
                        line_of(e),
                        e.id,
                        e.ports
                    )
                } else {
                    format!(
                        "range {r} of `{}`{} spans {} ports and looks like {guess}",
                        e.id,
                        line_of(e),
                        r.len()
                    )
                };
                out.push(Warning {
                    kind: LintKind::SuspiciousRange,
                    location: e.location.clone(),
                    entries: vec![e.id.clone()],
                    message,
                    related: Vec::new(),
                });
            }
        }
    }
}

fn process_stem(p: &str) -> &str {
    let p = p.trim();
    let lower = p.to_ascii_lowercase();
    if lower.ends_with(".exe") {
        &p[..p.len() - 4]
    } else {
        p
    }
}

fn swapped_processes(spec: &Spec, out: &mut Vec<Warning>) {
    let mut reported: BTreeSet<(usize, usize)> = BTreeSet::new();
    for (i, a) in spec.entries.iter().enumerate() {
        let lists: Vec<(&[String], bool)> = std::iter::once((a.processes.as_slice(), false))
            .chain(a.origin.document_processes.as_deref().map(|p| (p, true)))
            .collect();
        for (procs, from_document) in lists {
            for p in procs {
                let stem = process_stem(p);
                let Some((j, b)) = spec.entries.iter().enumerate().find(|(j, b)| {
                    *j != i
                        && b.service.eq_ignore_ascii_case(stem)
                        && !a.service.eq_ignore_ascii_case(&b.service)
                }) else {
                    continue;
                };
                let key = (i.min(j), i.max(j));
                if !reported.insert(key) {
                    continue;
                }
                let b_procs = if from_document {
                    b.origin.document_processes.as_ref().unwrap_or(&b.processes)
                } else {
                    &b.processes
                };
                let swapped = if b_procs.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; `{}` names {}: the two look swapped",
                        b.id,
                        b_procs.join(", ")
                    )
                };
                let tail = if from_document {
                    format!(
                        " (as the document writes it; the spec uses {} for `{}`)",
                        a.processes.join(", "),
                        a.id
                    )
                } else {
                    String::new()
                };
                out.push(Warning {
                    kind: LintKind::SwappedProcess,
                    location: a.location.clone(),
                    entries: vec![a.id.clone(), b.id.clone()],
                    message: format!(
                        "`{}` ({}){} names process {p}, which is the service `{}`{}{swapped}{tail}",
                        a.id,
                        a.service,
                        line_of(a),
                        b.service,
                        line_of(b)
                    ),
                    related: vec![b.location.clone()],
                });
            }
        }
    }
}

fn zones(spec: &Spec, inventory: Option<&Inventory>, out: &mut Vec<Warning>) {
    let declared: BTreeSet<&str> = spec.zones.iter().map(|z| z.name.as_str()).collect();
    let mut users: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    let mut hosts: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for e in &spec.entries {
        for p in e.sources.iter().chain(&e.destinations) {
            match p {
                Peer::Zone(z) => users.entry(z.as_str()).or_default().push(e),
                Peer::Host(h) => hosts.entry(h.as_str()).or_default().push(e),
                Peer::Net(_) | Peer::Addr(_) => {}
            }
        }
    }
    let ids = |es: &[&Entry]| -> Vec<String> {
        let mut v: Vec<String> = es.iter().map(|e| e.id.clone()).collect();
        v.dedup();
        v
    };
    let summary = |v: &[String]| -> String {
        let shown: Vec<String> = v.iter().take(3).map(|s| format!("`{s}`")).collect();
        let more = v.len().saturating_sub(3);
        if more > 0 {
            format!("{} and {more} more", shown.join(", "))
        } else {
            shown.join(", ")
        }
    };
    for (z, es) in &users {
        let v = ids(es);
        if *z != ZONE_ANY && *z != ZONE_ALL_NODES && !declared.contains(z) {
            out.push(Warning {
                kind: LintKind::UndeclaredZone,
                location: es[0].location.clone(),
                entries: v.clone(),
                message: format!(
                    "zone `{z}` is used by {} but not declared in [zones] (a typo, or a zone to describe)",
                    summary(&v)
                ),
                related: Vec::new(),
            });
        }
        if let Some(inv) = inventory
            && !inv.is_bound(z)
        {
            out.push(Warning {
                kind: LintKind::UnboundZone,
                location: es[0].location.clone(),
                entries: v.clone(),
                message: format!(
                    "zone `{z}` is used by {} but {} does not bind it: peers of those entries cannot be checked",
                    summary(&v),
                    inv.path.display()
                ),
                related: Vec::new(),
            });
        }
    }
    for z in &spec.zones {
        if !users.contains_key(z.name.as_str()) {
            out.push(Warning {
                kind: LintKind::UnusedZone,
                location: z.location.clone(),
                entries: Vec::new(),
                message: format!("zone `{}` is declared but no entry uses it", z.name),
                related: Vec::new(),
            });
        }
    }
    if let Some(inv) = inventory {
        for (h, es) in &hosts {
            if !inv.hosts.contains_key(*h) {
                let v = ids(es);
                out.push(Warning {
                    kind: LintKind::UnboundHost,
                    location: es[0].location.clone(),
                    entries: v.clone(),
                    message: format!(
                        "host `{h}` is used by {} but {} has no [hosts] entry for it: traffic to it cannot be recognised",
                        summary(&v),
                        inv.path.display()
                    ),
                    related: Vec::new(),
                });
            }
        }
    }
}

fn shapes(spec: &Spec, out: &mut Vec<Warning>) {
    for e in &spec.entries {
        let portless = e.transport.is_some_and(TransportSpec::is_portless);
        let w = |kind, message: String| Warning {
            kind,
            location: e.location.clone(),
            entries: vec![e.id.clone()],
            message,
            related: Vec::new(),
        };
        if e.ports.is_none() && !portless {
            let msg = match (e.transport, e.direction) {
                (_, Some(d)) => format!(
                    "`{}` ({}){} documents {d} traffic without a port",
                    e.id,
                    e.service,
                    line_of(e)
                ),
                (None, None) => format!(
                    "`{}` ({}){} has no ports, transport or direction (N/A): it documents a process that should not use the network",
                    e.id,
                    e.service,
                    line_of(e)
                ),
                (Some(t), None) => format!(
                    "`{}` ({}){} has transport {t} but no ports",
                    e.id,
                    e.service,
                    line_of(e)
                ),
            };
            out.push(w(LintKind::NoPorts, msg));
        }
        if portless && !e.ports.is_none() {
            out.push(w(
                LintKind::PortsOnIcmp,
                format!(
                    "`{}` is {} but lists ports {}: ICMP carries no ports",
                    e.id,
                    transport_name(e),
                    e.ports
                ),
            ));
        }
        if e.is_network() && e.direction.is_none() {
            out.push(w(
                LintKind::NoDirection,
                format!(
                    "`{}` ({} {}) has no direction: findings cannot tell a wrong-direction flow",
                    e.id,
                    transport_name(e),
                    e.ports
                ),
            ));
        }
    }
}

/// Whether `text` contains `n` as a whole number (not part of a longer digit run).
fn mentions_number(text: &str, n: u16) -> bool {
    let needle = n.to_string();
    let bytes = text.as_bytes();
    text.match_indices(&needle).any(|(i, _)| {
        let before = i.checked_sub(1).map(|b| bytes[b]);
        let after = bytes.get(i + needle.len()).copied();
        !before.is_some_and(|b| b.is_ascii_digit()) && !after.is_some_and(|b| b.is_ascii_digit())
    })
}

fn origins(spec: &Spec, document: &str, out: &mut Vec<Warning>) {
    let lines: Vec<&str> = document.lines().collect();
    for e in &spec.entries {
        let Some(first) = e.origin.line else { continue };
        let last = e.origin.line_end.unwrap_or(first).max(first);
        let w = |message: String| Warning {
            kind: LintKind::OriginMismatch,
            location: e.location.clone(),
            entries: vec![e.id.clone()],
            message,
            related: Vec::new(),
        };
        let (Ok(a), Ok(b)) = (usize::try_from(first), usize::try_from(last)) else {
            continue;
        };
        if b > lines.len() {
            out.push(w(format!(
                "`{}` cites document line {last}, but the document has {} lines",
                e.id,
                lines.len()
            )));
            continue;
        }
        let text = lines[a - 1..b].join("\n");
        let ports = e.origin.document_ports.as_ref().unwrap_or(&e.ports);
        let missing: Vec<String> = ports
            .iter_ranges()
            .flat_map(|(_, r)| [r.start, r.end])
            .filter(|&p| !mentions_number(&text, p))
            .map(|p| p.to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !missing.is_empty() {
            let shown: String = text.lines().next().unwrap_or("").chars().take(80).collect();
            out.push(w(format!(
                "`{}` has port{} {} that document line{} {first}{} do{} not mention (\"{shown}\")",
                e.id,
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", "),
                if a == b { "" } else { "s" },
                if a == b {
                    String::new()
                } else {
                    format!("-{last}")
                },
                if a == b { "es" } else { "" },
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(entries: &str) -> Spec {
        let text =
            format!("[spec]\nname = \"t\"\n[zones]\nall-nodes = \"x\"\nadmin = \"y\"\n{entries}");
        Spec::parse(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn entry(id: &str, body: &str) -> String {
        format!("[[entry]]\nid = \"{id}\"\n{body}\n")
    }

    const BASE: &str = "service = \"S\"\nports = 80\ntransport = \"tcp\"\napp = \"HTTP\"\ndirection = \"bidirectional\"\nsources = [\"admin\"]\ndestinations = [\"all-nodes\"]\norigin = { table = \"T\" }";

    fn kinds(w: &[Warning]) -> Vec<LintKind> {
        w.iter().map(|w| w.kind).collect()
    }

    #[test]
    fn clean_spec_has_no_warnings() {
        let s = spec(&entry("a", BASE));
        assert_eq!(lint(&s, None, None), vec![]);
    }

    #[test]
    fn duplicate_rows_are_found_once() {
        let s = spec(&format!("{}{}", entry("a", BASE), entry("b", BASE)));
        let w = lint(&s, None, None);
        assert_eq!(kinds(&w), [LintKind::DuplicateRow], "{w:#?}");
        assert_eq!(w[0].entries, ["a", "b"]);
        assert_eq!(w[0].related[0].line, 6);
    }

    #[test]
    fn port_under_two_protocols_or_two_services() {
        let rpc = BASE.replace("HTTP", "RPC");
        let s = spec(&format!("{}{}", entry("a", BASE), entry("b", &rpc)));
        let w = lint(&s, None, None);
        assert_eq!(kinds(&w), [LintKind::PortConflict]);
        assert!(
            w[0].message
                .contains("under two protocols: HTTP (`a`) and RPC (`b`)"),
            "{}",
            w[0].message
        );
        let other = BASE.replace("\"S\"", "\"Other\"");
        let s = spec(&format!("{}{}", entry("a", BASE), entry("b", &other)));
        let w = lint(&s, None, None);
        assert!(
            w[0].message.contains("under 2 services of one table"),
            "{}",
            w[0].message
        );
        // Another table: a service of the same port is not a conflict.
        let elsewhere = other.replace("table = \"T\"", "table = \"U\"");
        let s = spec(&format!("{}{}", entry("a", BASE), entry("b", &elsewhere)));
        assert_eq!(lint(&s, None, None), vec![]);
        // Client and server of one port are not a conflict; SCP and SSH are one family.
        let out = other
            .replace("bidirectional", "outbound")
            .replace("HTTP", "RPC");
        let inn = BASE.replace("bidirectional", "inbound");
        let s = spec(&format!("{}{}", entry("a", &inn), entry("b", &out)));
        assert_eq!(lint(&s, None, None), vec![]);
        let ssh = BASE.replace("HTTP", "SSH");
        let scp = BASE
            .replace("HTTP", "SCP")
            .replace("table = \"T\"", "table = \"U\"");
        let s = spec(&format!("{}{}", entry("a", &ssh), entry("b", &scp)));
        assert_eq!(lint(&s, None, None), vec![]);
    }

    #[test]
    fn overlapping_and_suspicious_ranges() {
        let r = |p: &str| BASE.replace("ports = 80", &format!("ports = \"{p}\""));
        let s = spec(&format!(
            "{}{}{}",
            entry("a", &r("15000-15050")),
            entry(
                "b",
                &r("15000-15050")
                    .replace("\"S\"", "\"B\"")
                    .replace("\"T\"", "\"U\"")
            ),
            entry(
                "c",
                &r("1500-15050")
                    .replace("\"S\"", "\"C\"")
                    .replace("\"T\"", "\"V\"")
            )
        ));
        let w = lint(&s, None, None);
        assert_eq!(
            kinds(&w),
            [LintKind::OverlappingRanges, LintKind::SuspiciousRange],
            "{w:#?}"
        );
        assert!(
            w[1].message.contains(
                "looks like 15000-15050 with a dropped digit (2 other entries use 15000-15050)"
            ),
            "{}",
            w[1].message
        );
        assert!(
            w[0].message.contains("1500-15050/tcp of `c`")
                && w[0].message.contains("15000-15050 of `a`"),
            "{}",
            w[0].message
        );
        // Without a sibling, a start far below the bulk of the range is still suspicious.
        let s = spec(&entry("d", &r("2000-20100")));
        assert_eq!(kinds(&lint(&s, None, None)), [LintKind::SuspiciousRange]);
        let s = spec(&entry("d", &r("137-139, 9000-9010, 20123-32768")));
        assert_eq!(lint(&s, None, None), vec![]);
    }

    #[test]
    fn corrected_values_are_still_reported_from_the_document() {
        let body = BASE
            .replace("ports = 80", "ports = \"15000-15050\"")
            .replace(
                "origin = { table = \"T\" }",
                "origin = { table = \"T\", document_ports = \"1500-15050\" }",
            );
        let sib = BASE
            .replace("ports = 80", "ports = \"15000-15050\"")
            .replace("\"S\"", "\"B\"")
            .replace("\"T\"", "\"U\"");
        let s = spec(&format!("{}{}", entry("a", &body), entry("b", &sib)));
        let w = lint(&s, None, None);
        assert_eq!(kinds(&w), [LintKind::SuspiciousRange], "{w:#?}");
        assert!(
            w[0].message.starts_with("the document writes 1500-15050 for `a`, which looks like 15000-15050 with a dropped digit (1 other entry uses"),
            "{}",
            w[0].message
        );
    }

    #[test]
    fn swapped_processes_name_both_entries() {
        let a = "service = \"Acme.Alpha\"\nports = 1\ntransport = \"tcp\"\ndirection = \"inbound\"\nprocesses = [\"Acme.Beta.exe\"]";
        let b = "service = \"Acme.Beta\"\nports = 2\ntransport = \"tcp\"\ndirection = \"inbound\"\nprocesses = [\"Acme.exe\"]";
        let s = spec(&format!("{}{}", entry("a", a), entry("b", b)));
        let w = lint(&s, None, None);
        let sw: Vec<_> = w
            .iter()
            .filter(|w| w.kind == LintKind::SwappedProcess)
            .collect();
        assert_eq!(sw.len(), 1, "{w:#?}");
        assert!(
            sw[0].message.contains(
                "names process Acme.Beta.exe, which is the service `Acme.Beta`; `b` names Acme.exe"
            ),
            "{}",
            sw[0].message
        );
    }

    #[test]
    fn zones_declared_used_and_bound() {
        let body = BASE.replace("[\"admin\"]", "[\"admn\", \"listener.example.com\"]");
        let s = spec(&entry("a", &body));
        let inv = Inventory::parse("[zones]\nadmin = [\"10.0.0.0/8\"]\n", "inv.toml").unwrap();
        let w = lint(&s, Some(&inv), None);
        assert_eq!(
            kinds(&w),
            [
                LintKind::UnusedZone,
                LintKind::UndeclaredZone,
                LintKind::UnboundZone,
                LintKind::UnboundZone,
                LintKind::UnboundHost
            ],
            "{w:#?}"
        );
        assert!(w.iter().any(|w| {
            w.message
                .starts_with("zone `all-nodes` is used by `a` but inv.toml does not bind it")
        }));
    }

    #[test]
    fn shapes_without_ports_or_direction() {
        let na = "service = \"C\"\nports = \"none\"\ntransport = \"none\"\ndirection = \"none\"";
        let inbound =
            "service = \"Q\"\nports = \"none\"\ntransport = \"none\"\ndirection = \"inbound\"";
        let nodir = "service = \"D\"\nports = 9\ntransport = \"tcp\"\ndirection = \"none\"";
        let icmp = "service = \"P\"\nports = 7\ntransport = \"icmp\"\ndirection = \"inbound\"";
        let ping =
            "service = \"P\"\nports = \"none\"\ntransport = \"icmp\"\ndirection = \"inbound\"";
        let s = spec(
            &[
                entry("a", na),
                entry("b", inbound),
                entry("c", nodir),
                entry("d", icmp),
                entry("e", ping),
            ]
            .concat(),
        );
        let w = lint(&s, None, None);
        assert_eq!(
            kinds(&w),
            [
                LintKind::UnusedZone,
                LintKind::UnusedZone,
                LintKind::NoPorts,
                LintKind::NoPorts,
                LintKind::NoDirection,
                LintKind::PortsOnIcmp
            ],
            "{w:#?}"
        );
        assert!(
            w[3].message
                .contains("documents inbound traffic without a port")
        );
    }

    #[test]
    fn origins_must_mention_the_ports() {
        let body = BASE
            .replace("ports = 80", "ports = \"5672, 15672\"")
            .replace(
                "origin = { table = \"T\" }",
                "origin = { table = \"T\", line = 2, line_end = 3 }",
            );
        let s = spec(&entry("a", &body));
        let doc = "title\nAMQP Default: 5672, 15672TLS: 5671\nInbound\n";
        assert_eq!(lint(&s, None, Some(doc)), vec![]);
        let doc = "title\nAMQP Default: 5672, 156720\nInbound\n";
        let w = lint(&s, None, Some(doc));
        assert!(
            w[0].message
                .contains("has port 15672 that document lines 2-3 do not mention"),
            "{}",
            w[0].message
        );
        let w = lint(&s, None, Some("one line"));
        assert!(
            w[0].message
                .contains("cites document line 3, but the document has 1 lines")
        );
    }
}
