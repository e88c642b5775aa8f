//! Flows grouped into would-be findings: the group keys, what a group accumulates, and the
//! peers aggregated once at the end by sorting.
use super::*;

/// Entry-bound traffic findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum EntryKind {
    Documented,
    PeerOutsideZone,
    WrongDirection,
    WrongTransport,
    /// Documented outbound traffic from a process the entry does not name (the flows are
    /// counted as documented too).
    ProcessMismatch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum GroupKey {
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
pub(super) enum GroupPorts {
    #[default]
    None,
    One(u16),
    Many(BTreeSet<u16>),
}

impl GroupPorts {
    pub(super) fn insert(&mut self, p: u16) {
        match self {
            Self::None => *self = Self::One(p),
            Self::One(q) if *q == p => {}
            Self::One(q) => *self = Self::Many(BTreeSet::from([*q, p])),
            Self::Many(set) => {
                set.insert(p);
            }
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        let (one, many) = match self {
            Self::None => (None, None),
            Self::One(p) => (Some(*p), None),
            Self::Many(set) => (None, Some(set.iter().copied())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// The port, when there is exactly one.
    pub(super) fn single(&self) -> Option<u16> {
        match self {
            Self::One(p) => Some(*p),
            Self::Many(set) if set.len() == 1 => set.first().copied(),
            _ => None,
        }
    }
}

#[derive(Default)]
pub(super) struct Group {
    pub(super) traffic: Traffic,
    pub(super) ports: GroupPorts,
    pub(super) processes: BTreeSet<String>,
    pub(super) candidates: BTreeSet<usize>,
}

/// One flow's contribution to a group's peers. Peers are aggregated once at the end by
/// sorting these records (cache-friendly), not per flow in a hash map per group.
pub(super) struct PeerRec {
    pub(super) group: u32,
    pub(super) addr: IpAddr,
    pub(super) packets: u64,
    pub(super) bytes: u64,
}

/// The groups with their peers worked out ([`Groups::finish`]). The groups stay where they
/// were built and the per-group results sit in vectors of their own, by group id: no group is
/// copied (a flood of distinct port pairs makes a group per flow, and a copy of all of them
/// was the largest allocation of a classification).
pub(super) struct Finished {
    /// The groups by id (as [`Groups::add_flow`] numbered them).
    pub(super) groups: Vec<(GroupKey, Group)>,
    /// Per group id: where its top peers (by bytes, then address) are in `peers`, and its
    /// number of distinct peers.
    pub(super) top: Vec<(std::ops::Range<usize>, u64)>,
    /// Only for the groups that have any, by ascending id: the peers outside the entry's zones
    /// (sorted, at most [`MAX_OUTSIDE`]) and how many there were.
    pub(super) outside: Vec<(u32, Vec<IpAddr>, u64)>,
    /// Every group's top peers, one list.
    pub(super) peers: Vec<PeerStat>,
}

impl Finished {
    /// Group ids in key order.
    pub(super) fn ids_by_key(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = (0..self.groups.len() as u32).collect();
        ids.sort_unstable_by_key(|&id| self.groups[id as usize].0);
        ids
    }

    /// The peers outside zones of group `id` and how many there were (taken: asked once).
    pub(super) fn take_outside(&mut self, id: u32) -> (Vec<IpAddr>, u64) {
        match self.outside.binary_search_by_key(&id, |o| o.0) {
            Ok(i) => (std::mem::take(&mut self.outside[i].1), self.outside[i].2),
            Err(_) => (Vec::new(), 0),
        }
    }
}

/// The groups findings are built from, plus the per-flow peer log.
#[derive(Default)]
pub(super) struct Groups {
    pub(super) index: HashMap<GroupKey, u32, Hasher>,
    pub(super) groups: Vec<(GroupKey, Group)>,
    pub(super) peers: Vec<PeerRec>,
    /// (group, peer) for peers outside the entry's zones.
    pub(super) outside: Vec<(u32, IpAddr)>,
}

impl Groups {
    /// Adds a flow to the entry-bound group (`kind`, `rule`, the flow's transport, `role`),
    /// with the processes behind it, and returns the group's id.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_entry_flow(
        &mut self,
        kind: EntryKind,
        rule: usize,
        role: Role,
        f: &FlowRecord,
        peer: IpAddr,
        port: Option<u16>,
        processes: &[String],
    ) -> u32 {
        let key = GroupKey::Entry {
            kind,
            rule,
            transport: f.key.transport,
            role,
        };
        let (id, g) = self.add_flow(key, f, peer, port);
        g.processes.extend(processes.iter().cloned());
        id
    }

    /// Adds a flow to the group `key` (created if new) and returns the group and its id.
    pub(super) fn add_flow(
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
    /// flow: no vector per group). The index and the per-flow peer log are freed as soon as
    /// they are done with.
    pub(super) fn finish(self) -> Finished {
        let Groups {
            index,
            groups,
            mut peers,
            outside,
        } = self;
        drop(index);
        peers.sort_unstable_by_key(|p| (p.group, p.addr));
        let n = groups.len();
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
        drop(peers);
        let mut outside = outside;
        outside.sort_unstable();
        outside.dedup();
        let mut sparse: Vec<(u32, Vec<IpAddr>, u64)> = Vec::new();
        for (g, a) in outside {
            match sparse.last_mut() {
                Some(o) if o.0 == g => {
                    o.2 += 1;
                    if o.1.len() < MAX_OUTSIDE {
                        o.1.push(a);
                    }
                }
                _ => sparse.push((g, vec![a], 1)),
            }
        }
        Finished {
            groups,
            top,
            outside: sparse,
            peers: flat,
        }
    }
}
