//! An observation window: snapshots of consecutive intervals merged into one, with the same
//! memory bound as the flow table (flows past the bound are counted, never silently lost).
use std::collections::HashMap;

use super::key::{Direction, FlowKey, FlowRecord, FlowStats, PortCounts, Side, Transport};
use super::table::{Health, Snapshot};
use crate::clock::UnixNanos;

/// Snapshots merged over a window (e.g. since the agent started).
#[derive(Debug)]
pub struct Window {
    capacity: usize,
    start: Option<UnixNanos>,
    end: UnixNanos,
    flows: HashMap<FlowKey, (FlowStats, bool)>,
    ports: HashMap<(Transport, u16, Side, Direction), PortCounts>,
    health: Health,
    intervals: u64,
}

impl Window {
    /// An empty window holding at most `capacity` distinct flows.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            start: None,
            end: 0,
            flows: HashMap::new(),
            ports: HashMap::new(),
            health: Health::default(),
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
        self.start = Some(self.start.map_or(s.start, |t| t.min(s.start)));
        self.end = self.end.max(s.end);
        self.health.add(&s.health);
        for p in &s.ports {
            self.ports
                .entry((p.transport, p.port, p.side, p.dir))
                .or_default()
                .add(&p.counts);
        }
        for f in &s.flows {
            let full = self.flows.len() >= self.capacity;
            match self.flows.get_mut(&f.key) {
                Some((st, known)) => {
                    st.merge(&f.stats);
                    *known |= f.vantage_known;
                }
                None if full => self.health.flow_table_full += 1,
                None => {
                    self.flows.insert(f.key, (f.stats, f.vantage_known));
                }
            }
        }
    }

    /// The window as one snapshot (sorted, deterministic).
    pub fn snapshot(&self) -> Snapshot {
        let mut flows: Vec<FlowRecord> = self
            .flows
            .iter()
            .map(|(k, (s, v))| FlowRecord {
                key: *k,
                stats: *s,
                vantage_known: *v,
            })
            .collect();
        flows.sort_by_key(|f| f.key);
        let mut ports: Vec<_> = self
            .ports
            .iter()
            .map(|(&(transport, port, side, dir), c)| super::key::PortTotal {
                transport,
                port,
                side,
                dir,
                counts: *c,
            })
            .collect();
        ports.sort_by_key(|p| (p.transport, p.port, p.side, p.dir));
        Snapshot {
            start: self.start.unwrap_or(self.end),
            end: self.end,
            flows,
            ports,
            health: self.health,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Endpoint;
    use crate::flow::table::{FlowTable, PacketMeta};
    use std::net::{IpAddr, Ipv6Addr};

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
}
