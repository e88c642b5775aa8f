//! An observation window: snapshots of consecutive intervals merged into one, with the same
//! memory bound as the flow table (flows past the bound are counted, never silently lost).
//! Held as one sorted snapshot that intervals are merged into (a merge join, no hash tables,
//! no copy to hand it out).
use std::borrow::Cow;
use std::cmp::Ordering;

use super::key::PortTotal;
use super::table::Snapshot;
use crate::clock::UnixNanos;

/// Snapshots merged over a window (e.g. since the agent started).
#[derive(Debug)]
pub struct Window {
    capacity: usize,
    start: Option<UnixNanos>,
    /// Flows sorted by key, ports by (transport, port, side, direction).
    merged: Snapshot,
    intervals: u64,
}

fn port_key(p: &PortTotal) -> impl Ord + use<> {
    (p.transport, p.port, p.side, p.dir)
}

/// `v` sorted by `key` (borrowed when it already is).
fn sorted<T: Clone, K: Ord>(v: &[T], key: impl Fn(&T) -> K) -> Cow<'_, [T]> {
    if v.is_sorted_by_key(&key) {
        Cow::Borrowed(v)
    } else {
        let mut owned = v.to_vec();
        owned.sort_by_key(key);
        Cow::Owned(owned)
    }
}

/// Merges the sorted `src` into the sorted `dst`: equal keys are combined with `merge`, keys
/// `dst` lacks are added while `admit` allows (else `refused` is called). Updates in place
/// when nothing is added; otherwise builds the merged vector once.
fn merge_into<T: Clone, K: Ord>(
    dst: &mut Vec<T>,
    src: &[T],
    key: impl Fn(&T) -> K,
    merge: impl Fn(&mut T, &T),
    mut admit: impl FnMut(usize) -> bool,
    mut refused: impl FnMut(),
) {
    let mut added: Vec<T> = Vec::new();
    let mut i = 0;
    for x in src {
        let k = key(x);
        while i < dst.len() && key(&dst[i]) < k {
            i += 1;
        }
        if i < dst.len() && key(&dst[i]) == k {
            merge(&mut dst[i], x);
        } else if let Some(last) = added.last_mut().filter(|l| key(l) == k) {
            merge(last, x);
        } else if admit(dst.len() + added.len()) {
            added.push(x.clone());
        } else {
            refused();
        }
    }
    if added.is_empty() {
        return;
    }
    let old = std::mem::take(dst);
    let mut out = Vec::with_capacity(old.len() + added.len());
    let mut new = added.into_iter().peekable();
    for x in old {
        while let Some(n) = new.next_if(|n| key(n).cmp(&key(&x)) == Ordering::Less) {
            out.push(n);
        }
        out.push(x);
    }
    out.extend(new);
    *dst = out;
}

impl Window {
    /// An empty window holding at most `capacity` distinct flows.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            start: None,
            merged: Snapshot::default(),
            intervals: 0,
        }
    }

    /// Number of intervals merged so far.
    pub fn intervals(&self) -> u64 {
        self.intervals
    }

    /// Adds one interval.
    pub fn add(&mut self, s: &Snapshot) {
        self.intervals += 1;
        let m = &mut self.merged;
        self.start = Some(self.start.map_or(s.start, |t| t.min(s.start)));
        m.end = m.end.max(s.end);
        m.start = self.start.unwrap_or(m.end);
        m.health.add(&s.health);
        merge_into(
            &mut m.ports,
            &sorted(&s.ports, port_key),
            port_key,
            |a, b| a.counts.add(&b.counts),
            |_| true,
            || {},
        );
        let capacity = self.capacity;
        let mut full = 0u64;
        merge_into(
            &mut m.flows,
            &sorted(&s.flows, |f| f.key),
            |f| f.key,
            |a, b| {
                a.stats.merge(&b.stats);
                a.vantage_known |= b.vantage_known;
            },
            |len| len < capacity,
            || full += 1,
        );
        m.health.flow_table_full += full;
    }

    /// The window as one snapshot (sorted, deterministic), borrowed.
    pub fn view(&self) -> &Snapshot {
        &self.merged
    }

    /// The window as one snapshot (sorted, deterministic).
    pub fn snapshot(&self) -> Snapshot {
        self.merged.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::table::{FlowTable, PacketMeta};
    use crate::flow::{
        Counts, Direction, Endpoint, FlowKey, FlowRecord, FlowStats, Health, PortCounts, Side,
        Transport,
    };
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn pkt(sport: u16, ts: u64) -> PacketMeta {
        let a = |n| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, n));
        PacketMeta {
            ts,
            transport: Transport::Udp,
            src: Endpoint {
                addr: a(2),
                port: sport,
            },
            dst: Endpoint {
                addr: a(1),
                port: 123,
            },
            dir: Some(Direction::In),
            wire_len: 90,
            segments: 1,
            tcp_flags: 0,
        }
    }

    #[test]
    fn merging_intervals_sums_totals_and_keeps_first_and_last_seen() {
        let mut t = FlowTable::new(8, 0);
        let mut w = Window::new(2);
        t.ingest(&pkt(1000, 5));
        w.add(&t.drain(10));
        t.ingest(&pkt(1000, 15));
        t.ingest(&pkt(1001, 16));
        t.ingest(&pkt(1002, 17));
        w.add(&t.drain(20));
        let s = w.snapshot();
        assert_eq!((s.start, s.end), (0, 20));
        assert_eq!(s.flows.len(), 2, "capacity 2 holds two flows");
        assert_eq!(s.health.flow_table_full, 1, "the third flow is counted");
        let f = s.flows.iter().find(|f| f.key.remote.port == 1000).unwrap();
        assert_eq!((f.stats.first_seen, f.stats.last_seen), (5, 15));
        assert_eq!(f.stats.inbound.packets, 2);
        let total: u64 = s
            .ports
            .iter()
            .filter(|p| p.port == 123 && p.side == Side::Local)
            .map(|p| p.counts.packets)
            .sum();
        assert_eq!(total, 4, "port totals are exact past the flow bound");
        assert_eq!(w.intervals(), 2);
    }

    /// The window as it was before it became a sorted merge: hash maps filled in the order the
    /// snapshot lists its flows, sorted when handed out.
    #[derive(Default)]
    struct Reference {
        flows: HashMap<FlowKey, (FlowStats, bool)>,
        order: Vec<FlowKey>,
        ports: HashMap<(Transport, u16, Side, Direction), PortCounts>,
        full: u64,
    }

    impl Reference {
        fn add(&mut self, s: &Snapshot, capacity: usize) {
            for p in &s.ports {
                self.ports
                    .entry((p.transport, p.port, p.side, p.dir))
                    .or_default()
                    .add(&p.counts);
            }
            for f in &s.flows {
                let full = self.flows.len() >= capacity;
                match self.flows.get_mut(&f.key) {
                    Some((st, known)) => {
                        st.merge(&f.stats);
                        *known |= f.vantage_known;
                    }
                    None if full => self.full += 1,
                    None => {
                        self.flows.insert(f.key, (f.stats, f.vantage_known));
                        self.order.push(f.key);
                    }
                }
            }
        }
    }

    #[test]
    fn the_sorted_merge_equals_hash_map_merging() {
        let mut next = crate::flow::xorshift(0x2545_f491_4f6c_dd1du64);
        for capacity in [1usize, 7, 40, 1000] {
            let mut w = Window::new(capacity);
            let mut r = Reference::default();
            for interval in 0..6u64 {
                let mut flows = Vec::new();
                for _ in 0..next(60) {
                    let t = 10 * interval + next(10) + 1;
                    flows.push(FlowRecord {
                        key: FlowKey {
                            transport: [Transport::Tcp, Transport::Udp][next(2) as usize],
                            local: Endpoint {
                                addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                                port: 80,
                            },
                            remote: Endpoint {
                                addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, next(4) as u8 + 2)),
                                port: next(20) as u16,
                            },
                        },
                        stats: FlowStats {
                            inbound: Counts {
                                packets: next(5) + 1,
                                bytes: 100,
                            },
                            first_seen: t,
                            last_seen: t + next(3),
                            ..FlowStats::default()
                        },
                        vantage_known: next(2) == 0,
                    });
                }
                let ports: Vec<PortTotal> = (0..next(30))
                    .map(|_| PortTotal {
                        transport: Transport::Udp,
                        port: next(12) as u16,
                        side: [Side::Local, Side::Remote][next(2) as usize],
                        dir: [Direction::In, Direction::Out][next(2) as usize],
                        counts: PortCounts {
                            packets: next(9) + 1,
                            ..PortCounts::default()
                        },
                    })
                    .collect();
                // Sorted as backends hand them over (duplicates included); every other
                // interval in random order.
                let mut s = Snapshot {
                    start: 10 * interval,
                    end: 10 * interval + 10,
                    flows,
                    ports,
                    health: Health::default(),
                };
                if interval % 2 == 0 {
                    s.flows.sort_by_key(|f| f.key);
                    s.ports.sort_by_key(port_key);
                }
                let mut ordered = s.clone();
                ordered.flows.sort_by_key(|f| f.key);
                r.add(&ordered, capacity);
                w.add(&s);
                let v = w.view();
                let mut expect: Vec<FlowRecord> = r
                    .flows
                    .iter()
                    .map(|(k, (st, known))| FlowRecord {
                        key: *k,
                        stats: *st,
                        vantage_known: *known,
                    })
                    .collect();
                expect.sort_by_key(|f| f.key);
                assert_eq!(v.flows, expect, "capacity {capacity}, interval {interval}");
                let mut ports: Vec<PortTotal> = r
                    .ports
                    .iter()
                    .map(|(&(transport, port, side, dir), c)| PortTotal {
                        transport,
                        port,
                        side,
                        dir,
                        counts: *c,
                    })
                    .collect();
                ports.sort_by_key(port_key);
                assert_eq!(v.ports, ports);
                assert_eq!(v.health.flow_table_full, r.full);
                assert_eq!((v.start, v.end), (0, 10 * interval + 10));
                assert_eq!(w.snapshot(), *v);
            }
        }
    }
}
