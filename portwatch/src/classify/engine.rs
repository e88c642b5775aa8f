//! The classification algorithm behind [`super::classify`]: orient every flow, match it to
//! spec entries, group the results into findings, then look at entries without traffic and at
//! listeners. Pure.
use std::collections::{BTreeMap, BTreeSet};
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
use crate::host::{Listener, canonical};
use crate::spec::{DirectionSpec, Entry, Ports, TransportSpec};

/// At most this many unknown-direction findings are listed one by one; the rest are summed
/// into one finding.
pub(crate) const MAX_UNKNOWN_GROUPS: usize = 200;

/// An entry that can match traffic, with what matching needs precomputed.
pub(crate) struct Rule<'a> {
    idx: usize,
    pub(crate) e: &'a Entry,
    pub(crate) r: EntryRef,
    /// Distinct ports covered (0 for port-less entries): smaller is more specific.
    width: u32,
}

impl Rule<'_> {
    fn admits(&self, t: Transport) -> bool {
        self.e.transport.is_some_and(|ts| ts.admits(t))
    }

    /// Whether the entry covers the service port (for port-less transports: whether the
    /// entry has no ports).
    fn covers(&self, t: Transport, port: Option<u16>) -> bool {
        match port {
            Some(p) if t.has_ports() => self.e.ports.matches(p).is_some(),
            _ => self.e.ports.is_none() && !t.has_ports(),
        }
    }

    fn allows(&self, role: Role) -> bool {
        match (self.e.direction, role) {
            (None, _) => true,
            (Some(d), Role::Server) => d.allows_inbound(),
            (Some(d), Role::Client) => d.allows_outbound(),
        }
    }

    /// The peers the entry allows for the node in `role`: the clients when the node serves,
    /// the servers when it connects.
    fn allowed_peers(&self, role: Role) -> &[crate::spec::Peer] {
        match role {
            Role::Server => &self.e.sources,
            Role::Client => &self.e.destinations,
        }
    }
}

pub(crate) fn entry_ref(e: &Entry) -> EntryRef {
    EntryRef {
        id: e.id.clone(),
        service: e.service.clone(),
        ports: e.ports.to_string(),
        transport: e
            .transport
            .map(|t| t.as_str().to_owned())
            .unwrap_or_else(|| "none".to_owned()),
        direction: e
            .direction
            .map(|d| d.as_str().to_owned())
            .unwrap_or_else(|| "any".to_owned()),
        file: e.location.file.display().to_string(),
        line: e.location.line,
    }
}

/// Entry-bound traffic findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum EntryKind {
    Documented,
    PeerOutsideZone,
    WrongDirection,
    WrongTransport,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum GroupKey {
    Entry {
        kind: EntryKind,
        rule: usize,
        transport: Transport,
        role: Role,
    },
    Undocumented {
        transport: Transport,
        port: Option<u16>,
        role: Role,
    },
    Unknown {
        transport: Transport,
        local: u16,
        remote: u16,
        reason: UnknownReason,
    },
}

#[derive(Default)]
struct Group {
    traffic: Traffic,
    peers: BTreeMap<IpAddr, PeerStat>,
    ports: BTreeSet<u16>,
    outside: BTreeSet<IpAddr>,
    processes: BTreeSet<String>,
    candidates: BTreeSet<usize>,
}

impl Group {
    fn add_flow(&mut self, f: &FlowRecord, peer: IpAddr, port: Option<u16>) {
        let s = &f.stats;
        self.traffic.add(&Traffic {
            flows: 1,
            packets_in: s.inbound.packets,
            bytes_in: s.inbound.bytes,
            packets_out: s.outbound.packets,
            bytes_out: s.outbound.bytes,
            first_seen: s.first_seen,
            last_seen: s.last_seen,
        });
        let p = self.peers.entry(peer).or_insert(PeerStat {
            addr: peer,
            flows: 0,
            packets: 0,
            bytes: 0,
        });
        p.flows += 1;
        p.packets = p
            .packets
            .saturating_add(s.inbound.packets)
            .saturating_add(s.outbound.packets);
        p.bytes = p
            .bytes
            .saturating_add(s.inbound.bytes)
            .saturating_add(s.outbound.bytes);
        if let Some(port) = port {
            self.ports.insert(port);
        }
    }
}

/// Lossless per-port totals by (transport, port, side).
type PortTotals = BTreeMap<(Transport, u16, Side), PortCountsInOut>;

fn port_totals(input: &ClassifyInput<'_>) -> PortTotals {
    let mut m = PortTotals::new();
    for p in &input.window.ports {
        let c = m.entry((p.transport, p.port, p.side)).or_default();
        let add = match p.dir {
            Direction::In => PortCountsInOut {
                packets_in: p.counts.packets,
                bytes_in: p.counts.bytes,
                ..Default::default()
            },
            Direction::Out => PortCountsInOut {
                packets_out: p.counts.packets,
                bytes_out: p.counts.bytes,
                ..Default::default()
            },
        };
        c.add(&add);
    }
    m
}

/// Whether one of `names` (the spec's) names process `actual`. Case-insensitive, ignoring a
/// `.exe` suffix; a 15-byte Linux `comm` matches a longer name it is the start of.
pub(crate) fn process_matches(names: &[String], actual: &[&str]) -> bool {
    fn norm(s: &str) -> String {
        let l = s.trim().to_ascii_lowercase();
        l.strip_suffix(".exe").map(str::to_owned).unwrap_or(l)
    }
    actual.iter().any(|a| {
        let a_raw = a.trim().to_ascii_lowercase();
        let a = norm(a);
        names.iter().any(|n| {
            let n_raw = n.trim().to_ascii_lowercase();
            norm(n) == a || (a_raw.len() == 15 && n_raw.starts_with(&a_raw))
        })
    })
}

/// ICMPv6 neighbour discovery (133-137) and multicast listener messages (130-132, 143).
fn is_infrastructure(f: &FlowRecord) -> bool {
    f.key.transport == Transport::Icmpv6 && matches!((f.key.local.port >> 8) as u8, 130..=137 | 143)
}

pub(crate) struct Ctx<'a> {
    input: &'a ClassifyInput<'a>,
    rules: Vec<Rule<'a>>,
    /// (transport, port) -> listeners that accept on it, for process checks.
    listening: BTreeMap<(Transport, u16), Vec<&'a Listener>>,
}

impl<'a> Ctx<'a> {
    fn is_self(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.input.node.addrs.iter().any(|a| canonical(*a) == ip)
    }

    /// The most specific of `rules` (fewest ports); for a served port with known owners,
    /// entries naming the owning process win. Ties all stay.
    fn most_specific<'r>(
        &self,
        rules: Vec<&'r Rule<'a>>,
        served: Option<(Transport, u16)>,
    ) -> Vec<&'r Rule<'a>> {
        let Some(min) = rules.iter().map(|r| r.width).min() else {
            return rules;
        };
        let narrow: Vec<&Rule> = rules.into_iter().filter(|r| r.width == min).collect();
        if narrow.len() < 2 {
            return narrow;
        }
        let owners: Vec<&str> = served
            .and_then(|k| self.listening.get(&k))
            .into_iter()
            .flatten()
            .flat_map(|l| l.processes.iter().flat_map(|p| p.names()))
            .collect();
        if owners.is_empty() {
            return narrow;
        }
        let by_process: Vec<&Rule> = narrow
            .iter()
            .copied()
            .filter(|r| process_matches(&r.e.processes, &owners))
            .collect();
        if by_process.is_empty() {
            narrow
        } else {
            by_process
        }
    }

    fn owner_names(&self, t: Transport, port: u16) -> Vec<String> {
        let mut v: Vec<String> = self
            .listening
            .get(&(t, port))
            .into_iter()
            .flatten()
            .flat_map(|l| l.processes.iter().map(|p| p.name.clone()))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(input: &'a ClassifyInput<'a>) -> Self {
        let rules: Vec<Rule> = input
            .spec
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_network())
            .map(|(idx, e)| Rule {
                idx,
                e,
                r: entry_ref(e),
                width: e.ports.port_count(),
            })
            .collect();
        let mut listening: BTreeMap<(Transport, u16), Vec<&Listener>> = BTreeMap::new();
        for l in input.listeners.unwrap_or_default() {
            listening.entry((l.transport, l.port)).or_default().push(l);
        }
        Ctx {
            input,
            rules,
            listening,
        }
    }

    /// How one listening socket stands against the spec.
    pub(crate) fn judge(&self, l: &Listener) -> Judged<'_, 'a> {
        if canonical(l.addr).is_loopback() {
            return Judged::LoopbackOnly;
        }
        if l.transport == Transport::Udp && self.input.ephemeral.contains(l.port) {
            return Judged::EphemeralUdp;
        }
        let matching: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| {
                r.admits(l.transport)
                    && r.covers(l.transport, Some(l.port))
                    && r.allows(Role::Server)
            })
            .collect();
        if matching.is_empty() {
            return Judged::Undocumented;
        }
        let mut matching = matching;
        if matching.iter().any(|r| !r.e.flags.dynamic_range) {
            matching.retain(|r| !r.e.flags.dynamic_range);
        }
        let naming: Vec<&Rule> = matching
            .iter()
            .copied()
            .filter(|r| !r.e.processes.is_empty())
            .collect();
        let names: Vec<&str> = l.processes.iter().flat_map(|p| p.names()).collect();
        let mismatch = if l.processes.is_empty()
            || naming.is_empty()
            || naming
                .iter()
                .any(|r| process_matches(&r.e.processes, &names))
        {
            None
        } else {
            Some(self.most_specific(naming, None)[0])
        };
        Judged::Documented { matching, mismatch }
    }
}

/// A listener's standing against the spec.
pub(crate) enum Judged<'r, 'a> {
    LoopbackOnly,
    EphemeralUdp,
    Undocumented,
    Documented {
        matching: Vec<&'r Rule<'a>>,
        /// The entry whose named process the owner is not.
        mismatch: Option<&'r Rule<'a>>,
    },
}

pub(crate) fn run(input: &ClassifyInput<'_>) -> Findings {
    let ctx = Ctx::new(input);
    let dctx = DirectionContext {
        listeners: input.listeners,
        ephemeral: input.ephemeral,
    };
    let totals = port_totals(input);

    let mut flows = FlowSummary::default();
    let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
    let mut services: BTreeMap<String, (BTreeSet<String>, Recorder, Recorder, Series)> =
        BTreeMap::new();
    let mut record_service = |name: &str, entry: Option<&str>, f: &FlowRecord| {
        let s = services.entry(name.to_owned()).or_insert_with(|| {
            let w = input.window;
            let series = Series::new(w.start, w.end);
            (BTreeSet::new(), Recorder::new(), Recorder::new(), series)
        });
        if let Some(id) = entry {
            s.0.insert(id.to_owned());
        }
        let st = &f.stats;
        s.1.record(st.last_seen.saturating_sub(st.first_seen) / 1_000);
        let bytes = st.inbound.bytes.saturating_add(st.outbound.bytes);
        s.2.record(bytes);
        s.3.record(st.first_seen, st.last_seen, bytes);
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
            let g = groups
                .entry(GroupKey::Unknown {
                    transport: t,
                    local: lp,
                    remote: rp,
                    reason,
                })
                .or_default();
            g.add_flow(f, peer, Some(lp));
            for r in &ctx.rules {
                if r.admits(t)
                    && ((r.covers(t, Some(lp)) && r.allows(Role::Server))
                        || (r.covers(t, Some(rp)) && r.allows(Role::Client)))
                {
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
        let mut cands: Vec<&Rule> = ctx.rules.iter().filter(|r| r.covers(t, port)).collect();
        // A specific row beats a dynamic range: when one documents this port and transport,
        // the range does not excuse traffic that breaks the row.
        if cands
            .iter()
            .any(|r| r.admits(t) && !r.e.flags.dynamic_range)
        {
            cands.retain(|r| !r.e.flags.dynamic_range);
        }
        let exact: Vec<&Rule> = cands
            .iter()
            .copied()
            .filter(|r| r.admits(t) && r.allows(role))
            .collect();
        let processes = served
            .map(|(t, p)| ctx.owner_names(t, p))
            .unwrap_or_default();
        if !exact.is_empty() {
            let chosen = ctx.most_specific(exact, served);
            let mut outside_all = input.inventory.is_some() && !ctx.is_self(peer);
            let mut unverifiable = false;
            if let (Some(inv), true) = (input.inventory, outside_all) {
                for r in &chosen {
                    match inv.any_peer_contains(r.allowed_peers(role), peer) {
                        Some(true) => outside_all = false,
                        None => {
                            unverifiable = true;
                            outside_all = false;
                        }
                        Some(false) => {}
                    }
                }
            }
            if outside_all {
                flows.violating += 1;
                let r = chosen[0];
                let g = groups
                    .entry(GroupKey::Entry {
                        kind: EntryKind::PeerOutsideZone,
                        rule: r.idx,
                        transport: t,
                        role,
                    })
                    .or_default();
                g.add_flow(f, peer, port);
                g.outside.insert(peer);
                g.processes.extend(processes);
            } else {
                flows.documented += 1;
                if unverifiable {
                    flows.peer_unverifiable += 1;
                }
                for r in chosen {
                    let g = groups
                        .entry(GroupKey::Entry {
                            kind: EntryKind::Documented,
                            rule: r.idx,
                            transport: t,
                            role,
                        })
                        .or_default();
                    g.add_flow(f, peer, port);
                    g.processes.extend(processes.iter().cloned());
                    record_service(&r.e.service, Some(&r.e.id), f);
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
            let g = groups
                .entry(GroupKey::Undocumented {
                    transport: t,
                    port,
                    role,
                })
                .or_default();
            g.add_flow(f, peer, port);
            g.processes.extend(processes);
            let subject = match port {
                Some(p) => format!("undocumented {t}/{p} {}", role.as_direction()),
                None => format!("undocumented {t} {}", role.as_direction()),
            };
            record_service(&subject, None, f);
            continue;
        };
        flows.violating += 1;
        let r = ctx.most_specific(pick, None)[0];
        let g = groups
            .entry(GroupKey::Entry {
                kind,
                rule: r.idx,
                transport: t,
                role,
            })
            .or_default();
        g.add_flow(f, peer, port);
        g.processes.extend(processes);
    }

    let mut out: Vec<Finding> = Vec::new();
    let mut used: BTreeSet<usize> = BTreeSet::new();
    let mut unknown: Vec<Finding> = Vec::new();
    let by_idx: BTreeMap<usize, &Rule> = ctx.rules.iter().map(|r| (r.idx, r)).collect();
    for (key, g) in groups {
        let mut fd = match key {
            GroupKey::Entry {
                kind,
                rule,
                transport,
                role,
            } => {
                let r = by_idx[&rule];
                if matches!(kind, EntryKind::Documented | EntryKind::PeerOutsideZone) {
                    used.insert(rule);
                }
                let fk = match kind {
                    EntryKind::Documented => FindingKind::Documented,
                    EntryKind::PeerOutsideZone => FindingKind::PeerOutsideZone {
                        allowed: r
                            .allowed_peers(role)
                            .iter()
                            .map(|p| p.to_string())
                            .collect(),
                        outside: g.outside.iter().copied().collect(),
                    },
                    EntryKind::WrongDirection => FindingKind::WrongDirection {
                        expected: r.r.direction.clone(),
                        observed: role,
                    },
                    EntryKind::WrongTransport => FindingKind::WrongTransport {
                        expected: r.r.transport.clone(),
                        observed: transport,
                    },
                };
                let mut fd = Finding::new(fk);
                fd.entry = Some(r.r.clone());
                fd.transport = Some(transport);
                fd.role = Some(role);
                fd
            }
            GroupKey::Undocumented {
                transport, role, ..
            } => {
                let mut fd = Finding::new(FindingKind::Undocumented);
                fd.transport = Some(transport);
                fd.role = Some(role);
                fd
            }
            GroupKey::Unknown {
                transport,
                remote,
                reason,
                ..
            } => {
                used.extend(g.candidates.iter().copied());
                let mut fd = Finding::new(FindingKind::UnknownDirection {
                    reason,
                    remote_port: Some(remote),
                    candidates: g.candidates.iter().map(|i| by_idx[i].r.clone()).collect(),
                });
                fd.transport = Some(transport);
                fd
            }
        };
        let side = match fd.role {
            Some(Role::Client) => Side::Remote,
            _ => Side::Local,
        };
        fill_evidence(&mut fd, g, &totals, side);
        if matches!(fd.kind, FindingKind::UnknownDirection { .. }) {
            unknown.push(fd);
        } else {
            out.push(fd);
        }
    }
    out.extend(cap_unknown(unknown));

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
        services: services
            .into_iter()
            .map(|(service, (ids, d, b, series))| ServiceStats {
                service,
                entries: ids.into_iter().collect(),
                duration_us: d.finish(),
                bytes: b.finish(),
                series,
            })
            .collect(),
    }
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
    let ports: Vec<u16> = g.ports.iter().copied().collect();
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
    fd.peers_total = g.peers.len() as u64;
    let mut peers: Vec<PeerStat> = g.peers.into_values().collect();
    peers.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.addr.cmp(&b.addr)));
    peers.truncate(TOP_PEERS);
    fd.peers = peers;
    fd.processes = g.processes.into_iter().collect();
}

/// Keeps the [`MAX_UNKNOWN_GROUPS`] biggest unknown-direction findings and sums the rest.
fn cap_unknown(mut v: Vec<Finding>) -> Vec<Finding> {
    if v.len() <= MAX_UNKNOWN_GROUPS {
        return v;
    }
    v.sort_by(|a, b| {
        b.traffic
            .bytes()
            .cmp(&a.traffic.bytes())
            .then(a.sort_key().cmp(&b.sort_key()))
    });
    let rest = v.split_off(MAX_UNKNOWN_GROUPS);
    let mut sum = Finding::new(FindingKind::UnknownDirection {
        reason: UnknownReason::AmbiguousPorts,
        remote_port: None,
        candidates: Vec::new(),
    });
    let mut peers: BTreeSet<IpAddr> = BTreeSet::new();
    for f in &rest {
        sum.traffic.add(&f.traffic);
        peers.extend(f.peers.iter().map(|p| p.addr));
    }
    sum.peers_total = peers.len() as u64;
    v.push(sum);
    v
}

/// Whether the lossless per-port totals show packets on the entry's ports on the side the
/// entry would serve from.
fn totals_show_traffic(r: &Rule<'_>, totals: &PortTotals) -> bool {
    totals.iter().any(|(&(t, port, side), c)| {
        !c.is_zero()
            && r.admits(t)
            && (if t.has_ports() {
                r.e.ports.matches(port).is_some()
            } else {
                r.e.ports.is_none()
            })
            && match side {
                Side::Local => r.allows(Role::Server),
                Side::Remote => r.allows(Role::Client),
            }
    })
}

fn listener_findings(ctx: &Ctx<'_>, ls: &[Listener], out: &mut Vec<Finding>) -> ListenerSummary {
    let mut sum = ListenerSummary {
        total: ls.len() as u64,
        ..ListenerSummary::default()
    };
    // Undocumented listeners and process mismatches, grouped by (transport, port).
    let mut undocumented: BTreeMap<(Transport, u16), (BTreeSet<IpAddr>, BTreeSet<String>)> =
        BTreeMap::new();
    let mut mismatch_groups: BTreeMap<(usize, Transport, u16), BTreeSet<String>> = BTreeMap::new();
    for l in ls {
        if l.processes.is_empty() {
            sum.without_process += 1;
        }
        match ctx.judge(l) {
            Judged::LoopbackOnly => sum.loopback_only += 1,
            Judged::EphemeralUdp => sum.ephemeral_udp += 1,
            Judged::Undocumented => {
                sum.undocumented += 1;
                let u = undocumented.entry((l.transport, l.port)).or_default();
                u.0.insert(l.addr);
                u.1.extend(l.processes.iter().map(|p| p.name.clone()));
            }
            Judged::Documented { mismatch, .. } => {
                sum.documented += 1;
                if let Some(r) = mismatch {
                    mismatch_groups
                        .entry((r.idx, l.transport, l.port))
                        .or_default()
                        .extend(l.processes.iter().map(|p| p.name.clone()));
                }
            }
        }
    }
    for ((t, port), (addrs, procs)) in undocumented {
        let mut fd = Finding::new(FindingKind::UndocumentedListener {
            addrs: addrs.into_iter().collect(),
        });
        fd.transport = Some(t);
        fd.port = Some(port);
        fd.role = Some(Role::Server);
        fd.processes = procs.into_iter().collect();
        out.push(fd);
    }
    for ((idx, t, port), found) in mismatch_groups {
        let Some(r) = ctx.rules.iter().find(|r| r.idx == idx) else {
            continue;
        };
        let mut fd = Finding::new(FindingKind::ProcessMismatch {
            expected: r.e.processes.clone(),
            found: found.iter().cloned().collect(),
        });
        fd.entry = Some(r.r.clone());
        fd.transport = Some(t);
        fd.port = Some(port);
        fd.role = Some(Role::Server);
        fd.processes = found.into_iter().collect();
        out.push(fd);
    }
    // Documented inbound ports with nothing listening.
    for r in &ctx.rules {
        let f = r.e.flags;
        if f.install_only || f.dynamic_range || f.optional {
            continue;
        }
        if !matches!(
            r.e.direction,
            Some(DirectionSpec::Inbound | DirectionSpec::Bidirectional)
        ) {
            continue;
        }
        let ts: Vec<Transport> = match r.e.transport {
            Some(TransportSpec::Tcp) => vec![Transport::Tcp],
            Some(TransportSpec::Udp) => vec![Transport::Udp],
            Some(TransportSpec::Any) => vec![Transport::Tcp, Transport::Udp],
            _ => continue, // no listener table for sctp and icmp
        };
        let reachable = |port: u16| {
            ts.iter().any(|t| {
                ctx.listening
                    .get(&(*t, port))
                    .is_some_and(|v| v.iter().any(|l| !canonical(l.addr).is_loopback()))
            })
        };
        let missing = missing_ports(&r.e.ports, &reachable);
        if missing.is_empty() {
            continue;
        }
        let mut fd = Finding::new(FindingKind::NotListening { missing });
        fd.entry = Some(r.r.clone());
        fd.transport = ts.first().copied();
        fd.role = Some(Role::Server);
        out.push(fd);
    }
    sum
}

/// The ports of `ports` with no listener, as the spec writes them. A single port must
/// listen; a range is satisfied by any port listening in it (services pick one); alternatives
/// and variants are satisfied when one of them is, else every missing piece of every group is
/// listed.
fn missing_ports(ports: &Ports, listening: &dyn Fn(u16) -> bool) -> Vec<String> {
    let group_missing = |set: &crate::spec::PortSet| -> Vec<String> {
        set.ranges()
            .iter()
            .filter(|r| !(r.start..=r.end).any(listening))
            .map(ToString::to_string)
            .collect()
    };
    let per: Vec<Vec<String>> = ports
        .groups()
        .iter()
        .map(|(_, s)| group_missing(s))
        .collect();
    match ports {
        Ports::None => Vec::new(),
        Ports::All(_) => per.into_iter().flatten().collect(),
        Ports::AnyOf(_) | Ports::Variants(_) => {
            if per.iter().any(Vec::is_empty) {
                Vec::new()
            } else {
                let mut v: Vec<String> = Vec::new();
                for m in per.into_iter().flatten() {
                    if !v.contains(&m) {
                        v.push(m);
                    }
                }
                v
            }
        }
    }
}
