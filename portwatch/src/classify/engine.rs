//! The classification algorithm behind [`super::classify`]: orient every flow, match it to
//! spec entries, group the results into findings, then look at entries without traffic and at
//! listeners. Pure.
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

/// Hash maps for per-flow work (classification sorts everything it outputs, so their order
/// never shows).
type Hasher = foldhash::fast::RandomState;

/// A peer-outside-zone finding lists at most this many peers (and counts them all).
pub(crate) const MAX_OUTSIDE: usize = 100;

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
    /// entry has no ports). Matching goes through [`PortIndex`]; this is its definition.
    #[cfg(test)]
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

    /// Whether traffic in `role`, which the entry's direction does not allow, is the other
    /// end of traffic the entry documents between two places the inventory knows: a node
    /// connecting to another node's documented inbound port (a cluster link seen from its
    /// client), or a node serving a peer that an outbound entry names as a source. The
    /// serving side is the entry's `destinations`, or for an inbound entry naming none the
    /// inventory's nodes; the connecting side is its `sources`, or for an empty list any
    /// client of an inbound entry and the nodes for an outbound one. An outbound entry with
    /// no destinations (any server anywhere) is never mirrored.
    fn mirrors(&self, role: Role, inv: &Inventory, local: IpAddr, peer: IpAddr) -> bool {
        let Some(d) = self.e.direction else {
            return false;
        };
        if self.allows(role) {
            return false;
        }
        let inbound = d.allows_inbound();
        let serving = |ip: IpAddr| {
            if self.e.destinations.is_empty() {
                inbound && inv.is_node(ip)
            } else {
                inv.any_peer_contains(&self.e.destinations, ip) == Some(true)
            }
        };
        let connecting = |ip: IpAddr| {
            if self.e.sources.is_empty() {
                inbound || inv.is_node(ip)
            } else {
                inv.any_peer_contains(&self.e.sources, ip) == Some(true)
            }
        };
        match role {
            Role::Client => serving(peer) && connecting(local),
            Role::Server => serving(local) && connecting(peer),
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum EntryKind {
    Documented,
    PeerOutsideZone,
    WrongDirection,
    WrongTransport,
    /// Documented outbound traffic from a process the entry does not name (the flows are
    /// counted as documented too).
    ProcessMismatch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

/// The service ports a group saw, ascending. Nearly every group sees one, which needs no
/// allocation (a flood of distinct port pairs makes a group per flow).
#[derive(Debug, Default)]
enum GroupPorts {
    #[default]
    None,
    One(u16),
    Many(BTreeSet<u16>),
}

impl GroupPorts {
    fn insert(&mut self, p: u16) {
        match self {
            Self::None => *self = Self::One(p),
            Self::One(q) if *q == p => {}
            Self::One(q) => *self = Self::Many(BTreeSet::from([*q, p])),
            Self::Many(set) => {
                set.insert(p);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        let (one, many) = match self {
            Self::None => (None, None),
            Self::One(p) => (Some(*p), None),
            Self::Many(set) => (None, Some(set.iter().copied())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// The port, when there is exactly one.
    fn single(&self) -> Option<u16> {
        match self {
            Self::One(p) => Some(*p),
            Self::Many(set) if set.len() == 1 => set.first().copied(),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Group {
    traffic: Traffic,
    ports: GroupPorts,
    processes: BTreeSet<String>,
    candidates: BTreeSet<usize>,
}

/// One flow's contribution to a group's peers. Peers are aggregated once at the end by
/// sorting these records (cache-friendly), not per flow in a hash map per group.
struct PeerRec {
    group: u32,
    addr: IpAddr,
    packets: u64,
    bytes: u64,
}

/// A group with its peers worked out: key, group, where its top peers are in the finished
/// groups' peer list, distinct peers, peers outside zones (at most [`MAX_OUTSIDE`]) and how
/// many there were.
type FinishedGroup = (
    GroupKey,
    Group,
    std::ops::Range<usize>,
    u64,
    Vec<IpAddr>,
    u64,
);

/// The groups findings are built from, plus the per-flow peer log.
#[derive(Default)]
struct Groups {
    index: HashMap<GroupKey, u32, Hasher>,
    groups: Vec<(GroupKey, Group)>,
    peers: Vec<PeerRec>,
    /// (group, peer) for peers outside the entry's zones.
    outside: Vec<(u32, IpAddr)>,
}

impl Groups {
    /// Adds a flow to the group `key` (created if new) and returns the group and its id.
    fn add_flow(
        &mut self,
        key: GroupKey,
        f: &FlowRecord,
        peer: IpAddr,
        port: Option<u16>,
    ) -> (u32, &mut Group) {
        let id = match self.index.get(&key) {
            Some(&id) => id,
            None => {
                let id = self.groups.len() as u32;
                self.index.insert(key, id);
                self.groups.push((key, Group::default()));
                id
            }
        };
        let s = &f.stats;
        let packets = s.inbound.packets.saturating_add(s.outbound.packets);
        let bytes = s.inbound.bytes.saturating_add(s.outbound.bytes);
        self.peers.push(PeerRec {
            group: id,
            addr: peer,
            packets,
            bytes,
        });
        let g = &mut self.groups[id as usize].1;
        g.traffic.add(&Traffic {
            flows: 1,
            packets_in: s.inbound.packets,
            bytes_in: s.inbound.bytes,
            packets_out: s.outbound.packets,
            bytes_out: s.outbound.bytes,
            first_seen: s.first_seen,
            last_seen: s.last_seen,
        });
        if let Some(port) = port {
            g.ports.insert(port);
        }
        (id, g)
    }

    /// Per group: the top peers (by bytes, then address) and the number of distinct peers;
    /// and the peers outside zones (sorted, at most [`MAX_OUTSIDE`]) with their count. Every
    /// group's top peers are in the one list returned alongside (a flood makes a group per
    /// flow: no vector per group).
    fn finish(self) -> (Vec<FinishedGroup>, Vec<PeerStat>) {
        let mut peers = self.peers;
        peers.sort_unstable_by_key(|p| (p.group, p.addr));
        let n = self.groups.len();
        let mut top: Vec<(std::ops::Range<usize>, u64)> = vec![(0..0, 0); n];
        let mut flat: Vec<PeerStat> = Vec::new();
        let mut all: Vec<PeerStat> = Vec::new();
        let mut i = 0;
        while i < peers.len() {
            let g = peers[i].group;
            all.clear();
            while i < peers.len() && peers[i].group == g {
                let addr = peers[i].addr;
                let mut st = PeerStat {
                    addr,
                    flows: 0,
                    packets: 0,
                    bytes: 0,
                };
                while i < peers.len() && peers[i].group == g && peers[i].addr == addr {
                    st.flows += 1;
                    st.packets = st.packets.saturating_add(peers[i].packets);
                    st.bytes = st.bytes.saturating_add(peers[i].bytes);
                    i += 1;
                }
                all.push(st);
            }
            let distinct = all.len() as u64;
            let order =
                |a: &PeerStat, b: &PeerStat| b.bytes.cmp(&a.bytes).then(a.addr.cmp(&b.addr));
            if all.len() > TOP_PEERS {
                all.select_nth_unstable_by(TOP_PEERS, order);
                all.truncate(TOP_PEERS);
            }
            all.sort_unstable_by(order);
            top[g as usize] = (flat.len()..flat.len() + all.len(), distinct);
            flat.extend_from_slice(&all);
        }
        let mut outside = self.outside;
        outside.sort_unstable();
        outside.dedup();
        let mut out: Vec<(Vec<IpAddr>, u64)> = (0..n).map(|_| (Vec::new(), 0)).collect();
        for (g, a) in outside {
            let o = &mut out[g as usize];
            o.1 += 1;
            if o.0.len() < MAX_OUTSIDE {
                o.0.push(a);
            }
        }
        let finished = self
            .groups
            .into_iter()
            .zip(top)
            .zip(out)
            .map(|(((k, g), (p, pt)), (o, ot))| (k, g, p, pt, o, ot))
            .collect();
        (finished, flat)
    }
}

/// Lossless per-port totals by (transport, port, side), sorted by key (a window's totals hold
/// a key per remote port seen, often tens of thousands: a sorted vector, searched by range).
struct PortTotals {
    v: Vec<((Transport, u16, Side), PortCountsInOut)>,
    /// The transports present, with where each one's keys are in `v`.
    runs: Vec<(Transport, std::ops::Range<usize>)>,
}

impl PortTotals {
    /// The totals of one transport's `run` whose port is in `range`.
    fn in_range(
        &self,
        run: &std::ops::Range<usize>,
        range: PortRange,
    ) -> &[((Transport, u16, Side), PortCountsInOut)] {
        let keys = &self.v[run.clone()];
        let lo = keys.partition_point(|e| e.0.1 < range.start);
        let hi = keys.partition_point(|e| e.0.1 <= range.end);
        &keys[lo..hi]
    }

    fn get(&self, k: &(Transport, u16, Side)) -> Option<&PortCountsInOut> {
        self.v
            .binary_search_by_key(k, |e| e.0)
            .ok()
            .map(|i| &self.v[i].1)
    }
}

fn port_totals(input: &ClassifyInput<'_>) -> PortTotals {
    let mut v: Vec<((Transport, u16, Side), PortCountsInOut)> = input
        .window
        .ports
        .iter()
        .map(|p| {
            let c = match p.dir {
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
            ((p.transport, p.port, p.side), c)
        })
        .collect();
    // Snapshots list their ports sorted: this sort only checks.
    v.sort_by_key(|e| e.0);
    v.dedup_by(|b, a| {
        if a.0 == b.0 {
            a.1.add(&b.1);
            true
        } else {
            false
        }
    });
    let mut runs: Vec<(Transport, std::ops::Range<usize>)> = Vec::new();
    for (i, e) in v.iter().enumerate() {
        match runs.last_mut() {
            Some((t, r)) if *t == e.0.0 => r.end = i + 1,
            _ => runs.push((e.0.0, i..i + 1)),
        }
    }
    PortTotals { v, runs }
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
    f.key.transport == Transport::Icmpv6
        && matches!(super::direction::icmp_type(f), 130..=137 | 143)
}

/// The rules covering each port, so matching a flow costs a lookup rather than a scan of the
/// spec: for port `p`, `items[offsets[p]..offsets[p + 1]]` are positions in `Ctx::rules`
/// (ascending). Port-less rules (ICMP) are listed apart.
struct PortIndex {
    offsets: Vec<u32>,
    items: Vec<u32>,
    portless: Vec<u32>,
}

impl PortIndex {
    fn build(rules: &[Rule<'_>]) -> Self {
        const PORTS: usize = 1 << 16;
        let mut counts = vec![0u32; PORTS + 1];
        let mut last = vec![u32::MAX; PORTS];
        let mut portless = Vec::new();
        let each = |f: &mut dyn FnMut(usize, u32)| {
            for (i, r) in rules.iter().enumerate() {
                for (_, range) in r.e.ports.iter_ranges() {
                    for p in range.start..=range.end {
                        f(usize::from(p), i as u32);
                    }
                }
            }
        };
        each(&mut |p, i| {
            if last[p] != i {
                last[p] = i;
                counts[p + 1] += 1;
            }
        });
        for p in 0..PORTS {
            counts[p + 1] += counts[p];
        }
        let mut items = vec![0u32; counts[PORTS] as usize];
        let mut fill = counts.clone();
        last.fill(u32::MAX);
        each(&mut |p, i| {
            if last[p] != i {
                last[p] = i;
                items[fill[p] as usize] = i;
                fill[p] += 1;
            }
        });
        for (i, r) in rules.iter().enumerate() {
            if r.e.ports.is_none() {
                portless.push(i as u32);
            }
        }
        Self {
            offsets: counts,
            items,
            portless,
        }
    }

    fn covering(&self, port: u16) -> &[u32] {
        let p = usize::from(port);
        &self.items[self.offsets[p] as usize..self.offsets[p + 1] as usize]
    }
}

pub(crate) struct Ctx<'a> {
    input: &'a ClassifyInput<'a>,
    rules: Vec<Rule<'a>>,
    index: PortIndex,
    /// (transport, port) -> listeners that accept on it, for process checks.
    listening: BTreeMap<(Transport, u16), Vec<&'a Listener>>,
    /// Client-side connections by their ends (canonical addresses), for the owners of
    /// outbound flows.
    connected: HashMap<ConnKey, &'a Connection, Hasher>,
}

/// (transport, local address, local port, remote address, remote port).
type ConnKey = (Transport, IpAddr, u16, IpAddr, u16);

impl<'a> Ctx<'a> {
    /// The rules that cover `port` for transport `t` (see [`Rule::covers`]), in spec order.
    fn covering(&self, t: Transport, port: Option<u16>) -> impl Iterator<Item = &Rule<'a>> {
        let pos = match port {
            Some(p) if t.has_ports() => self.index.covering(p),
            _ if !t.has_ports() => &self.index.portless[..],
            _ => &[][..],
        };
        pos.iter().map(|&i| &self.rules[i as usize])
    }

    fn is_self(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.input.node.addrs.iter().any(|a| canonical(*a) == ip)
    }

    /// The most specific of `rules` (fewest ports); when the traffic's owning processes are
    /// known (the listeners of a `served` port, or `connection`'s owners for outbound
    /// traffic), entries naming one win. Ties all stay.
    fn most_specific<'r>(
        &self,
        rules: Vec<&'r Rule<'a>>,
        served: Option<(Transport, u16)>,
        connection: &[Process],
    ) -> Vec<&'r Rule<'a>> {
        let Some(min) = rules.iter().map(|r| r.width).min() else {
            return rules;
        };
        let narrow: Vec<&Rule> = rules.into_iter().filter(|r| r.width == min).collect();
        if narrow.len() < 2 {
            return narrow;
        }
        let served_owners = served
            .into_iter()
            .flat_map(|(t, p)| self.listener_owners(t, p));
        let owners: Vec<&str> = served_owners
            .chain(connection)
            .flat_map(|p| p.names())
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

    /// The processes holding the listeners of a served port.
    fn listener_owners(&self, t: Transport, port: u16) -> impl Iterator<Item = &'a Process> {
        self.listening
            .get(&(t, port))
            .into_iter()
            .flatten()
            .flat_map(|l| l.processes.iter())
    }

    /// The processes holding the client end of an outbound flow, when it was open at the scan.
    fn connection_owners(&self, f: &FlowRecord) -> &'a [Process] {
        if self.connected.is_empty() {
            return &[];
        }
        let k = &f.key;
        let key = (
            k.transport,
            canonical(k.local.addr),
            k.local.port,
            canonical(k.remote.addr),
            k.remote.port,
        );
        self.connected
            .get(&key)
            .map(|c| c.processes.as_slice())
            .unwrap_or_default()
    }
}

/// The `comm` names of `procs`, sorted and deduplicated (what findings list).
fn comm_names<'p>(procs: impl Iterator<Item = &'p Process>) -> Vec<String> {
    let mut v: Vec<String> = procs.map(|p| p.name.clone()).collect();
    v.sort();
    v.dedup();
    v
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
        let connected = input
            .connections
            .unwrap_or_default()
            .iter()
            .map(|c| {
                let key = (
                    c.transport,
                    canonical(c.local),
                    c.local_port,
                    canonical(c.remote),
                    c.remote_port,
                );
                (key, c)
            })
            .collect();
        let index = PortIndex::build(&rules);
        Ctx {
            input,
            rules,
            index,
            listening,
            connected,
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
            .covering(l.transport, Some(l.port))
            .filter(|r| r.admits(l.transport) && r.allows(Role::Server))
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
            Some(self.most_specific(naming, None, &[])[0])
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
                let (gid, g) = groups.add_flow(
                    GroupKey::Entry {
                        kind: EntryKind::PeerOutsideZone,
                        rule: r.idx,
                        transport: t,
                        role,
                    },
                    f,
                    peer,
                    port,
                );
                g.processes.extend(processes);
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
                    let (_, g) = groups.add_flow(
                        GroupKey::Entry {
                            kind: EntryKind::Documented,
                            rule: r.idx,
                            transport: t,
                            role,
                        },
                        f,
                        peer,
                        port,
                    );
                    g.processes.extend(processes.iter().cloned());
                    record_service(ServiceKey::Entry(r.idx), f);
                }
                if wrong_process {
                    let (_, g) = groups.add_flow(
                        GroupKey::Entry {
                            kind: EntryKind::ProcessMismatch,
                            rule: chosen[0].idx,
                            transport: t,
                            role,
                        },
                        f,
                        peer,
                        port,
                    );
                    g.processes.extend(processes.iter().cloned());
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
        let (_, g) = groups.add_flow(
            GroupKey::Entry {
                kind,
                rule: r.idx,
                transport: t,
                role,
            },
            f,
            peer,
            port,
        );
        g.processes.extend(processes);
    }

    let mut out: Vec<Finding> = Vec::new();
    let mut used: BTreeSet<usize> = BTreeSet::new();
    // Per used entry, the service ports its documented traffic went to.
    let mut used_ports: BTreeMap<usize, BTreeSet<u16>> = BTreeMap::new();
    let mut unknown: Vec<UnknownGroup> = Vec::new();
    let by_idx: BTreeMap<usize, &Rule> = ctx.rules.iter().map(|r| (r.idx, r)).collect();
    let (mut finished, flat_peers) = groups.finish();
    finished.sort_unstable_by_key(|x| x.0);
    for (key, g, peers, peers_total, outside, outside_total) in finished {
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
                    used_ports.entry(rule).or_default().extend(g.ports.iter());
                }
                let fk = match kind {
                    EntryKind::Documented => FindingKind::Documented,
                    EntryKind::PeerOutsideZone => FindingKind::PeerOutsideZone {
                        allowed: r
                            .allowed_peers(role)
                            .iter()
                            .map(|p| p.to_string())
                            .collect(),
                        outside,
                        outside_total,
                    },
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
                // Built once it is known which ones are listed (see `unknown_findings`).
                used.extend(g.candidates.iter().copied());
                unknown.push(UnknownGroup {
                    transport,
                    remote,
                    reason,
                    g,
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
    out.extend(unknown_findings(unknown, &by_idx, &totals));

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

/// An unknown-direction group waiting to become a finding.
struct UnknownGroup<'p> {
    transport: Transport,
    remote: u16,
    reason: UnknownReason,
    g: Group,
    peers: &'p [PeerStat],
    peers_total: u64,
}

impl UnknownGroup<'_> {
    /// The finding's port: the local port, when the group saw exactly one.
    fn port(&self) -> Option<u16> {
        self.g.ports.single()
    }

    fn finding(self, by_idx: &BTreeMap<usize, &Rule<'_>>, totals: &PortTotals) -> Finding {
        let mut fd = Finding::new(FindingKind::UnknownDirection {
            reason: self.reason,
            remote_port: Some(self.remote),
            candidates: self
                .g
                .candidates
                .iter()
                .map(|i| by_idx[i].r.clone())
                .collect(),
        });
        fd.transport = Some(self.transport);
        fill_evidence(&mut fd, self.g, totals, Side::Local);
        fd.peers = self.peers.to_vec();
        fd.peers_total = self.peers_total;
        fd
    }
}

/// The unknown-direction findings: the [`MAX_UNKNOWN_GROUPS`] biggest groups (most bytes
/// first, then the report's order: transport, port; then group order) one by one, the rest
/// summed into one finding. Only the listed ones are built (a flood of distinct port pairs
/// makes a group per flow).
fn unknown_findings(
    groups: Vec<UnknownGroup<'_>>,
    by_idx: &BTreeMap<usize, &Rule<'_>>,
    totals: &PortTotals,
) -> Vec<Finding> {
    if groups.len() <= MAX_UNKNOWN_GROUPS {
        return groups
            .into_iter()
            .map(|u| u.finding(by_idx, totals))
            .collect();
    }
    let mut order: Vec<(std::cmp::Reverse<u64>, Transport, Option<u16>, usize)> = groups
        .iter()
        .enumerate()
        .map(|(i, u)| {
            (
                std::cmp::Reverse(u.g.traffic.bytes()),
                u.transport,
                u.port(),
                i,
            )
        })
        .collect();
    order.select_nth_unstable(MAX_UNKNOWN_GROUPS);
    order.truncate(MAX_UNKNOWN_GROUPS);
    order.sort_unstable();
    let mut slot: Vec<Option<usize>> = vec![None; groups.len()];
    for (rank, o) in order.iter().enumerate() {
        slot[o.3] = Some(rank);
    }
    let mut listed: Vec<Option<Finding>> = (0..MAX_UNKNOWN_GROUPS).map(|_| None).collect();
    let mut sum = Finding::new(FindingKind::UnknownDirection {
        reason: UnknownReason::AmbiguousPorts,
        remote_port: None,
        candidates: Vec::new(),
    });
    let mut peers: BTreeSet<IpAddr> = BTreeSet::new();
    for (u, slot) in groups.into_iter().zip(slot) {
        match slot {
            Some(rank) => listed[rank] = Some(u.finding(by_idx, totals)),
            None => {
                sum.traffic.add(&u.g.traffic);
                peers.extend(u.peers.iter().map(|p| p.addr));
            }
        }
    }
    sum.peers_total = peers.len() as u64;
    let mut v: Vec<Finding> = listed.into_iter().flatten().collect();
    v.push(sum);
    v
}

/// Whether the lossless per-port totals show packets on the entry's ports on the side the
/// entry would serve from.
/// The pieces of a used entry's ports (single ports, ranges, labelled variants' ports) that
/// `seen` says no traffic went to, as the spec writes them. A range is used when any port in it
/// is. Entries with a single piece, or without ports, have nothing to add to "used".
fn unused_ports(r: &Rule<'_>, seen: impl Fn(PortRange) -> bool) -> Vec<String> {
    let groups = r.e.ports.groups();
    let pieces: usize = groups.iter().map(|(_, s)| s.ranges().len()).sum();
    if pieces < 2 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (label, set) in groups {
        for range in set.ranges() {
            if seen(*range) {
                continue;
            }
            out.push(match label {
                Some(l) => format!("{range} ({l})"),
                None => range.to_string(),
            });
        }
    }
    out.dedup();
    out
}

/// Whether the per-port totals show traffic on `range` that the entry could document (any
/// transport it admits, on the side its direction allows).
fn totals_show_traffic_on(r: &Rule<'_>, totals: &PortTotals, range: PortRange) -> bool {
    totals.runs.iter().any(|(t, run)| {
        if !t.has_ports() || !r.admits(*t) {
            return false;
        }
        totals.in_range(run, range).iter().any(|e| shows_for(r, e))
    })
}

/// Whether one total has packets on the side `r` would serve from.
fn shows_for(r: &Rule<'_>, e: &((Transport, u16, Side), PortCountsInOut)) -> bool {
    !e.1.is_zero()
        && match e.0.2 {
            Side::Local => r.allows(Role::Server),
            Side::Remote => r.allows(Role::Client),
        }
}

/// Whether the lossless per-port totals show packets on the entry's ports on the side the
/// entry would serve from.
fn totals_show_traffic(r: &Rule<'_>, totals: &PortTotals) -> bool {
    if r.e.ports.is_none() {
        return totals.runs.iter().any(|(t, run)| {
            !t.has_ports() && r.admits(*t) && totals.v[run.clone()].iter().any(|e| shows_for(r, e))
        });
    }
    r.e.ports
        .iter_ranges()
        .any(|(_, range)| totals_show_traffic_on(r, totals, range))
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
        let missing = missing_ports(&r.e.ports, &r.e.alternatives, &reachable);
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
/// listen; a range is satisfied by any port listening in it (services pick one). Alternatives
/// are satisfied when one of them is, and so are labelled variants unless `alternatives` names
/// some of them: then every other variant must listen and one of those named. When a set of
/// alternatives is unsatisfied, every missing piece of each of them is listed.
fn missing_ports(
    ports: &Ports,
    alternatives: &[String],
    listening: &dyn Fn(u16) -> bool,
) -> Vec<String> {
    let group_missing = |set: &crate::spec::PortSet| -> Vec<String> {
        set.ranges()
            .iter()
            .filter(|r| !(r.start..=r.end).any(listening))
            .map(ToString::to_string)
            .collect()
    };
    // (is one of the alternatives, what is missing of it)
    let per: Vec<(bool, Vec<String>)> = ports
        .groups()
        .iter()
        .map(|(label, s)| {
            let alternative = match ports {
                Ports::None | Ports::All(_) => false,
                Ports::AnyOf(_) => true,
                Ports::Variants(_) => {
                    alternatives.is_empty()
                        || label.is_some_and(|l| alternatives.iter().any(|a| a == l))
                }
            };
            (alternative, group_missing(s))
        })
        .collect();
    let alternative_met = per.iter().any(|(alt, m)| *alt && m.is_empty());
    let mut out: Vec<String> = Vec::new();
    for (alt, m) in per {
        if alt && alternative_met {
            continue;
        }
        for p in m {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::NodeInfo;
    use crate::classify::findings::Traffic;
    use crate::flow::Snapshot;
    use crate::host::PortRange;
    use crate::spec::Spec;

    fn check_index(spec: &Spec) {
        let w = Snapshot::default();
        let n = NodeInfo::default();
        let input = ClassifyInput {
            spec,
            inventory: None,
            window: &w,
            listeners: None,
            connections: None,
            ephemeral: PortRange::LINUX_DEFAULT,
            node: &n,
        };
        let ctx = Ctx::new(&input);
        // Every range edge and its neighbours, the low ports, and a stride over the rest.
        let mut ports: std::collections::BTreeSet<u16> = (0..=1100).collect();
        ports.extend((0..=u16::MAX).step_by(61));
        for r in &ctx.rules {
            for (_, range) in r.e.ports.iter_ranges() {
                for p in [range.start, range.end] {
                    ports.extend([p.saturating_sub(1), p, p.saturating_add(1)]);
                }
            }
        }
        for t in [Transport::Tcp, Transport::Icmp] {
            for &p in &ports {
                let port = Some(p);
                let by_index: Vec<usize> = ctx.covering(t, port).map(|r| r.idx).collect();
                let by_scan: Vec<usize> = ctx
                    .rules
                    .iter()
                    .filter(|r| r.covers(t, port))
                    .map(|r| r.idx)
                    .collect();
                assert_eq!(by_index, by_scan, "{} port {p} {t}", spec.name);
            }
        }
    }

    #[test]
    fn the_port_index_agrees_with_the_entries_on_every_port() {
        check_index(&crate::classify::tests::spec());
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
        for f in ["sisense-multinode.toml", "thoughtspot.toml"] {
            check_index(&Spec::load(root.join(f)).unwrap());
        }
    }

    /// The definition [`totals_show_traffic`] searches by range: any total of the entry's
    /// transport, on one of its ports, on the side it serves from.
    fn shows_by_scan(r: &Rule<'_>, totals: &PortTotals) -> bool {
        totals.v.iter().any(|&((t, port, side), c)| {
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

    #[test]
    fn totals_searched_by_range_agree_with_a_scan_for_every_entry() {
        use crate::flow::{PortCounts, PortTotal};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
        let specs = [
            crate::classify::tests::spec(),
            Spec::load(root.join("sisense-multinode.toml")).unwrap(),
            Spec::load(root.join("thoughtspot.toml")).unwrap(),
        ];
        let mut next = crate::flow::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let transports = [
            Transport::Tcp,
            Transport::Udp,
            Transport::Sctp,
            Transport::Icmp,
            Transport::Icmpv6,
            Transport::Other(47),
        ];
        let n = NodeInfo::default();
        for spec in &specs {
            for round in 0..40 {
                // Few totals (single ports, edges of ranges) to a flood of remote ports.
                let count = [1, 3, 20, 400, 5000][round % 5];
                let ports: Vec<PortTotal> = (0..count)
                    .map(|_| PortTotal {
                        transport: transports[next(6) as usize],
                        port: if next(2) == 0 {
                            next(1100) as u16
                        } else {
                            next(65536) as u16
                        },
                        side: [Side::Local, Side::Remote][next(2) as usize],
                        dir: [Direction::In, Direction::Out][next(2) as usize],
                        counts: PortCounts {
                            packets: next(3),
                            bytes: next(2) * 100,
                            ..PortCounts::default()
                        },
                    })
                    .collect();
                let w = Snapshot {
                    ports,
                    ..Snapshot::default()
                };
                let input = ClassifyInput {
                    spec,
                    inventory: None,
                    window: &w,
                    listeners: None,
                    connections: None,
                    ephemeral: PortRange::LINUX_DEFAULT,
                    node: &n,
                };
                let ctx = Ctx::new(&input);
                let totals = port_totals(&input);
                for r in &ctx.rules {
                    assert_eq!(
                        totals_show_traffic(r, &totals),
                        shows_by_scan(r, &totals),
                        "{} entry {} round {round}",
                        spec.name,
                        r.e.id
                    );
                    for (_, range) in r.e.ports.iter_ranges() {
                        let scan = totals.v.iter().any(|&((t, port, side), c)| {
                            !c.is_zero()
                                && r.admits(t)
                                && t.has_ports()
                                && range.contains(port)
                                && match side {
                                    Side::Local => r.allows(Role::Server),
                                    Side::Remote => r.allows(Role::Client),
                                }
                        });
                        assert_eq!(
                            totals_show_traffic_on(r, &totals, range),
                            scan,
                            "{} entry {} range {range} round {round}",
                            spec.name,
                            r.e.id
                        );
                    }
                }
            }
        }
    }

    /// Unknown-direction groups with bytes that tie and differ, one or several ports, and
    /// peers shared between groups; the same every call.
    fn unknown_groups(n: usize, flat: &[PeerStat]) -> Vec<UnknownGroup<'_>> {
        (0..n)
            .map(|i| {
                let mut g = Group {
                    traffic: Traffic {
                        flows: 1 + (i % 3) as u64,
                        packets_in: 1,
                        bytes_in: [64, 64, 128, 1500, 64][i % 5] * (1 + u64::from(i % 7 == 0)),
                        first_seen: 10 + i as u64,
                        last_seen: 20 + i as u64,
                        ..Traffic::default()
                    },
                    ..Group::default()
                };
                g.ports.insert(7000 + (i % 4) as u16);
                if i % 11 == 0 {
                    g.ports.insert(9000);
                }
                // Group i's peers: (i % 9) * 3 .. + 1 + i % 3 of the flat list.
                let at = (i % 9) * 3;
                let peers = &flat[at..at + 1 + i % 3];
                UnknownGroup {
                    transport: [Transport::Udp, Transport::Tcp][i % 2],
                    remote: i as u16,
                    reason: UnknownReason::AmbiguousPorts,
                    g,
                    peers_total: peers.len() as u64,
                    peers,
                }
            })
            .collect()
    }

    /// How the capped list was made before only the listed groups were built: every finding
    /// built, sorted (stable) by bytes then the report's key, the rest summed.
    fn cap_by_sorting(mut v: Vec<Finding>) -> Vec<Finding> {
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

    #[test]
    fn only_the_listed_unknown_groups_are_built_and_the_list_is_unchanged() {
        let spec = crate::classify::tests::spec();
        let w = Snapshot::default();
        let n = NodeInfo::default();
        let input = ClassifyInput {
            spec: &spec,
            inventory: None,
            window: &w,
            listeners: None,
            connections: None,
            ephemeral: PortRange::LINUX_DEFAULT,
            node: &n,
        };
        let ctx = Ctx::new(&input);
        let by_idx: BTreeMap<usize, &Rule> = ctx.rules.iter().map(|r| (r.idx, r)).collect();
        let totals = port_totals(&input);
        for count in [0, 1, MAX_UNKNOWN_GROUPS, MAX_UNKNOWN_GROUPS + 1, 3000] {
            let flat: Vec<PeerStat> = (0..27)
                .map(|k| PeerStat {
                    addr: IpAddr::from([10, 1, (k / 3) as u8, (k % 3) as u8]),
                    flows: 1,
                    packets: 1,
                    bytes: 64,
                })
                .collect();
            let all: Vec<Finding> = unknown_groups(count, &flat)
                .into_iter()
                .map(|u| u.finding(&by_idx, &totals))
                .collect();
            assert_eq!(
                unknown_findings(unknown_groups(count, &flat), &by_idx, &totals),
                cap_by_sorting(all),
                "{count} groups"
            );
        }
    }

    #[test]
    fn group_ports_are_a_sorted_set() {
        let mut p = GroupPorts::default();
        assert_eq!((p.iter().count(), p.single()), (0, None));
        for x in [443, 443] {
            p.insert(x);
        }
        assert_eq!(
            (p.iter().collect::<Vec<_>>(), p.single()),
            (vec![443], Some(443))
        );
        for x in [80, 8443, 80, 443] {
            p.insert(x);
        }
        assert_eq!(p.iter().collect::<Vec<_>>(), vec![80, 443, 8443]);
        assert_eq!(p.single(), None);
    }
}
