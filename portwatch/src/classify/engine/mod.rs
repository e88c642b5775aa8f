//! The classification algorithm behind [`super::classify`]: orient every flow, match it to
//! spec entries, group the results into findings, then look at entries without traffic and at
//! listeners. Pure. The run is here; its parts are in rules (entries as matching rules and
//! the port index), groups, totals (per-port totals by range), unknown (unknown-direction
//! findings) and listening (listeners against the spec).
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use super::direction::{DirectionContext, Role, UnknownReason, orient};
use super::distribution::Recorder;
use super::findings::{
    EntryRef, Finding, FindingKind, PeerStat, PortCountsInOut, TOP_PEERS, Traffic,
};
use super::series::Series;
use super::{
    ClassifyInput, EntrySummary, Findings, FlowSummary, ListenerSummary, ServiceStats, Summary,
};
use crate::flow::{Direction, FlowRecord, Side, Transport};
use crate::host::{Connection, Listener, Process, canonical};
use crate::inventory::Inventory;
use crate::spec::{DirectionSpec, Entry, PortRange, Ports, TransportSpec};

mod groups;
mod listening;
mod rules;
#[cfg(test)]
mod tests;
mod totals;
mod unknown;

use groups::{EntryKind, Group, GroupKey, Groups};
pub(crate) use listening::Judged;
use listening::listener_findings;
pub(crate) use rules::{Ctx, entry_ref, process_matches};
use rules::{Rule, comm_names};
use totals::{PortTotals, port_totals, totals_show_traffic, totals_show_traffic_on, unused_ports};
use unknown::{UnknownGroup, unknown_findings};

/// Hash maps for per-flow work (classification sorts everything it outputs, so their order
/// never shows).
type Hasher = foldhash::fast::RandomState;

/// A peer-outside-zone finding lists at most this many peers (and counts them all).
pub(crate) const MAX_OUTSIDE: usize = 100;

/// At most this many unknown-direction findings are listed one by one; the rest are summed
/// into one finding.
pub(crate) const MAX_UNKNOWN_GROUPS: usize = 200;

/// ICMPv6 neighbour discovery (133-137) and multicast listener messages (130-132, 143).
fn is_infrastructure(f: &FlowRecord) -> bool {
    f.key.transport == Transport::Icmpv6
        && matches!(super::direction::icmp_type(f), 130..=137 | 143)
}

pub(crate) fn run(input: &ClassifyInput<'_>) -> Findings {
    let ctx = Ctx::new(input);
    let dctx = DirectionContext {
        listeners: input.listeners,
        ephemeral: input.ephemeral,
    };
    let totals = port_totals(input);

    let mut flows = FlowSummary::default();
    let mut groups = Groups::default();
    groups.peers.reserve(input.window.flows.len());
    // Per-service distributions and series, keyed cheaply per flow and named at the end.
    let mut services: HashMap<ServiceKey, (Recorder, Recorder, Series), Hasher> =
        HashMap::default();
    let mut record_service = |key: ServiceKey, f: &FlowRecord| {
        let s = services.entry(key).or_insert_with(|| {
            let w = input.window;
            (
                Recorder::new(),
                Recorder::new(),
                Series::new(w.start, w.end),
            )
        });
        let st = &f.stats;
        s.0.record(st.last_seen.saturating_sub(st.first_seen) / 1_000);
        let bytes = st.inbound.bytes.saturating_add(st.outbound.bytes);
        s.1.record(bytes);
        s.2.record(st.first_seen, st.last_seen, bytes);
    };

    for f in &input.window.flows {
        flows.total += 1;
        if is_infrastructure(f) {
            flows.infrastructure += 1;
            continue;
        }
        let t = f.key.transport;
        let peer = canonical(f.key.remote.addr);
        let o = orient(f, &dctx);
        let Some(role) = o.role() else {
            flows.unknown_direction += 1;
            let reason = match o {
                super::Orientation::Unknown { reason } => reason,
                super::Orientation::Known { .. } => UnknownReason::AmbiguousPorts,
            };
            let (lp, rp) = (f.key.local.port, f.key.remote.port);
            let (_, g) = groups.add_flow(
                GroupKey::Unknown {
                    transport: t,
                    local: lp,
                    remote: rp,
                    reason,
                },
                f,
                peer,
                Some(lp),
            );
            for r in ctx.covering(t, Some(lp)) {
                if r.admits(t) && r.allows(Role::Server) {
                    g.candidates.insert(r.idx);
                }
            }
            for r in ctx.covering(t, Some(rp)) {
                if r.admits(t) && r.allows(Role::Client) {
                    g.candidates.insert(r.idx);
                }
            }
            continue;
        };
        match role {
            Role::Server => flows.server += 1,
            Role::Client => flows.client += 1,
        }
        let port = t.has_ports().then_some(match role {
            Role::Server => f.key.local.port,
            Role::Client => f.key.remote.port,
        });
        let served = (role == Role::Server)
            .then_some(port)
            .flatten()
            .map(|p| (t, p));
        let mut cands: Vec<&Rule> = ctx.covering(t, port).collect();
        // A specific row beats a dynamic range: when one documents this port and transport,
        // the range does not excuse traffic that breaks the row.
        if cands
            .iter()
            .any(|r| r.admits(t) && !r.e.flags.dynamic_range)
        {
            cands.retain(|r| !r.e.flags.dynamic_range);
        }
        let mut exact: Vec<&Rule> = cands
            .iter()
            .copied()
            .filter(|r| r.admits(t) && r.allows(role))
            .collect();
        if let (true, Some(inv)) = (exact.is_empty(), input.inventory) {
            let local = canonical(f.key.local.addr);
            exact = cands
                .iter()
                .copied()
                .filter(|r| r.admits(t) && r.mirrors(role, inv, local, peer))
                .collect();
        }
        // The processes behind the flow: the listener's for a served port, the connection's
        // for an outbound flow still open at the scan.
        let connection = match role {
            Role::Client => ctx.connection_owners(f),
            Role::Server => &[],
        };
        let processes = match served {
            Some((t, p)) => comm_names(ctx.listener_owners(t, p)),
            None => comm_names(connection.iter()),
        };
        if !exact.is_empty() {
            let chosen = ctx.most_specific(exact, served, connection);
            // The chosen entries that admit the peer: all of them without an inventory or for
            // the node itself; else those whose peers contain it, or cannot tell (None).
            let verdicts: Vec<Option<bool>> = match input.inventory {
                Some(inv) if !ctx.is_self(peer) => chosen
                    .iter()
                    .map(|r| inv.any_peer_contains(r.allowed_peers(role), peer))
                    .collect(),
                _ => vec![Some(true); chosen.len()],
            };
            let outside_all = verdicts.iter().all(|v| *v == Some(false));
            let unverifiable = !verdicts.contains(&Some(true));
            let chosen: Vec<&Rule> = if outside_all {
                chosen
            } else {
                chosen
                    .into_iter()
                    .zip(&verdicts)
                    .filter(|(_, v)| **v != Some(false))
                    .map(|(r, _)| r)
                    .collect()
            };
            if outside_all {
                flows.violating += 1;
                let r = chosen[0];
                let gid = groups.add_entry_flow(
                    EntryKind::PeerOutsideZone,
                    r.idx,
                    role,
                    f,
                    peer,
                    port,
                    &processes,
                );
                groups.outside.push((gid, peer));
            } else {
                flows.documented += 1;
                if unverifiable {
                    flows.peer_unverifiable += 1;
                }
                // An outbound flow's known owner must be a process the outbound entry names.
                // Inbound and bidirectional entries name the listening side (judged once per
                // listener, in `listener_findings`): a node connecting to another node's
                // documented port may well be another program.
                let wrong_process = !connection.is_empty() && {
                    let names: Vec<&str> = connection.iter().flat_map(|p| p.names()).collect();
                    chosen.iter().all(|r| {
                        r.e.direction == Some(DirectionSpec::Outbound)
                            && !r.e.processes.is_empty()
                            && !process_matches(&r.e.processes, &names)
                    })
                };
                for r in &chosen {
                    let kind = EntryKind::Documented;
                    groups.add_entry_flow(kind, r.idx, role, f, peer, port, &processes);
                    record_service(ServiceKey::Entry(r.idx), f);
                }
                if wrong_process {
                    let kind = EntryKind::ProcessMismatch;
                    groups.add_entry_flow(kind, chosen[0].idx, role, f, peer, port, &processes);
                }
            }
            continue;
        }
        let same_transport: Vec<&Rule> = cands.iter().copied().filter(|r| r.admits(t)).collect();
        let same_direction: Vec<&Rule> = cands
            .iter()
            .copied()
            .filter(|r| !r.admits(t) && r.allows(role))
            .collect();
        let (kind, pick) = if !same_transport.is_empty() {
            (EntryKind::WrongDirection, same_transport)
        } else if !same_direction.is_empty() {
            (EntryKind::WrongTransport, same_direction)
        } else {
            flows.undocumented += 1;
            let (_, g) = groups.add_flow(
                GroupKey::Undocumented {
                    transport: t,
                    port,
                    role,
                },
                f,
                peer,
                port,
            );
            g.processes.extend(processes);
            record_service(ServiceKey::Undocumented(t, port, role), f);
            continue;
        };
        flows.violating += 1;
        let r = ctx.most_specific(pick, None, &[])[0];
        groups.add_entry_flow(kind, r.idx, role, f, peer, port, &processes);
    }

    let mut out: Vec<Finding> = Vec::new();
    let mut used: BTreeSet<usize> = BTreeSet::new();
    // Per used entry, the service ports its documented traffic went to.
    let mut used_ports: BTreeMap<usize, BTreeSet<u16>> = BTreeMap::new();
    let mut unknown: Vec<UnknownGroup> = Vec::new();
    let by_idx: BTreeMap<usize, &Rule> = ctx.rules.iter().map(|r| (r.idx, r)).collect();
    let mut finished = groups.finish();
    let flat_peers = std::mem::take(&mut finished.peers);
    for id in finished.ids_by_key() {
        let key = finished.groups[id as usize].0;
        let (peers, peers_total) = finished.top[id as usize].clone();
        let (mut fd, g) = match key {
            GroupKey::Entry {
                kind,
                rule,
                transport,
                role,
            } => {
                let g = std::mem::take(&mut finished.groups[id as usize].1);
                let r = by_idx[&rule];
                if matches!(kind, EntryKind::Documented | EntryKind::PeerOutsideZone) {
                    used.insert(rule);
                    used_ports.entry(rule).or_default().extend(g.ports.iter());
                }
                let fk = match kind {
                    EntryKind::Documented => FindingKind::Documented,
                    EntryKind::PeerOutsideZone => {
                        let (outside, outside_total) = finished.take_outside(id);
                        FindingKind::PeerOutsideZone {
                            allowed: r
                                .allowed_peers(role)
                                .iter()
                                .map(|p| p.to_string())
                                .collect(),
                            outside,
                            outside_total,
                        }
                    }
                    EntryKind::WrongDirection => FindingKind::WrongDirection {
                        expected: r.r.direction.clone(),
                        observed: role,
                    },
                    EntryKind::WrongTransport => FindingKind::WrongTransport {
                        expected: r.r.transport.clone(),
                        observed: transport,
                    },
                    EntryKind::ProcessMismatch => FindingKind::ProcessMismatch {
                        expected: r.e.processes.clone(),
                        found: g.processes.iter().cloned().collect(),
                    },
                };
                let mut fd = Finding::new(fk);
                fd.entry = Some(r.r.clone());
                fd.transport = Some(transport);
                fd.role = Some(role);
                (fd, g)
            }
            GroupKey::Undocumented {
                transport, role, ..
            } => {
                let mut fd = Finding::new(FindingKind::Undocumented);
                fd.transport = Some(transport);
                fd.role = Some(role);
                (fd, std::mem::take(&mut finished.groups[id as usize].1))
            }
            GroupKey::Unknown {
                transport,
                remote,
                reason,
                ..
            } => {
                // Built once it is known which ones are listed (see `unknown_findings`); the
                // group stays where it is until then.
                used.extend(finished.groups[id as usize].1.candidates.iter().copied());
                unknown.push(UnknownGroup {
                    transport,
                    remote,
                    reason,
                    id,
                    peers: &flat_peers[peers],
                    peers_total,
                });
                continue;
            }
        };
        let side = match fd.role {
            Some(Role::Client) => Side::Remote,
            _ => Side::Local,
        };
        fill_evidence(&mut fd, g, &totals, side);
        fd.peers = flat_peers[peers].to_vec();
        fd.peers_total = peers_total;
        out.push(fd);
    }
    out.extend(unknown_findings(
        unknown,
        &mut finished.groups,
        &by_idx,
        &totals,
    ));

    // Entries without traffic.
    let mut entries = EntrySummary {
        total: input.spec.entries.len() as u64,
        not_observable: input
            .spec
            .entries
            .iter()
            .filter(|e| !e.is_network())
            .count() as u64,
        ..EntrySummary::default()
    };
    let approximate = input.window.health.flows_approximate();
    for r in &ctx.rules {
        if used.contains(&r.idx) {
            entries.used += 1;
            let seen = used_ports.get(&r.idx);
            let ports = unused_ports(r, |range| {
                seen.is_some_and(|s| s.range(range.start..=range.end).next().is_some())
                    || (approximate && totals_show_traffic_on(r, &totals, range))
            });
            if !ports.is_empty() {
                let mut fd = Finding::new(FindingKind::UnusedPorts { ports });
                fd.entry = Some(r.r.clone());
                fd.transport = single_transport(r.e.transport);
                out.push(fd);
            }
            continue;
        }
        if approximate && totals_show_traffic(r, &totals) {
            entries.usage_unknown += 1;
            continue;
        }
        entries.unused += 1;
        let f = r.e.flags;
        let note = if f.install_only {
            Some("install-only".to_owned())
        } else if f.optional {
            Some("optional".to_owned())
        } else if f.dynamic_range {
            Some("dynamic range".to_owned())
        } else {
            None
        };
        let mut fd = Finding::new(FindingKind::Unused { note });
        fd.entry = Some(r.r.clone());
        fd.transport = single_transport(r.e.transport);
        out.push(fd);
    }

    let listeners = input
        .listeners
        .map(|ls| listener_findings(&ctx, ls, &mut out));

    out.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let mut kinds: BTreeMap<String, u64> = FindingKind::NAMES
        .iter()
        .map(|n| ((*n).to_owned(), 0))
        .collect();
    for f in &out {
        *kinds.entry(f.kind.name().to_owned()).or_default() += 1;
    }
    Findings {
        findings: out,
        summary: Summary {
            kinds,
            flows,
            entries,
            listeners,
            flows_approximate: approximate,
        },
        services: service_stats(services, &by_idx),
    }
}

/// What a per-service distribution is keyed by while flows are classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ServiceKey {
    /// An entry (by spec index): named by the entry's service.
    Entry(usize),
    /// Undocumented traffic: named by its subject.
    Undocumented(Transport, Option<u16>, Role),
}

/// Names the distributions (entries of one service merge) and sorts them by service.
fn service_stats(
    services: HashMap<ServiceKey, (Recorder, Recorder, Series), Hasher>,
    by_idx: &BTreeMap<usize, &Rule<'_>>,
) -> Vec<ServiceStats> {
    let mut named: BTreeMap<String, (BTreeSet<String>, Recorder, Recorder, Option<Series>)> =
        BTreeMap::new();
    let mut keyed: Vec<(ServiceKey, (Recorder, Recorder, Series))> = services.into_iter().collect();
    // Merge order does not change a histogram, but keep it fixed anyway.
    keyed.sort_by_key(|(k, _)| match *k {
        ServiceKey::Entry(i) => (0, i, None, None, None),
        ServiceKey::Undocumented(t, p, r) => (1, 0, Some(t), p, Some(r)),
    });
    for (key, (d, b, series)) in keyed {
        let (name, id) = match key {
            ServiceKey::Entry(i) => match by_idx.get(&i) {
                Some(r) => (r.e.service.clone(), Some(r.e.id.clone())),
                None => continue,
            },
            ServiceKey::Undocumented(t, port, role) => (
                match port {
                    Some(p) => format!("undocumented {t}/{p} {}", role.as_direction()),
                    None => format!("undocumented {t} {}", role.as_direction()),
                },
                None,
            ),
        };
        let e = named.entry(name).or_default();
        e.0.extend(id);
        e.1.add(&d);
        e.2.add(&b);
        // Every series of one window has the same buckets: adding is exact.
        match &mut e.3 {
            Some(s) => s.add(&series),
            None => e.3 = Some(series),
        }
    }
    named
        .into_iter()
        .map(|(service, (ids, d, b, series))| ServiceStats {
            service,
            entries: ids.into_iter().collect(),
            duration_us: d.finish(),
            bytes: b.finish(),
            series: series.unwrap_or_default(),
        })
        .collect()
}

fn single_transport(t: Option<TransportSpec>) -> Option<Transport> {
    match t? {
        TransportSpec::Tcp => Some(Transport::Tcp),
        TransportSpec::Udp => Some(Transport::Udp),
        TransportSpec::Sctp => Some(Transport::Sctp),
        TransportSpec::Icmp => Some(Transport::Icmp),
        TransportSpec::Icmpv6 => Some(Transport::Icmpv6),
        TransportSpec::Any => None,
    }
}

fn fill_evidence(fd: &mut Finding, g: Group, totals: &PortTotals, side: Side) {
    fd.traffic = g.traffic;
    let ports: Vec<u16> = g.ports.iter().collect();
    if let [p] = ports[..] {
        fd.port = Some(p);
    }
    if let Some(t) = fd.transport.filter(|t| t.has_ports()) {
        let mut sum = PortCountsInOut::default();
        let mut any = false;
        for p in &ports {
            if let Some(c) = totals.get(&(t, *p, side)) {
                sum.add(c);
                any = true;
            }
        }
        fd.port_totals = any.then_some(sum);
    }
    if ports.len() > 1 {
        fd.ports_seen = ports;
    }
    fd.processes = g.processes.into_iter().collect();
}
