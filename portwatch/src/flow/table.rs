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
/// reading a capture file; foldhash is several times faster and the random seed keeps crafted
/// traffic from choosing colliding keys in advance.
type Hasher = foldhash::fast::RandomState;

/// A flow key packed into integers: hashing and comparing it is a few word operations, where
/// the derived `Hash`/`Eq` of [`FlowKey`] walk two `IpAddr` enums field by field (that made the
/// table the bottleneck of offline analysis).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PackedKey {
    local: u128,
    remote: u128,
    /// local port << 16 | remote port.
    ports: u32,
    /// IP protocol | local is IPv6 << 8 | remote is IPv6 << 9.
    meta: u16,
}

impl std::hash::Hash for PackedKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let fold = |a: u128| (a as u64) ^ ((a >> 64) as u64).rotate_left(29);
        h.write_u64(fold(self.local));
        h.write_u64(fold(self.remote));
        h.write_u64((u64::from(self.ports) << 16) | u64::from(self.meta));
    }
}

#[inline]
fn addr_bits(a: &std::net::IpAddr) -> (u128, u16) {
    match a {
        std::net::IpAddr::V4(v4) => (u128::from(u32::from(*v4)), 0),
        std::net::IpAddr::V6(v6) => (u128::from(*v6), 1),
    }
}

#[inline]
fn pack(transport: Transport, local: &Endpoint, remote: &Endpoint) -> PackedKey {
    let (l, l6) = addr_bits(&local.addr);
    let (r, r6) = addr_bits(&remote.addr);
    PackedKey {
        local: l,
        remote: r,
        ports: (u32::from(local.port) << 16) | u32::from(remote.port),
        meta: u16::from(transport.proto()) | (l6 << 8) | (r6 << 9),
    }
}

impl PackedKey {
    /// The flow key this was packed from.
    fn unpack(&self) -> FlowKey {
        let addr = |bits: u128, v6: bool| {
            if v6 {
                std::net::IpAddr::V6(std::net::Ipv6Addr::from(bits))
            } else {
                std::net::IpAddr::V4(std::net::Ipv4Addr::from(bits as u32))
            }
        };
        FlowKey {
            transport: Transport::from_proto(self.meta as u8),
            local: Endpoint {
                addr: addr(self.local, self.meta & (1 << 8) != 0),
                port: (self.ports >> 16) as u16,
            },
            remote: Endpoint {
                addr: addr(self.remote, self.meta & (1 << 9) != 0),
                port: self.ports as u16,
            },
        }
    }
}

/// Per-direction counters of a held flow that [`FlowStats`] does not keep; with its
/// packets and bytes they make the flow's share of the per-port totals, added at drain.
/// (u32, saturating: kept small so more flows fit in the CPU caches.)
#[derive(Clone, Copy, Debug, Default)]
struct Extra {
    segments: u32,
    syn: u32,
    synack: u32,
    fin: u32,
    rst: u32,
}

/// A held flow.
#[derive(Clone, Copy, Debug)]
struct Slot {
    stats: FlowStats,
    known: bool,
    /// Indexed by direction: 0 inbound, 1 outbound.
    extra: [Extra; 2],
}

/// The userspace flow table used by the pcap backends (the eBPF backend keeps its table in
/// the kernel and builds [`Snapshot`]s from the maps).
///
/// Per-port totals of packets whose flow is held are kept in the flow's slot and added to
/// the totals at [`drain`](Self::drain) (one hash lookup per packet instead of three); packets
/// of flows the table had no room for go to the totals directly, so totals stay exact.
#[derive(Debug)]
pub struct FlowTable {
    capacity: usize,
    flows: HashMap<PackedKey, Slot, Hasher>,
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
    #[inline]
    pub fn ingest(&mut self, p: &PacketMeta) {
        self.health.packets_seen += 1;
        let tcp = p.transport == Transport::Tcp;
        let f = p.tcp_flags;
        let syn = tcp && f & TcpFlags::SYN != 0 && f & TcpFlags::ACK == 0;
        let x = Extra {
            segments: p.segments.max(1),
            syn: u32::from(syn),
            synack: u32::from(tcp && TcpFlags(f).has(TcpFlags::SYN | TcpFlags::ACK)),
            fin: u32::from(tcp && f & TcpFlags::FIN != 0),
            rst: u32::from(tcp && f & TcpFlags::RST != 0),
        };
        let (key, packed, dir, known) = match p.dir {
            Some(Direction::In) => (
                self::as_in(p),
                pack(p.transport, &p.dst, &p.src),
                Direction::In,
                true,
            ),
            Some(Direction::Out) => (
                self::as_out(p),
                pack(p.transport, &p.src, &p.dst),
                Direction::Out,
                true,
            ),
            None => {
                let out = pack(p.transport, &p.src, &p.dst);
                if let Some(slot) = self.flows.get_mut(&out) {
                    update(slot, p, Direction::Out, &x);
                    return;
                }
                (
                    self::as_in(p),
                    pack(p.transport, &p.dst, &p.src),
                    Direction::In,
                    false,
                )
            }
        };
        let full = self.flows.len() >= self.capacity;
        match self.flows.entry(packed) {
            std::collections::hash_map::Entry::Occupied(mut o) => update(o.get_mut(), p, dir, &x),
            std::collections::hash_map::Entry::Vacant(v) => {
                if full {
                    self.health.flow_table_full += 1;
                    let pc = port_counts(1, u64::from(p.wire_len), &x);
                    for (side, port) in [
                        (Side::Local, key.local.port),
                        (Side::Remote, key.remote.port),
                    ] {
                        self.ports
                            .entry((p.transport, port, side, dir))
                            .or_default()
                            .add(&pc);
                    }
                    return;
                }
                let slot = v.insert(Slot {
                    stats: FlowStats {
                        first_seen: p.ts,
                        ..FlowStats::default()
                    },
                    known,
                    extra: [Extra::default(); 2],
                });
                update(slot, p, dir, &x);
            }
        }
    }

    /// Ends the interval at `end`: returns everything seen since the last drain and starts a
    /// new, empty interval.
    pub fn drain(&mut self, end: UnixNanos) -> Snapshot {
        let mut flows: Vec<FlowRecord> = Vec::with_capacity(self.flows.len());
        for (packed, slot) in self.flows.drain() {
            let key = packed.unpack();
            let st = &slot.stats;
            for (dir, counts, x) in [
                (Direction::In, st.inbound, &slot.extra[0]),
                (Direction::Out, st.outbound, &slot.extra[1]),
            ] {
                if counts.packets == 0 {
                    continue;
                }
                let pc = port_counts(counts.packets, counts.bytes, x);
                let t = key.transport;
                for (side, port) in [
                    (Side::Local, key.local.port),
                    (Side::Remote, key.remote.port),
                ] {
                    self.ports.entry((t, port, side, dir)).or_default().add(&pc);
                }
            }
            flows.push(FlowRecord {
                key,
                stats: slot.stats,
                vantage_known: slot.known,
            });
        }
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

#[inline]
fn as_in(p: &PacketMeta) -> FlowKey {
    FlowKey {
        transport: p.transport,
        local: p.dst,
        remote: p.src,
    }
}

#[inline]
fn as_out(p: &PacketMeta) -> FlowKey {
    FlowKey {
        transport: p.transport,
        local: p.src,
        remote: p.dst,
    }
}

#[inline]
fn port_counts(packets: u64, bytes: u64, x: &Extra) -> PortCounts {
    PortCounts {
        packets,
        segments: u64::from(x.segments),
        bytes,
        syn: u64::from(x.syn),
        synack: u64::from(x.synack),
        fin: u64::from(x.fin),
        rst: u64::from(x.rst),
    }
}

#[inline]
fn update(slot: &mut Slot, p: &PacketMeta, dir: Direction, x: &Extra) {
    let st = &mut slot.stats;
    let c = Counts {
        packets: 1,
        bytes: u64::from(p.wire_len),
    };
    let (i, counts, flags, syns) = match dir {
        Direction::In => (0, &mut st.inbound, &mut st.flags_in, &mut st.syn_in),
        Direction::Out => (1, &mut st.outbound, &mut st.flags_out, &mut st.syn_out),
    };
    counts.add(c);
    flags.0 |= p.tcp_flags;
    *syns = syns.saturating_add(x.syn);
    if let Some(e) = slot.extra.get_mut(i) {
        e.segments = e.segments.saturating_add(x.segments);
        e.syn = e.syn.saturating_add(x.syn);
        e.synack = e.synack.saturating_add(x.synack);
        e.fin = e.fin.saturating_add(x.fin);
        e.rst = e.rst.saturating_add(x.rst);
    }
    st.first_seen = st.first_seen.min(p.ts);
    st.last_seen = st.last_seen.max(p.ts);
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

    /// The table's documented semantics, written the obvious way (every packet straight into
    /// the per-port totals, flows keyed by `FlowKey`): the packed, deferred table must agree.
    fn reference(capacity: usize, packets: &[PacketMeta], end: UnixNanos) -> Snapshot {
        use std::collections::BTreeMap;
        let mut flows: BTreeMap<FlowKey, (FlowStats, bool)> = BTreeMap::new();
        let mut ports: BTreeMap<PortKey, PortCounts> = BTreeMap::new();
        let mut health = Health::default();
        for p in packets {
            health.packets_seen += 1;
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
            let (key, dir, known) = match p.dir {
                Some(Direction::In) => (as_in, Direction::In, true),
                Some(Direction::Out) => (as_out, Direction::Out, true),
                None if flows.contains_key(&as_out) => (as_out, Direction::Out, false),
                None => (as_in, Direction::In, false),
            };
            let tcp = p.transport == Transport::Tcp;
            let f = p.tcp_flags;
            let syn = tcp && f & 0x02 != 0 && f & 0x10 == 0;
            let pc = PortCounts {
                packets: 1,
                segments: u64::from(p.segments.max(1)),
                bytes: u64::from(p.wire_len),
                syn: u64::from(syn),
                synack: u64::from(tcp && f & 0x12 == 0x12),
                fin: u64::from(tcp && f & 0x01 != 0),
                rst: u64::from(tcp && f & 0x04 != 0),
            };
            for (side, port) in [
                (Side::Local, key.local.port),
                (Side::Remote, key.remote.port),
            ] {
                ports
                    .entry((p.transport, port, side, dir))
                    .or_default()
                    .add(&pc);
            }
            if !flows.contains_key(&key) && flows.len() >= capacity {
                health.flow_table_full += 1;
                continue;
            }
            let e = flows.entry(key).or_insert((
                FlowStats {
                    first_seen: p.ts,
                    ..FlowStats::default()
                },
                known,
            ));
            let c = Counts {
                packets: 1,
                bytes: u64::from(p.wire_len),
            };
            match dir {
                Direction::In => {
                    e.0.inbound.add(c);
                    e.0.flags_in.0 |= f;
                    e.0.syn_in += u32::from(syn);
                }
                Direction::Out => {
                    e.0.outbound.add(c);
                    e.0.flags_out.0 |= f;
                    e.0.syn_out += u32::from(syn);
                }
            }
            e.0.first_seen = e.0.first_seen.min(p.ts);
            e.0.last_seen = e.0.last_seen.max(p.ts);
        }
        Snapshot {
            start: 0,
            end,
            flows: flows
                .into_iter()
                .map(|(key, (stats, vantage_known))| FlowRecord {
                    key,
                    stats,
                    vantage_known,
                })
                .collect(),
            ports: ports
                .into_iter()
                .map(|((transport, port, side, dir), counts)| PortTotal {
                    transport,
                    port,
                    side,
                    dir,
                    counts,
                })
                .collect(),
            health,
        }
    }

    #[test]
    fn packed_deferred_table_agrees_with_the_reference_semantics() {
        use std::net::Ipv6Addr;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for capacity in [1usize, 5, 40, 10_000] {
            let mut packets = Vec::new();
            for i in 0..3000u64 {
                let v6 = next(4) == 0;
                let addr = |k: u64| {
                    if v6 {
                        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, k as u16))
                    } else {
                        IpAddr::V4(Ipv4Addr::new(10, 0, 0, k as u8))
                    }
                };
                let transport = [
                    Transport::Tcp,
                    Transport::Udp,
                    Transport::Icmp,
                    Transport::Other(47),
                ][next(4) as usize];
                packets.push(PacketMeta {
                    ts: 1000 + i * 3 - next(5),
                    transport,
                    src: Endpoint {
                        addr: addr(next(4)),
                        port: [22, 443, 40000, 40001, 0][next(5) as usize],
                    },
                    dst: Endpoint {
                        addr: addr(next(4)),
                        port: [22, 443, 40000, 40001, 0][next(5) as usize],
                    },
                    dir: [None, Some(Direction::In), Some(Direction::Out)][next(3) as usize],
                    wire_len: 60 + next(1400) as u32,
                    segments: 1 + u32::from(next(10) == 0) * 3,
                    tcp_flags: next(256) as u8,
                });
            }
            let mut t = FlowTable::new(capacity, 0);
            for p in &packets {
                t.ingest(p);
            }
            assert_eq!(
                t.drain(99_999),
                reference(capacity, &packets, 99_999),
                "capacity {capacity}"
            );
        }
    }
}
