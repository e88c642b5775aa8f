//! The bounded userspace flow table: plain data with `ingest` and `drain`, no I/O. It keeps
//! lossless per-port totals and at most `capacity` flows, and counts every flow it had to drop.
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::hugevec::HugeVec;
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

/// [`Packet::family`] bit: the source address is IPv6.
pub const SRC_V6: u8 = 1;
/// [`Packet::family`] bit: the destination address is IPv6.
pub const DST_V6: u8 = 2;

/// One decoded packet in the table's own integer form: what the decoder produces for the
/// table (no `IpAddr` is built per packet) and what [`FlowTable::ingest_packets`] takes.
/// [`PacketMeta`] is the same observation with typed endpoints and converts to it
/// ([`PacketMeta::packet`]); both give the same flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    /// Source address: an IPv4 address as its 32-bit number, an IPv6 one as its 128-bit number.
    pub src: u128,
    /// Destination address, as `src`.
    pub dst: u128,
    pub ts: UnixNanos,
    /// Length on the wire (not the captured length).
    pub wire_len: u32,
    /// Wire-equivalent segments (1 unless the backend saw a GSO super-packet).
    pub segments: u32,
    pub sport: u16,
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// [`SRC_V6`] | [`DST_V6`].
    pub family: u8,
    /// TCP flag byte (0 for other transports).
    pub tcp_flags: u8,
    /// As [`PacketMeta::dir`].
    pub dir: Option<Direction>,
}

impl PacketMeta {
    /// The same packet in the table's integer form.
    #[inline]
    pub fn packet(&self) -> Packet {
        let s = bits(&self.src);
        let d = bits(&self.dst);
        Packet {
            src: s.addr,
            dst: d.addr,
            ts: self.ts,
            wire_len: self.wire_len,
            segments: self.segments,
            sport: self.src.port,
            dport: self.dst.port,
            proto: self.transport.proto(),
            family: (u8::from(s.v6) * SRC_V6) | (u8::from(d.v6) * DST_V6),
            tcp_flags: self.tcp_flags,
            dir: self.dir,
        }
    }
}

/// Health and loss counters for one interval. Every loss anywhere in the pipeline ends here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Flows not recorded because the flow table was full (totals still exact).
    pub flow_table_full: u64,
    /// Other flow-map update failures (e.g. EBUSY) in the kernel, and failed drains of the
    /// kernel's flow map (the interval's flow detail is then what was drained before it).
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

/// Packets a caller should hand to [`FlowTable::ingest_batch`] at once.
pub const BATCH: usize = 256;

/// How far ahead of the packet being applied its successors are hashed (and their index
/// words prefetched), and their entries prefetched; the ring holds the hashed packets.
const AHEAD_INDEX: usize = 16;
const AHEAD_ENTRY: usize = 8;
const RING: usize = 32;
const _: () = assert!(AHEAD_ENTRY < AHEAD_INDEX && AHEAD_INDEX < RING && RING.is_power_of_two());

/// foldhash with a per-table random seed: fast, and the random seed keeps crafted traffic from
/// choosing colliding keys in advance.
type Hasher = foldhash::fast::RandomState;

/// `Entry::meta` bit: the local end is `a` (else `b`). Not part of the hash, so both
/// orientations of a conversation share one probe sequence.
const LOCAL_IS_A: u16 = 1 << 10;
/// `Entry::bits`: the capture said which end is local.
const KNOWN: u8 = 1;
/// `Entry::bits`: the other orientation of the same endpoints is also held.
const TWIN: u8 = 2;

/// Per-direction counters of a held flow: its [`Counts`] and its share of the per-port
/// totals (u32 counters saturate, as before; segments beyond one per packet go to the totals
/// directly, which only eBPF GSO packets have).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct DirCounts {
    packets: u64,
    bytes: u64,
    syn: u32,
    synack: u32,
    fin: u32,
    rst: u32,
}

/// A held flow, two cache lines: the key and times in the first (every probe reads it), the
/// counters in the second. The endpoints are stored in canonical order (`a` <= `b`).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Entry {
    a: u128,
    b: u128,
    first_seen: UnixNanos,
    last_seen: UnixNanos,
    /// a's port << 16 | b's port.
    ports: u32,
    /// IP protocol | a is IPv6 << 8 | b is IPv6 << 9 | [`LOCAL_IS_A`].
    meta: u16,
    /// [`KNOWN`] | [`TWIN`].
    bits: u8,
    /// TCP flags seen, by direction (0 inbound, 1 outbound).
    flags: [u8; 2],
    dirs: [DirCounts; 2],
}

const _: () = assert!(std::mem::size_of::<Entry>() == 128);

/// One endpoint as integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bits {
    v6: bool,
    addr: u128,
    port: u16,
}

#[inline]
fn bits(e: &Endpoint) -> Bits {
    match e.addr {
        IpAddr::V4(v4) => Bits {
            v6: false,
            addr: u128::from(u32::from(v4)),
            port: e.port,
        },
        IpAddr::V6(v6) => Bits {
            v6: true,
            addr: u128::from(v6),
            port: e.port,
        },
    }
}

fn endpoint(addr: u128, v6: bool, port: u16) -> Endpoint {
    Endpoint {
        addr: if v6 {
            IpAddr::V6(Ipv6Addr::from(addr))
        } else {
            IpAddr::V4(Ipv4Addr::from(addr as u32))
        },
        port,
    }
}

/// A packet's key in canonical form, hashed, with the orientations to look for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Prep {
    a: u128,
    b: u128,
    ports: u32,
    /// As [`Entry::meta`] without [`LOCAL_IS_A`].
    meta: u16,
    hash: u64,
    /// `LOCAL_IS_A` or 0: the orientation sought first (the packet's own direction, or
    /// "source is local" when the direction is unknown).
    first: u16,
    /// The direction that orientation means.
    first_out: bool,
    /// Direction unknown: fall back to "destination is local" (inbound), with this
    /// orientation, when `first` is not held.
    unknown: bool,
    second: u16,
}

impl Prep {
    #[inline(always)]
    fn new(p: &Packet, hasher: &Hasher) -> Self {
        if p.family == 0 {
            Self::new_v4(p, hasher)
        } else {
            Self::new_any(p, hasher)
        }
    }

    /// Any pair of families.
    #[inline(always)]
    fn new_any(p: &Packet, hasher: &Hasher) -> Self {
        let s = Bits {
            v6: p.family & SRC_V6 != 0,
            addr: p.src,
            port: p.sport,
        };
        let d = Bits {
            v6: p.family & DST_V6 != 0,
            addr: p.dst,
            port: p.dport,
        };
        // Any total order does; this one compares the address first.
        let rest = |e: &Bits| (u32::from(e.v6) << 16) | u32::from(e.port);
        let same_addr = s.addr == d.addr;
        let (rs, rd) = (rest(&s), rest(&d));
        let s_le_d = s.addr < d.addr || (same_addr && rs <= rd);
        // d <= s: s is not below d, or both ends are the same.
        let d_le_s = !s_le_d || (same_addr && rs == rd);
        let (a, b) = if s_le_d { (s, d) } else { (d, s) };
        // The orientation in which `local` is the source / the destination. When both ends
        // are equal both orientations are the same key (`LOCAL_IS_A`).
        let out = if s_le_d { LOCAL_IS_A } else { 0 };
        let inb = if d_le_s { LOCAL_IS_A } else { 0 };
        let meta = u16::from(p.proto) | (u16::from(a.v6) << 8) | (u16::from(b.v6) << 9);
        let ports = (u32::from(a.port) << 16) | u32::from(b.port);
        Self::keyed(hasher, a.addr, b.addr, ports, meta).oriented(out, inb, p.dir)
    }

    /// [`Prep::new_any`] for two IPv4 ends (32-bit addresses): the same order, hash and
    /// fields, on 64-bit words (address above port orders as address, then family bit (both
    /// 0), then port), about 15 instructions a packet fewer.
    #[inline(always)]
    fn new_v4(p: &Packet, hasher: &Hasher) -> Self {
        let ks = ((p.src as u64) << 16) | u64::from(p.sport);
        let kd = ((p.dst as u64) << 16) | u64::from(p.dport);
        let s_le_d = ks <= kd;
        let d_le_s = kd <= ks;
        let (ka, kb) = if s_le_d { (ks, kd) } else { (kd, ks) };
        let out = if s_le_d { LOCAL_IS_A } else { 0 };
        let inb = if d_le_s { LOCAL_IS_A } else { 0 };
        let meta = u16::from(p.proto);
        let ports = (((ka & 0xffff) as u32) << 16) | (kb & 0xffff) as u32;
        let (a, b) = (ka >> 16, kb >> 16);
        Self::keyed(hasher, a.into(), b.into(), ports, meta).oriented(out, inb, p.dir)
    }

    /// The canonical key `a`, `b`, `ports`, `meta` (without `LOCAL_IS_A`), hashed.
    #[inline(always)]
    fn keyed(hasher: &Hasher, a: u128, b: u128, ports: u32, meta: u16) -> Self {
        Self {
            a,
            b,
            ports,
            meta,
            hash: key_hash(hasher, a, b, ports, meta),
            ..Self::default()
        }
    }

    /// Sets the orientations to look for: `out` / `inb` are the orientations in which the
    /// local end is the source / the destination, `dir` the packet's direction if known.
    #[inline(always)]
    fn oriented(self, out: u16, inb: u16, dir: Option<Direction>) -> Self {
        // Selects rather than a match: with node addresses known, directions alternate at
        // random from packet to packet and a branch on them is mispredicted half the time.
        let first_out = dir != Some(Direction::In);
        Self {
            first: if first_out { out } else { inb },
            first_out,
            unknown: dir.is_none(),
            second: inb,
            ..self
        }
    }

    #[inline]
    fn tag(&self) -> u32 {
        (self.hash >> 32) as u32
    }

    /// Whether `e` holds these endpoints (in either orientation).
    #[inline]
    fn same_ends(&self, e: &Entry) -> bool {
        // One test instead of four (no early exits to predict).
        ((e.a ^ self.a)
            | (e.b ^ self.b)
            | u128::from(e.ports ^ self.ports)
            | u128::from((e.meta & !LOCAL_IS_A) ^ self.meta))
            == 0
    }
}

/// Where a probe ended.
enum Probe {
    /// The flow is held at this entry; the packet goes in this direction (true: outbound).
    Hit(usize, bool),
    /// Not held: insert it at this bucket with this orientation and direction; `other` is the
    /// entry holding the opposite orientation, if any.
    Miss {
        bucket: usize,
        orient: u16,
        out: bool,
        other: Option<usize>,
    },
}

/// The hash of a canonical flow key: what a packet is looked up by ([`Prep`]) and what
/// [`FlowTable::grow`] re-places an entry by. An IPv4 address (below 2^32) folds to itself.
#[inline(always)]
fn key_hash(hasher: &Hasher, a: u128, b: u128, ports: u32, meta: u16) -> u64 {
    let fold = |x: u128| (x as u64) ^ ((x >> 64) as u64).rotate_left(29);
    let mut h = hasher.build_hasher();
    h.write_u64(fold(a));
    h.write_u64(fold(b));
    h.write_u64((u64::from(ports) << 16) | u64::from(meta));
    h.finish()
}

/// Hints the CPU to bring `p`'s cache line closer. Never faults, whatever the address.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch instruction has no architectural effect and does not fault, even on
    // an invalid address; `p` is only used as a hint.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: PRFM is a hint: it does not fault, does not write memory or flags, and `p` is
    // only used as an address operand.
    unsafe {
        core::arch::asm!("prfm pldl1keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}

/// The userspace flow table used by the pcap backends (the eBPF backend keeps its table in
/// the kernel and builds [`Snapshot`]s from the maps).
///
/// An open-addressing table of its own: a power-of-two index of `tag << 32 | entry + 1`
/// words (linear probing, load at most one half, the tag being the hash's upper half) over
/// a dense array of entries in arrival order, so the flows active at one moment sit close
/// together in memory. Both orientations of a conversation hash alike, so a packet whose
/// direction is unknown needs one probe to find its flow either way. Packets given in a
/// batch are hashed and their index words and entries prefetched a few packets ahead of
/// their update (the result is the same as one packet at a time).
///
/// Per-port totals of packets whose flow is held are kept in the flow's entry and added to
/// the totals at [`drain`](Self::drain); packets of flows the table had no room for go to the
/// totals directly, so totals stay exact.
#[derive(Debug)]
pub struct FlowTable {
    capacity: usize,
    hasher: Hasher,
    /// `tag << 32 | (entry index + 1)`, 0 when empty; length a power of two.
    index: HugeVec<u64>,
    mask: usize,
    entries: HugeVec<Entry>,
    /// Per-port totals.
    ports: PortTotals,
    health: Health,
    start: UnixNanos,
}

/// The smallest index the table starts with.
const MIN_BUCKETS: usize = 1 << 12;

impl FlowTable {
    /// A table that holds at most `capacity` flows per interval.
    pub fn new(capacity: usize, start: UnixNanos) -> Self {
        // Index words hold entry + 1 in 32 bits.
        let capacity = capacity.min(u32::MAX as usize - 1);
        let buckets = MIN_BUCKETS;
        Self {
            capacity,
            hasher: Hasher::default(),
            index: HugeVec::zeroed(buckets),
            mask: buckets - 1,
            entries: HugeVec::with_capacity(capacity.min(MIN_BUCKETS / 2)),
            ports: PortTotals::default(),
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
        self.entries.len()
    }

    /// Whether the table holds no flows.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds one packet.
    #[inline]
    pub fn ingest(&mut self, p: &PacketMeta) {
        self.ingest_packet(&p.packet());
    }

    /// Adds one packet in the table's integer form.
    #[inline]
    pub fn ingest_packet(&mut self, p: &Packet) {
        self.health.packets_seen += 1;
        let pr = Prep::new(p, &self.hasher);
        self.apply(p, &pr);
    }

    /// Adds packets in order (see [`ingest_packets`](Self::ingest_packets)).
    pub fn ingest_batch(&mut self, packets: &[PacketMeta]) {
        for chunk in packets.chunks(BATCH) {
            let mut buf = [Packet::default(); BATCH];
            for (b, p) in buf.iter_mut().zip(chunk) {
                *b = p.packet();
            }
            self.ingest_packets(buf.get(..chunk.len()).unwrap_or_default());
        }
    }

    /// Adds packets in order; the same result as [`ingest_packet`](Self::ingest_packet) on
    /// each, faster: a software pipeline hashes packet `i + AHEAD_INDEX` and prefetches its
    /// index word, reads the index word of packet `i + AHEAD_ENTRY` and prefetches its entry,
    /// then applies packet `i`. Callers should pass a few hundred packets at a time.
    pub fn ingest_packets(&mut self, packets: &[Packet]) {
        let mut ring = [Prep::default(); RING];
        let n = packets.len();
        self.health.packets_seen += n as u64;
        for (j, p) in packets.iter().enumerate().take(AHEAD_INDEX) {
            self.prepare(p, &mut ring[j % RING]);
        }
        for pr in ring.iter().take(AHEAD_ENTRY.min(n)) {
            self.prefetch_entry(pr);
        }
        for (i, p) in packets.iter().enumerate() {
            if let Some(q) = packets.get(i + AHEAD_INDEX) {
                self.prepare(q, &mut ring[(i + AHEAD_INDEX) % RING]);
            }
            if i + AHEAD_ENTRY < n {
                self.prefetch_entry(&ring[(i + AHEAD_ENTRY) % RING]);
            }
            self.apply(p, &ring[i % RING]);
        }
    }

    /// Hashes `p` into `pr` and prefetches its home index word.
    #[inline(always)]
    fn prepare(&self, p: &Packet, pr: &mut Prep) {
        *pr = Prep::new(p, &self.hasher);
        prefetch(
            self.index
                .as_ptr()
                .wrapping_add(pr.hash as usize & self.mask),
        );
    }

    /// Prefetches the entry the home index word of `pr` points to, if its tag matches.
    #[inline(always)]
    fn prefetch_entry(&self, pr: &Prep) {
        let word = self
            .index
            .get(pr.hash as usize & self.mask)
            .copied()
            .unwrap_or(0);
        if word != 0 && (word >> 32) as u32 == pr.tag() {
            let e = self
                .entries
                .as_ptr()
                .wrapping_add((word as u32 as usize).wrapping_sub(1));
            prefetch(e);
            prefetch(e.cast::<u8>().wrapping_add(64));
        }
    }

    /// Finds the packet's flow (one probe sequence whatever its direction).
    #[inline(always)]
    fn probe(&self, pr: &Prep) -> Probe {
        let tag = pr.tag();
        let mut i = pr.hash as usize & self.mask;
        let mut other = None;
        loop {
            let word = self.index.get(i).copied().unwrap_or(0);
            if word == 0 {
                return if pr.unknown {
                    // Neither orientation is held: the destination is taken as local.
                    Probe::Miss {
                        bucket: i,
                        orient: pr.second,
                        out: false,
                        other: None,
                    }
                } else {
                    Probe::Miss {
                        bucket: i,
                        orient: pr.first,
                        out: pr.first_out,
                        other,
                    }
                };
            }
            if (word >> 32) as u32 == tag {
                let at = (word as u32 as usize).wrapping_sub(1);
                if let Some(e) = self.entries.get(at)
                    && pr.same_ends(e)
                {
                    let same = e.meta & LOCAL_IS_A == pr.first;
                    // On the opposite orientation: unless both are held, the sought one is
                    // not, and a packet of unknown direction belongs to this one, inbound
                    // (`first_out` is true for it). One branch for both hits: without node
                    // addresses, which orientation a packet meets is a coin toss.
                    let lone = e.bits & TWIN == 0;
                    if same | (pr.unknown & lone) {
                        return Probe::Hit(at, pr.first_out & same);
                    }
                    if lone {
                        other = Some(at);
                    }
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Counts `p` into its flow (found or inserted); the caller counts it in `packets_seen`.
    #[inline(always)]
    fn apply(&mut self, p: &Packet, pr: &Prep) {
        let tcp = p.proto == 6;
        let f = if tcp { p.tcp_flags } else { 0 };
        let segments = p.segments.max(1);
        let (at, out) = match self.probe(pr) {
            Probe::Hit(at, out) => (at, out),
            Probe::Miss {
                bucket,
                orient,
                out,
                other,
            } => match self.insert(p, pr, bucket, orient, other) {
                Some(at) => (at, out),
                None => {
                    self.count_unheld(p, pr, orient, out, segments);
                    return;
                }
            },
        };
        let Some(e) = self.entries.get_mut(at) else {
            return;
        };
        let d = usize::from(out);
        if let (Some(c), Some(fl)) = (e.dirs.get_mut(d), e.flags.get_mut(d)) {
            c.packets = c.packets.saturating_add(1);
            c.bytes = c.bytes.saturating_add(u64::from(p.wire_len));
            *fl |= p.tcp_flags;
            // Unconditional adds of 0 or 1: a branch on "any flag" is mispredicted whenever
            // TCP and UDP packets interleave.
            let syn = f & TcpFlags::SYN != 0;
            let ack = f & TcpFlags::ACK != 0;
            c.syn = c.syn.saturating_add(u32::from(syn & !ack));
            c.synack = c.synack.saturating_add(u32::from(syn & ack));
            c.fin = c.fin.saturating_add(u32::from(f & TcpFlags::FIN != 0));
            c.rst = c.rst.saturating_add(u32::from(f & TcpFlags::RST != 0));
        }
        e.first_seen = e.first_seen.min(p.ts);
        e.last_seen = e.last_seen.max(p.ts);
        if segments > 1 {
            let (local, remote) = ends(e.meta, e.ports);
            self.add_ports(
                Transport::from_proto(p.proto),
                local,
                remote,
                out,
                &PortCounts {
                    segments: u64::from(segments - 1),
                    ..PortCounts::default()
                },
            );
        }
    }

    /// Holds a new flow at `bucket` (growing the index first if it is half full); `None` when
    /// the table is at capacity. Out of line: one packet in tens opens a flow.
    #[inline(never)]
    fn insert(
        &mut self,
        p: &Packet,
        pr: &Prep,
        mut bucket: usize,
        orient: u16,
        other: Option<usize>,
    ) -> Option<usize> {
        let at = self.entries.len();
        if at >= self.capacity {
            return None;
        }
        if (at + 1) * 2 > self.index.len() {
            self.grow();
            bucket = self.free_bucket(pr.hash);
        }
        let mut bits = if p.dir.is_some() { KNOWN } else { 0 };
        if let Some(o) = other.and_then(|o| self.entries.get_mut(o)) {
            o.bits |= TWIN;
            bits |= TWIN;
        }
        self.entries.push(Entry {
            a: pr.a,
            b: pr.b,
            first_seen: p.ts,
            last_seen: p.ts,
            ports: pr.ports,
            meta: pr.meta | orient,
            bits,
            flags: [0; 2],
            dirs: [DirCounts::default(); 2],
        });
        if let Some(w) = self.index.get_mut(bucket) {
            *w = (u64::from(pr.tag()) << 32) | (at as u64 + 1);
        }
        Some(at)
    }

    /// The first empty bucket of `hash`'s probe sequence.
    fn free_bucket(&self, hash: u64) -> usize {
        let mut i = hash as usize & self.mask;
        while self.index.get(i).is_some_and(|w| *w != 0) {
            i = (i + 1) & self.mask;
        }
        i
    }

    /// Doubles the index and re-places every entry.
    #[cold]
    fn grow(&mut self) {
        let buckets = self.index.len() * 2;
        self.index = HugeVec::zeroed(buckets);
        self.mask = buckets - 1;
        for at in 0..self.entries.len() {
            let Some(e) = self.entries.get(at) else { break };
            let hash = self.rehash(e);
            let b = self.free_bucket(hash);
            if let Some(w) = self.index.get_mut(b) {
                *w = (hash >> 32 << 32) | (at as u64 + 1);
            }
        }
    }

    fn rehash(&self, e: &Entry) -> u64 {
        key_hash(&self.hasher, e.a, e.b, e.ports, e.meta & !LOCAL_IS_A)
    }

    /// A packet of a flow the table had no room for: straight into the totals.
    #[cold]
    fn count_unheld(&mut self, p: &Packet, pr: &Prep, orient: u16, out: bool, segments: u32) {
        self.health.flow_table_full += 1;
        let (local, remote) = ends(pr.meta | orient, pr.ports);
        let transport = Transport::from_proto(p.proto);
        let tcp = transport == Transport::Tcp;
        let f = p.tcp_flags;
        let pc = PortCounts {
            packets: 1,
            segments: u64::from(segments),
            bytes: u64::from(p.wire_len),
            syn: u64::from(tcp && f & TcpFlags::SYN != 0 && f & TcpFlags::ACK == 0),
            synack: u64::from(tcp && TcpFlags(f).has(TcpFlags::SYN | TcpFlags::ACK)),
            fin: u64::from(tcp && f & TcpFlags::FIN != 0),
            rst: u64::from(tcp && f & TcpFlags::RST != 0),
        };
        self.add_ports(transport, local, remote, out, &pc);
    }

    fn add_ports(&mut self, t: Transport, local: u16, remote: u16, out: bool, pc: &PortCounts) {
        let dir = if out { Direction::Out } else { Direction::In };
        self.ports.add(t, local, Side::Local, dir, pc);
        self.ports.add(t, remote, Side::Remote, dir, pc);
    }

    /// Ends the interval at `end`: returns everything seen since the last drain and starts a
    /// new, empty interval.
    pub fn drain(&mut self, end: UnixNanos) -> Snapshot {
        let entries = &self.entries;
        // The per-port totals of held flows, one pass in arrival order.
        for (i, e) in entries.iter().enumerate() {
            // The remote ports' totals are scattered (ephemeral ports): fetch a few ahead.
            if let Some(ahead) = entries.get(i + 8) {
                let (l, r) = ends(ahead.meta, ahead.ports);
                let t = Transport::from_proto(ahead.meta as u8);
                self.ports.prefetch(t, r, Side::Remote);
                self.ports.prefetch(t, l, Side::Local);
            }
            let transport = Transport::from_proto(e.meta as u8);
            let (local, remote) = ends(e.meta, e.ports);
            for (out, c) in [(false, &e.dirs[0]), (true, &e.dirs[1])] {
                if c.packets == 0 {
                    continue;
                }
                let pc = PortCounts {
                    packets: c.packets,
                    segments: c.packets,
                    bytes: c.bytes,
                    syn: u64::from(c.syn),
                    synack: u64::from(c.synack),
                    fin: u64::from(c.fin),
                    rst: u64::from(c.rst),
                };
                let dir = if out { Direction::Out } else { Direction::In };
                self.ports.add(transport, local, Side::Local, dir, &pc);
                self.ports.add(transport, remote, Side::Remote, dir, &pc);
            }
        }
        // Sorted by FlowKey's order, through packed integer keys computed from the entries
        // (comparing FlowKeys walks enums); the sort moves (key, position) pairs, and the
        // records are built once, in order. Every held flow has its own key, so the order is
        // total.
        let mut keyed: Vec<(FlowOrder, u32)> = entries
            .iter()
            .zip(0u32..)
            .map(|(e, i)| (entry_order(e), i))
            .collect();
        keyed.sort_unstable_by_key(|x| x.0);
        let mut flows: Vec<FlowRecord> = Vec::with_capacity(entries.len());
        for (j, (_, i)) in keyed.iter().enumerate() {
            // The entries are read in key order, not memory order: fetch a few ahead.
            if let Some((_, ahead)) = keyed.get(j + 8) {
                prefetch(entries.as_ptr().wrapping_add(*ahead as usize));
                prefetch(
                    entries
                        .as_ptr()
                        .wrapping_add(*ahead as usize)
                        .cast::<u8>()
                        .wrapping_add(64),
                );
            }
            if let Some(e) = entries.get(*i as usize) {
                flows.push(record(e));
            }
        }
        // Keep the allocations for the next interval.
        self.entries.clear();
        self.index.fill(0);
        let ports = self.ports.drain_sorted();
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

/// The flow record of a held entry.
#[inline]
fn record(e: &Entry) -> FlowRecord {
    let transport = Transport::from_proto(e.meta as u8);
    let a = endpoint(e.a, e.meta & (1 << 8) != 0, (e.ports >> 16) as u16);
    let b = endpoint(e.b, e.meta & (1 << 9) != 0, e.ports as u16);
    let (local, remote) = if e.meta & LOCAL_IS_A != 0 {
        (a, b)
    } else {
        (b, a)
    };
    let [inb, outb] = e.dirs;
    let [flags_in, flags_out] = e.flags;
    FlowRecord {
        key: FlowKey {
            transport,
            local,
            remote,
        },
        stats: FlowStats {
            inbound: Counts {
                packets: inb.packets,
                bytes: inb.bytes,
            },
            outbound: Counts {
                packets: outb.packets,
                bytes: outb.bytes,
            },
            flags_in: TcpFlags(flags_in),
            flags_out: TcpFlags(flags_out),
            syn_in: inb.syn,
            syn_out: outb.syn,
            first_seen: e.first_seen,
            last_seen: e.last_seen,
        },
        vantage_known: e.bits & KNOWN != 0,
    }
}

/// Per-port totals: TCP and UDP ports (nearly every update) in a dense array indexed by
/// transport, port, side and direction, one add each; the other transports (ICMP type/code,
/// SCTP, other protocols) in a hash map.
#[derive(Debug, Default)]
struct PortTotals {
    /// For TCP and UDP, at [`dense_slot`]: the [`PortCounts`] fields in declaration order.
    /// Empty until the first TCP or UDP total; allocated zeroed (29 MiB of address space, of
    /// which only the pages of ports seen are ever touched).
    dense: Vec<[u64; 7]>,
    /// The slots of `dense` that were zero when added to, in first-use order (with repeats
    /// only if an all-zero total was added).
    used: Vec<u32>,
    /// Everything else, keyed by [`port_key`].
    other: HashMap<u64, PortCounts, Hasher>,
}

/// Slots of the dense array: 2 transports x 65,536 ports x 2 sides x 2 directions.
const DENSE_SLOTS: usize = 2 << 18;

/// The dense slot of a TCP or UDP total (their order is [`port_key`]'s); `None` for other
/// transports.
#[inline(always)]
fn dense_slot(t: Transport, port: u16, side: Side, dir: Direction) -> Option<usize> {
    let t_idx = match t {
        Transport::Tcp => 0usize,
        Transport::Udp => 1,
        _ => return None,
    };
    Some(
        (t_idx << 18)
            | (usize::from(port) << 2)
            | (usize::from(side == Side::Remote) << 1)
            | usize::from(dir == Direction::Out),
    )
}

fn counts_of(c: &[u64; 7]) -> PortCounts {
    let [packets, segments, bytes, syn, synack, fin, rst] = *c;
    PortCounts {
        packets,
        segments,
        bytes,
        syn,
        synack,
        fin,
        rst,
    }
}

impl PortTotals {
    #[inline]
    fn add(&mut self, t: Transport, port: u16, side: Side, dir: Direction, pc: &PortCounts) {
        let Some(slot) = dense_slot(t, port, side, dir) else {
            self.other
                .entry(port_key(t, port, side, dir))
                .or_default()
                .add(pc);
            return;
        };
        if self.dense.is_empty() {
            self.dense = vec![[0; 7]; DENSE_SLOTS];
        }
        let Some(c) = self.dense.get_mut(slot) else {
            return;
        };
        if *c == [0; 7] {
            self.used.push(slot as u32);
        }
        let mut sum = counts_of(c);
        sum.add(pc);
        *c = [
            sum.packets,
            sum.segments,
            sum.bytes,
            sum.syn,
            sum.synack,
            sum.fin,
            sum.rst,
        ];
    }

    /// Hints the CPU to fetch the totals of a port's two directions on one side.
    #[inline(always)]
    fn prefetch(&self, t: Transport, port: u16, side: Side) {
        if let Some(slot) = dense_slot(t, port, side, Direction::In) {
            prefetch(self.dense.as_ptr().wrapping_add(slot));
            prefetch(self.dense.as_ptr().wrapping_add(slot + 1));
        }
    }

    /// Every total in key order; leaves the totals empty (the dense array is kept).
    fn drain_sorted(&mut self) -> Vec<PortTotal> {
        let mut used = std::mem::take(&mut self.used);
        // Slot order is key order, and every TCP and UDP key sorts before the others.
        used.sort_unstable();
        used.dedup();
        let mut all: Vec<PortTotal> = Vec::with_capacity(used.len() + self.other.len());
        for slot in used {
            let Some(c) = self.dense.get_mut(slot as usize) else {
                continue;
            };
            let counts = counts_of(c);
            *c = [0; 7];
            let slot = u64::from(slot);
            let t = if slot >> 18 == 0 {
                Transport::Tcp
            } else {
                Transport::Udp
            };
            all.push(PortTotal {
                transport: t,
                port: (slot >> 2) as u16,
                side: if slot & 2 != 0 {
                    Side::Remote
                } else {
                    Side::Local
                },
                dir: if slot & 1 != 0 {
                    Direction::Out
                } else {
                    Direction::In
                },
                counts,
            });
        }
        let mut other: Vec<(u64, PortCounts)> = self.other.drain().collect();
        other.sort_unstable_by_key(|(k, _)| *k);
        all.extend(other.into_iter().map(|(k, counts)| {
            let (transport, port, side, dir) = port_key_parts(k);
            PortTotal {
                transport,
                port,
                side,
                dir,
                counts,
            }
        }));
        all
    }
}

/// A transport's rank in [`Transport`]'s derived order.
fn transport_rank(t: Transport) -> u16 {
    match t {
        Transport::Tcp => 0,
        Transport::Udp => 1 << 8,
        Transport::Sctp => 2 << 8,
        Transport::Icmp => 3 << 8,
        Transport::Icmpv6 => 4 << 8,
        Transport::Other(n) => (5 << 8) | u16::from(n),
    }
}

fn transport_of_rank(r: u16) -> Transport {
    match r >> 8 {
        0 => Transport::Tcp,
        1 => Transport::Udp,
        2 => Transport::Sctp,
        3 => Transport::Icmp,
        4 => Transport::Icmpv6,
        _ => Transport::Other(r as u8),
    }
}

/// A [`PortKey`] as one integer whose order is the tuple's.
fn port_key(t: Transport, port: u16, side: Side, dir: Direction) -> u64 {
    (u64::from(transport_rank(t)) << 32)
        | (u64::from(port) << 16)
        | (u64::from(side == Side::Remote) << 8)
        | u64::from(dir == Direction::Out)
}

fn port_key_parts(k: u64) -> PortKey {
    (
        transport_of_rank((k >> 32) as u16),
        (k >> 16) as u16,
        if k & (1 << 8) != 0 {
            Side::Remote
        } else {
            Side::Local
        },
        if k & 1 != 0 {
            Direction::Out
        } else {
            Direction::In
        },
    )
}

/// [`FlowKey`]'s derived order as one 301-bit integer in five words, most significant
/// first: transport rank (11 bits), local family (1), local address (128), local port (16),
/// remote family (1), remote address (128), remote port (16), then zeros.
type FlowOrder = [u64; 5];

/// The order key of the flow (`transport`, local end, remote end); an IPv4 address is its
/// 32-bit number.
fn flow_order(
    transport: Transport,
    local: (bool, u128, u16),
    remote: (bool, u128, u16),
) -> FlowOrder {
    let (lv6, la, lp) = local;
    let (rv6, ra, rp) = remote;
    [
        (u64::from(transport_rank(transport)) << 53) | (u64::from(lv6) << 52) | (la >> 76) as u64,
        (la >> 12) as u64,
        ((la as u64 & 0xfff) << 52)
            | (u64::from(lp) << 36)
            | (u64::from(rv6) << 35)
            | (ra >> 93) as u64,
        (ra >> 29) as u64,
        ((ra as u64 & 0x1fff_ffff) << 35) | (u64::from(rp) << 19),
    ]
}

/// [`flow_order`] of a [`FlowKey`].
#[cfg(test)]
fn key_order(k: &FlowKey) -> FlowOrder {
    let (l, r) = (bits(&k.local), bits(&k.remote));
    flow_order(k.transport, (l.v6, l.addr, l.port), (r.v6, r.addr, r.port))
}

/// [`flow_order`] of a held entry (the same as of its record's key).
#[inline]
fn entry_order(e: &Entry) -> FlowOrder {
    let a = (e.meta & (1 << 8) != 0, e.a, (e.ports >> 16) as u16);
    let b = (e.meta & (1 << 9) != 0, e.b, e.ports as u16);
    let (local, remote) = if e.meta & LOCAL_IS_A != 0 {
        (a, b)
    } else {
        (b, a)
    };
    flow_order(Transport::from_proto(e.meta as u8), local, remote)
}

/// The local and remote ports of an entry's `meta` and `ports`.
#[inline]
fn ends(meta: u16, ports: u32) -> (u16, u16) {
    let (a, b) = ((ports >> 16) as u16, ports as u16);
    if meta & LOCAL_IS_A != 0 {
        (a, b)
    } else {
        (b, a)
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
    fn the_ipv4_fast_path_prepares_what_the_general_path_does() {
        let hasher = Hasher::default();
        let addrs = [
            0u32,
            1,
            0x0a00_0001,
            0x0a00_0002,
            0x7fff_ffff,
            0x8000_0000,
            u32::MAX,
        ];
        let ports = [0u16, 1, 53, 40_000, u16::MAX];
        let dirs = [None, Some(Direction::In), Some(Direction::Out)];
        let mut checked = 0;
        for (&src, &dst) in addrs.iter().flat_map(|a| addrs.iter().map(move |b| (a, b))) {
            for (&sport, &dport) in ports.iter().flat_map(|a| ports.iter().map(move |b| (a, b))) {
                for (&dir, proto) in dirs.iter().zip([6u8, 17, 132]) {
                    let p = Packet {
                        src: src.into(),
                        dst: dst.into(),
                        sport,
                        dport,
                        proto,
                        dir,
                        ..Packet::default()
                    };
                    assert_eq!(
                        Prep::new_v4(&p, &hasher),
                        Prep::new_any(&p, &hasher),
                        "{p:?}"
                    );
                    checked += 1;
                }
            }
        }
        // Equal ends (both orientations the same key) are among them.
        assert_eq!(checked, 7 * 7 * 5 * 5 * 3);
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
                .map(|(key, counts)| PortTotal::from_key(key, counts))
                .collect(),
            health,
        }
    }

    /// Random packets over `addrs` addresses and `ports` port numbers (few: many collisions,
    /// both orientations of a conversation, equal ends; many: index growth).
    fn random_packets(seed: u64, n: u64, addrs: u64, ports: u64) -> Vec<PacketMeta> {
        use std::net::Ipv6Addr;
        let mut rng = seed;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let port_pick = [22, 443, 40000, 40001, 0];
        let mut packets = Vec::new();
        for i in 0..n {
            let v6 = next(4) == 0;
            let addr = |k: u64| {
                if v6 {
                    IpAddr::V6(Ipv6Addr::new(
                        0xfd00,
                        0,
                        0,
                        0,
                        0,
                        0,
                        (k >> 16) as u16,
                        k as u16,
                    ))
                } else {
                    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + k as u32))
                }
            };
            let port = |r: u64| {
                if ports <= 5 {
                    port_pick[r as usize % 5]
                } else {
                    r as u16
                }
            };
            let transport = [
                Transport::Tcp,
                Transport::Udp,
                Transport::Icmp,
                Transport::Other(47),
            ][next(4) as usize];
            let (s, sp, d, dp) = (next(addrs), next(ports), next(addrs), next(ports));
            packets.push(PacketMeta {
                ts: 1000 + i * 3 - next(5),
                transport,
                src: Endpoint {
                    addr: addr(s),
                    port: port(sp),
                },
                dst: Endpoint {
                    addr: addr(d),
                    port: port(dp),
                },
                dir: [None, Some(Direction::In), Some(Direction::Out)][next(3) as usize],
                wire_len: 60 + next(1400) as u32,
                segments: 1 + u32::from(next(10) == 0) * 3,
                tcp_flags: next(256) as u8,
            });
        }
        packets
    }

    #[test]
    fn packed_deferred_table_agrees_with_the_reference_semantics() {
        for (seed, n, addrs, ports, capacities) in [
            (
                0x9e37_79b9_7f4a_7c15u64,
                3000,
                4,
                5,
                &[1usize, 5, 40, 10_000][..],
            ),
            // Enough distinct flows to grow the index several times, and to fill the table.
            (
                0x1234_5678_9abc_def1,
                40_000,
                300,
                20,
                &[7_000, 1 << 20][..],
            ),
        ] {
            let packets = random_packets(seed, n, addrs, ports);
            for &capacity in capacities {
                let want = reference(capacity, &packets, 99_999);
                let mut t = FlowTable::new(capacity, 0);
                for p in &packets {
                    t.ingest(p);
                }
                assert_eq!(t.drain(99_999), want, "one at a time, capacity {capacity}");
                // Batches of every size up to a few times BATCH, in one table.
                let mut t = FlowTable::new(capacity, 0);
                let mut rest = &packets[..];
                let mut k = 0;
                while !rest.is_empty() {
                    let (now, later) = rest.split_at((k % (3 * BATCH + 1)).min(rest.len()));
                    t.ingest_batch(now);
                    rest = later;
                    k += 7;
                }
                assert_eq!(t.drain(99_999), want, "in batches, capacity {capacity}");
            }
        }
    }

    #[test]
    fn integer_orders_match_the_derived_orders() {
        let packets = random_packets(0x5eed, 2000, 300, 70_000);
        let mut keys: Vec<FlowKey> = packets
            .iter()
            .map(|p| FlowKey {
                transport: p.transport,
                local: p.src,
                remote: p.dst,
            })
            .collect();
        keys.push(FlowKey {
            transport: Transport::Other(200),
            local: ep(1, 1),
            remote: ep(1, 1),
        });
        for x in &keys {
            for y in keys.iter().take(300) {
                assert_eq!(key_order(x).cmp(&key_order(y)), x.cmp(y), "{x:?} {y:?}");
            }
        }
        let mut pk: Vec<PortKey> = Vec::new();
        for t in [
            Transport::Tcp,
            Transport::Icmpv6,
            Transport::Other(0),
            Transport::Other(255),
        ] {
            for port in [0, 1, 443, 65535] {
                for side in [Side::Local, Side::Remote] {
                    for dir in [Direction::In, Direction::Out] {
                        pk.push((t, port, side, dir));
                    }
                }
            }
        }
        for x in &pk {
            assert_eq!(port_key_parts(port_key(x.0, x.1, x.2, x.3)), *x);
            for y in &pk {
                assert_eq!(
                    port_key(x.0, x.1, x.2, x.3).cmp(&port_key(y.0, y.1, y.2, y.3)),
                    x.cmp(y)
                );
            }
        }
    }

    #[test]
    fn a_packet_from_an_endpoint_to_itself_is_one_flow() {
        let packets: Vec<PacketMeta> = [None, Some(Direction::In), None, Some(Direction::Out)]
            .into_iter()
            .map(|dir| udp(ep(1, 53), ep(1, 53), dir))
            .collect();
        let mut t = FlowTable::new(16, 0);
        t.ingest_batch(&packets);
        let s = t.drain(10);
        assert_eq!(s, reference(16, &packets, 10));
        // In and Out of the same key: one flow, held as the first packet saw it.
        assert_eq!(s.flows.len(), 1);
        assert_eq!(s.flows[0].stats.inbound.packets, 2);
        assert_eq!(s.flows[0].stats.outbound.packets, 2);
    }
}
