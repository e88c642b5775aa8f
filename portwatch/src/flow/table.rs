//! The bounded userspace flow table: plain data with `ingest` and `drain`, no I/O. It keeps
//! lossless per-port totals and at most `capacity` flows, and counts every flow it had to drop.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::key::{
    Counts, Direction, Endpoint, FlowKey, FlowRecord, FlowStats, PortCounts, PortTotal, Side,
    TcpFlags, Transport,
};
use crate::clock::UnixNanos;

/// One decoded packet, as a backend hands it to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    pub ts: UnixNanos,
    pub transport: Transport,
    pub src: Endpoint,
    pub dst: Endpoint,
    /// Direction relative to the node, when the backend knows it; `None` for a capture taken
    /// elsewhere (the destination of a flow's first packet is then treated as local).
    pub dir: Option<Direction>,
    /// Length on the wire (not the captured length).
    pub wire_len: u32,
    /// Wire-equivalent segments (1 unless the backend saw a GSO super-packet).
    pub segments: u32,
    /// TCP flag byte (0 for other transports).
    pub tcp_flags: u8,
}

/// Health and loss counters for one interval. Every loss anywhere in the pipeline ends here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Flows not recorded because the flow table was full (totals still exact).
    pub flow_table_full: u64,
    /// Other flow-map update failures (e.g. EBUSY) in the kernel.
    pub flow_update_errors: u64,
    /// Port-total keys that could not be inserted (the totals map was full).
    pub port_table_full: u64,
    /// Frames that could not be parsed (bad header fields).
    pub malformed: u64,
    /// Frames shorter than their headers claim (or cut by snaplen inside a header).
    pub truncated: u64,
    /// Frames that were not IP (ARP, LLDP, ...), counted but not classified.
    pub non_ip: u64,
    /// Packets the capture layer dropped (libpcap ps_drop + ps_ifdrop).
    pub capture_drops: u64,
    /// Packets seen by the backend in the interval.
    pub packets_seen: u64,
}

impl Health {
    /// Adds `o` to `self`.
    pub fn add(&mut self, o: &Health) {
        self.flow_table_full += o.flow_table_full;
        self.flow_update_errors += o.flow_update_errors;
        self.port_table_full += o.port_table_full;
        self.malformed += o.malformed;
        self.truncated += o.truncated;
        self.non_ip += o.non_ip;
        self.capture_drops += o.capture_drops;
        self.packets_seen += o.packets_seen;
    }
    /// Whether flow detail for the interval is incomplete (distinct-flow counts approximate).
    pub fn flows_approximate(&self) -> bool {
        self.flow_table_full > 0 || self.flow_update_errors > 0 || self.capture_drops > 0
    }
}

/// Everything a backend observed in one interval: the typed input of classification.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Interval start and end (Unix nanoseconds).
    pub start: UnixNanos,
    pub end: UnixNanos,
    pub flows: Vec<FlowRecord>,
    pub ports: Vec<PortTotal>,
    pub health: Health,
}

type PortKey = (Transport, u16, Side, Direction);

/// foldhash with a per-table random seed: the std SipHash made the table most of the cost of
/// reading a capture file (3 lookups per packet); foldhash is several times faster and the
/// random seed keeps crafted traffic from choosing colliding keys in advance.
type Hasher = foldhash::fast::RandomState;

/// The userspace flow table used by the pcap backends (the eBPF backend keeps its table in
/// the kernel and builds [`Snapshot`]s from the maps).
#[derive(Debug)]
pub struct FlowTable {
    capacity: usize,
    flows: HashMap<FlowKey, (FlowStats, bool), Hasher>,
    ports: HashMap<PortKey, PortCounts, Hasher>,
    health: Health,
    start: UnixNanos,
}

impl FlowTable {
    /// A table that holds at most `capacity` flows per interval.
    pub fn new(capacity: usize, start: UnixNanos) -> Self {
        Self {
            capacity,
            flows: HashMap::with_capacity_and_hasher(capacity.min(1 << 16), Hasher::default()),
            ports: HashMap::default(),
            health: Health::default(),
            start,
        }
    }

    /// Counts a frame that did not become a [`PacketMeta`].
    pub fn health_mut(&mut self) -> &mut Health {
        &mut self.health
    }

    /// Number of flows held now.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether the table holds no flows.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Adds one packet.
    pub fn ingest(&mut self, p: &PacketMeta) {
        self.health.packets_seen += 1;
        let (key, dir, known) = self.orient(p);
        // Per-port totals first: they are exact whatever happens to flow detail.
        let syn = p.transport == Transport::Tcp
            && p.tcp_flags & TcpFlags::SYN != 0
            && p.tcp_flags & TcpFlags::ACK == 0;
        let synack = p.transport == Transport::Tcp
            && TcpFlags(p.tcp_flags).has(TcpFlags::SYN | TcpFlags::ACK);
        let fin = p.transport == Transport::Tcp && p.tcp_flags & TcpFlags::FIN != 0;
        let rst = p.transport == Transport::Tcp && p.tcp_flags & TcpFlags::RST != 0;
        let pc = PortCounts {
            packets: 1,
            segments: u64::from(p.segments.max(1)),
            bytes: u64::from(p.wire_len),
            syn: u64::from(syn),
            synack: u64::from(synack),
            fin: u64::from(fin),
            rst: u64::from(rst),
        };
        for (side, port) in [
            (Side::Local, key.local.port),
            (Side::Remote, key.remote.port),
        ] {
            self.ports
                .entry((p.transport, port, side, dir))
                .or_default()
                .add(&pc);
        }

        let full = self.flows.len() >= self.capacity;
        let entry = match self.flows.get_mut(&key) {
            Some(e) => e,
            None if full => {
                self.health.flow_table_full += 1;
                return;
            }
            None => self.flows.entry(key).or_insert((
                FlowStats {
                    first_seen: p.ts,
                    ..FlowStats::default()
                },
                known,
            )),
        };
        let st = &mut entry.0;
        let c = Counts {
            packets: 1,
            bytes: u64::from(p.wire_len),
        };
        match dir {
            Direction::In => {
                st.inbound.add(c);
                st.flags_in.0 |= p.tcp_flags;
                st.syn_in += u32::from(syn);
            }
            Direction::Out => {
                st.outbound.add(c);
                st.flags_out.0 |= p.tcp_flags;
                st.syn_out += u32::from(syn);
            }
        }
        st.first_seen = st.first_seen.min(p.ts);
        st.last_seen = st.last_seen.max(p.ts);
    }

    /// Works out the flow key and the packet's direction relative to the local end.
    fn orient(&self, p: &PacketMeta) -> (FlowKey, Direction, bool) {
        let as_in = FlowKey {
            transport: p.transport,
            local: p.dst,
            remote: p.src,
        };
        let as_out = FlowKey {
            transport: p.transport,
            local: p.src,
            remote: p.dst,
        };
        match p.dir {
            Some(Direction::In) => (as_in, Direction::In, true),
            Some(Direction::Out) => (as_out, Direction::Out, true),
            None if self.flows.contains_key(&as_out) => (as_out, Direction::Out, false),
            None => (as_in, Direction::In, false),
        }
    }

    /// Ends the interval at `end`: returns everything seen since the last drain and starts a
    /// new, empty interval.
    pub fn drain(&mut self, end: UnixNanos) -> Snapshot {
        let mut flows: Vec<FlowRecord> = self
            .flows
            .drain()
            .map(|(key, (stats, vantage_known))| FlowRecord {
                key,
                stats,
                vantage_known,
            })
            .collect();
        flows.sort_by_key(|f| f.key);
        let mut ports: Vec<PortTotal> = self
            .ports
            .drain()
            .map(|((transport, port, side, dir), counts)| PortTotal {
                transport,
                port,
                side,
                dir,
                counts,
            })
            .collect();
        ports.sort_by_key(|p| (p.transport, p.port, p.side, p.dir));
        let snap = Snapshot {
            start: self.start,
            end,
            flows,
            ports,
            health: std::mem::take(&mut self.health),
        };
        self.start = end;
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn ep(last: u8, port: u16) -> Endpoint {
        Endpoint {
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
            port,
        }
    }

    fn udp(src: Endpoint, dst: Endpoint, dir: Option<Direction>) -> PacketMeta {
        PacketMeta {
            ts: 5,
            transport: Transport::Udp,
            src,
            dst,
            dir,
            wire_len: 100,
            segments: 1,
            tcp_flags: 0,
        }
    }

    #[test]
    fn overflow_keeps_port_totals_exact_and_counts_drops() {
        let mut t = FlowTable::new(2, 0);
        for sport in 0..10u16 {
            t.ingest(&udp(ep(2, 40000 + sport), ep(1, 53), Some(Direction::In)));
        }
        let s = t.drain(10);
        assert_eq!(s.flows.len(), 2);
        assert_eq!(s.health.flow_table_full, 8);
        assert!(s.health.flows_approximate());
        let local53: u64 = s
            .ports
            .iter()
            .filter(|p| p.port == 53 && p.side == Side::Local)
            .map(|p| p.counts.packets)
            .sum();
        assert_eq!(local53, 10);
    }

    #[test]
    fn unknown_vantage_orients_replies_onto_the_first_packets_flow() {
        let mut t = FlowTable::new(16, 0);
        t.ingest(&udp(ep(2, 40000), ep(1, 53), None));
        t.ingest(&udp(ep(1, 53), ep(2, 40000), None));
        let s = t.drain(10);
        assert_eq!(s.flows.len(), 1);
        let f = &s.flows[0];
        assert_eq!(f.key.local.port, 53);
        assert_eq!(f.stats.inbound.packets, 1);
        assert_eq!(f.stats.outbound.packets, 1);
        assert!(!f.vantage_known);
    }

    #[test]
    fn drain_starts_a_new_interval() {
        let mut t = FlowTable::new(16, 0);
        t.ingest(&udp(ep(2, 1), ep(1, 2), Some(Direction::In)));
        let a = t.drain(10);
        let b = t.drain(20);
        assert_eq!((a.start, a.end, b.start, b.end), (0, 10, 10, 20));
        assert!(b.flows.is_empty() && b.ports.is_empty());
        assert_eq!(a.health.packets_seen, 1);
    }
}
