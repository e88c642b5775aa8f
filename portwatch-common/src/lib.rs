//! Types shared by the kernel program and the userspace agent: map names, sizes, counter
//! indices and the `#[repr(C)]` layouts of every map key and value, and how copies of a value
//! fold together. No other logic lives here; the kernel side (portwatch-ebpf) and the user
//! side (portwatch::capture::ebpf) both depend on it.
#![no_std]

/// The nightly toolchain that builds the eBPF object (pinned; `cargo xtask setup` installs it).
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";

/// Name of the per-CPU per-port totals table (never written by userspace).
pub const MAP_PORT_TOTALS: &str = "PW_PORT_TOTALS";
/// Name of the bounded flow-detail per-CPU hash map (drained by userspace every interval).
pub const MAP_FLOWS: &str = "PW_FLOWS";
/// Name of the per-CPU health counters array: one u64 per `CNT_*` index.
pub const MAP_COUNTERS: &str = "PW_COUNTERS";

/// Name of the program attached to TC ingress.
pub const PROG_INGRESS: &str = "portwatch_ingress";
/// Name of the program attached to TC egress.
pub const PROG_EGRESS: &str = "portwatch_egress";

/// Version of the map layouts below. Pinned maps whose key or value sizes do not match are
/// replaced on start (a layout change cannot continue old totals).
pub const LAYOUT_VERSION: u32 = 2;

/// Default capacity of the flow-detail map (overridable at load time).
pub const DEFAULT_FLOW_CAPACITY: u32 = 65_536;
/// Default number of slots of the per-port totals table (a power of two; overridable at load
/// time). The table is a per-CPU array used as an open-addressing hash table: each CPU keeps
/// its own copy, so a packet costs one inlined array access and no hash-map helper call, and an
/// insert never allocates (a `BPF_F_NO_PREALLOC` hash map lost about 4% of new keys in a flood
/// of new source ports on this kernel). Each slot costs 64 bytes per CPU. A key that finds no
/// free slot within [`PORT_PROBES`] probes is counted ([`CNT_PORT_FULL`]); keep the table at
/// most about three-quarters full (131,072 slots hold every remote port of TCP and UDP in one
/// direction at that load).
pub const DEFAULT_PORT_SLOTS: u32 = 131_072;
/// Slots probed (linearly) for a key before it counts as [`CNT_PORT_FULL`].
pub const PORT_PROBES: u32 = 16;
/// Set in [`PortSlot::key`] of an occupied slot (a zero key marks a free one).
pub const PORT_SLOT_USED: u64 = 1 << 63;
/// Name of the global the loader sets to the table's slot count minus one.
pub const GLOBAL_PORT_SLOT_MASK: &str = "PW_PORT_SLOT_MASK";

/// The hash of a [`PortKey`] word ([`PortKey::to_word`]): Fibonacci hashing, high bits.
#[inline(always)]
pub const fn port_hash(word: u64) -> u32 {
    (word.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32
}

/// Packet direction as seen by the hook.
pub const DIR_INGRESS: u8 = 0;
/// Packet direction as seen by the hook.
pub const DIR_EGRESS: u8 = 1;

/// Which end of the packet the port in a [`PortKey`] belongs to.
pub const SIDE_LOCAL: u8 = 0;
/// Which end of the packet the port in a [`PortKey`] belongs to.
pub const SIDE_REMOTE: u8 = 1;

/// Key of the per-port totals map.
///
/// For ICMP and ICMPv6 the destination's "port" is `type << 8 | code` and the source's is 0
/// (the convention of the packet decoder); protocols without ports use 0; non-first fragments
/// have no transport header and count under port 0 of their protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    /// Port number in host byte order (0 for protocols without ports).
    pub port: u16,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP, 1 ICMP, 58 ICMPv6, ...).
    pub proto: u8,
    /// [`SIDE_LOCAL`] or [`SIDE_REMOTE`].
    pub side: u8,
    /// [`DIR_INGRESS`] or [`DIR_EGRESS`].
    pub dir: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 3],
}

impl PortKey {
    /// The key as one 64-bit word (its little-endian bytes), with [`PORT_SLOT_USED`] set.
    #[inline(always)]
    pub const fn to_word(port: u16, proto: u8, side: u8, dir: u8) -> u64 {
        port as u64
            | ((proto as u64) << 16)
            | ((side as u64) << 24)
            | ((dir as u64) << 32)
            | PORT_SLOT_USED
    }

    /// The key stored in a slot's word (`None` for a free slot).
    pub const fn from_word(w: u64) -> Option<Self> {
        if w & PORT_SLOT_USED == 0 {
            return None;
        }
        Some(Self {
            port: w as u16,
            proto: (w >> 16) as u8,
            side: (w >> 24) as u8,
            dir: (w >> 32) as u8,
            _pad: [0; 3],
        })
    }
}

/// Value of the per-port totals (one per CPU and key; userspace sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Packets as the hook saw them (one per skb).
    pub packets: u64,
    /// Wire-equivalent segments (gso_segs of GSO skbs, else 1).
    pub segments: u64,
    /// Bytes (skb length, L2 included, plus 4 for a VLAN tag carried in skb metadata).
    pub bytes: u64,
    /// TCP SYN without ACK.
    pub syn: u64,
    /// TCP SYN with ACK.
    pub synack: u64,
    /// TCP FIN.
    pub fin: u64,
    /// TCP RST.
    pub rst: u64,
}

impl PortCounters {
    /// `self += inc`, field by field: the kernel adds a packet's counts to its CPU's slot with
    /// it, userspace sums slots and CPUs.
    #[inline(always)]
    pub fn add(&mut self, inc: &PortCounters) {
        self.packets += inc.packets;
        self.segments += inc.segments;
        self.bytes += inc.bytes;
        // Most packets carry none of these flags: skip four read-modify-writes.
        if inc.syn | inc.synack | inc.fin | inc.rst != 0 {
            self.syn += inc.syn;
            self.synack += inc.synack;
            self.fin += inc.fin;
            self.rst += inc.rst;
        }
    }
}

/// One slot of the per-port totals table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortSlot {
    /// [`PortKey::to_word`] of the key held, 0 when free.
    pub key: u64,
    /// This CPU's counters for the key.
    pub counters: PortCounters,
}

/// IP version 4 in [`FlowKey::family`].
pub const FAMILY_V4: u8 = 4;
/// IP version 6 in [`FlowKey::family`].
pub const FAMILY_V6: u8 = 6;

/// Key of the flow-detail map: the 5-tuple oriented from the node (local end first), so both
/// directions of a conversation share one entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Local address in network byte order; IPv4 uses the first word, the rest is zero.
    pub local_addr: [u32; 4],
    /// Remote address, same layout as `local_addr`.
    pub remote_addr: [u32; 4],
    /// Local port in host byte order (see [`PortKey`] for protocols without ports).
    pub local_port: u16,
    /// Remote port in host byte order.
    pub remote_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 2],
}

/// Value of the flow-detail map, one per CPU: the map is a per-CPU hash, so each CPU adds to
/// its own copy with plain (non-atomic) stores, and userspace merges the copies when it drains
/// an entry ([`FlowValue::merge`]). An insert from the kernel zeroes the other CPUs' copies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    /// Packets remote -> local.
    pub packets_in: u64,
    /// Bytes remote -> local.
    pub bytes_in: u64,
    /// Packets local -> remote.
    pub packets_out: u64,
    /// Bytes local -> remote.
    pub bytes_out: u64,
    /// Kernel monotonic time (CLOCK_MONOTONIC, coarse) of the flow's first packet; set only in
    /// the copy of the CPU that inserted the entry, 0 in the others.
    pub first_seen_ns: u64,
    /// Kernel monotonic time (coarse) of this CPU's latest packet of the flow (0: none). The
    /// program reads the clock only when the tick changed since this CPU's previous packet of
    /// the flow ([`FlowValue::last_tick`]); the coarse clock only moves at ticks, so the value
    /// is the one a read at the latest packet would give.
    pub last_seen_ns: u64,
    /// TCP SYN-without-ACK packets remote -> local.
    pub syns_in: u32,
    /// TCP SYN-without-ACK packets local -> remote.
    pub syns_out: u32,
    /// TCP flags seen remote -> local (OR of the flag bytes).
    pub flags_in: u8,
    /// TCP flags seen local -> remote.
    pub flags_out: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 2],
    /// Low 32 bits of `jiffies` at this CPU's latest packet of the flow (kernel-internal: when
    /// it changes, the program reads the clock into `last_seen_ns`; userspace ignores it).
    pub last_tick: u32,
}

impl FlowValue {
    /// Folds another CPU's copy into `self`: counts add, flags OR, first seen is the earliest
    /// non-zero one, last seen the latest.
    pub fn merge(&mut self, o: &Self) {
        self.packets_in = self.packets_in.wrapping_add(o.packets_in);
        self.bytes_in = self.bytes_in.wrapping_add(o.bytes_in);
        self.packets_out = self.packets_out.wrapping_add(o.packets_out);
        self.bytes_out = self.bytes_out.wrapping_add(o.bytes_out);
        self.syns_in = self.syns_in.saturating_add(o.syns_in);
        self.syns_out = self.syns_out.saturating_add(o.syns_out);
        self.flags_in |= o.flags_in;
        self.flags_out |= o.flags_out;
        if o.first_seen_ns != 0 && (self.first_seen_ns == 0 || o.first_seen_ns < self.first_seen_ns)
        {
            self.first_seen_ns = o.first_seen_ns;
        }
        if o.last_seen_ns > self.last_seen_ns {
            self.last_seen_ns = o.last_seen_ns;
        }
    }
}

/// Name of the per-CPU flow cache: [`FlowSlot`]s in two banks of `slots` each (bank `b` holds
/// indices `b * slots .. (b + 1) * slots`), an open-addressing table per CPU in front of
/// [`MAP_FLOWS`]. The program adds to the bank that [`MAP_CACHE_BANK`] names; userspace flips
/// the bank, waits until no program run can still be using the old one, reads it and zeroes it.
pub const MAP_FLOW_CACHE: &str = "PW_FLOW_CACHE";
/// Name of the one-entry array holding the flow cache's active bank (0 or 1).
pub const MAP_CACHE_BANK: &str = "PW_CACHE_BANK";
/// Name of the global the loader sets to the flow cache's slots per bank minus one.
pub const GLOBAL_FLOW_CACHE_MASK: &str = "PW_FLOW_CACHE_MASK";
/// Slots per bank of the flow cache in the object (a power of two; the loader sets the real
/// size), and the most the agent's default gives: it sizes the cache for the number of
/// possible CPUs within a memory budget, 16,384 on up to 8 CPUs and fewer on more. Each slot
/// costs 104 bytes per bank per CPU (3.25 MiB per CPU at 16,384). Flows that find no slot
/// within [`FLOW_CACHE_PROBES`] probes go to the flow map.
pub const DEFAULT_FLOW_CACHE_SLOTS: u32 = 16_384;
/// Largest number of flow-cache slots per bank the loader accepts (2^24: 1.6 GiB per bank and
/// CPU; larger requests are clamped to it).
pub const MAX_FLOW_CACHE_SLOTS: u32 = 1 << 24;
/// Slots probed (linearly) for a flow before it falls back to the flow map.
pub const FLOW_CACHE_PROBES: u32 = 4;

/// One slot of the flow cache: a flow's key (all zero when the slot is free: a used key's
/// `family` is never 0) and this CPU's counts of it in this bank's interval.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSlot {
    /// The flow held, or all zero.
    pub key: FlowKey,
    /// This CPU's counts of the flow (as in [`MAP_FLOWS`]).
    pub value: FlowValue,
}

impl FlowKey {
    /// The key as five 64-bit words (its native-endian bytes, eight at a time): what the flow
    /// cache hashes and compares. The fifth word holds the ports, protocol and family, so it is
    /// never 0 for a key the program makes (family 4 or 6) and 0 for a free slot.
    #[inline(always)]
    pub fn words(&self) -> [u64; 5] {
        let a = &self.local_addr;
        let b = &self.remote_addr;
        let w = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
        let lo = u32::from(self.local_port) | (u32::from(self.remote_port) << 16);
        let hi = u32::from(self.proto)
            | (u32::from(self.family) << 8)
            | (u32::from(self._pad[0]) << 16)
            | (u32::from(self._pad[1]) << 24);
        [
            w(a[0], a[1]),
            w(a[2], a[3]),
            w(b[0], b[1]),
            w(b[2], b[3]),
            w(lo, hi),
        ]
    }
}

/// The flow cache's hash of [`FlowKey::words`]: two multiplies in parallel, a fold and a final
/// Fibonacci multiply (high bits), a few nanoseconds where the flow map's jhash over 40 bytes
/// measured 20-25 on the real path.
#[inline(always)]
pub const fn flow_hash(w: &[u64; 5]) -> u32 {
    let a = w[0].wrapping_mul(0xC2B2_AE3D_27D4_EB4F) ^ w[1];
    let b = w[2].wrapping_mul(0x1656_67B1_9E37_79F9) ^ w[3];
    let mut x = a.wrapping_add(b) ^ w[4];
    x ^= x >> 29;
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32
}

/// Index in the counters array: every frame the program saw.
pub const CNT_PACKETS: usize = 0;
/// Flow not recorded: the flow map was full.
pub const CNT_FLOW_FULL: usize = 1;
/// Flow not recorded: another insert failure (EBUSY...).
pub const CNT_FLOW_ERR: usize = 2;
/// Port-total key not inserted: the totals map was full.
pub const CNT_PORT_FULL: usize = 3;
/// Port-total key not inserted: another failure (EBUSY...).
pub const CNT_PORT_ERR: usize = 4;
/// Frames with an impossible header field (IHL < 5, TCP data offset < 5, bad version...).
pub const CNT_MALFORMED: usize = 5;
/// Frames shorter than their headers.
pub const CNT_TRUNCATED: usize = 6;
/// Frames that are not IPv4 or IPv6 (ARP, LLDP...).
pub const CNT_NON_IP: usize = 7;
/// Non-first IP fragments (counted under port 0 of their protocol).
pub const CNT_FRAGMENTS: usize = 8;
/// Frames with a VLAN tag (in the packet or in skb metadata).
pub const CNT_VLAN: usize = 9;
/// Frames whose headers were not in the linear area and had to be pulled.
pub const CNT_PULLED: usize = 10;
/// Frames whose headers could not be pulled (bpf_skb_pull_data failed).
pub const CNT_PULL_FAILED: usize = 11;
/// IPv6 frames with more extension headers than the parser follows.
pub const CNT_EXT_LIMIT: usize = 12;
/// Number of counters (some slots are spare, for compatible additions).
pub const COUNTERS_LEN: usize = 16;

const _: () = assert!(core::mem::size_of::<PortKey>() == 8);
const _: () = assert!(core::mem::size_of::<PortCounters>() == 56);
const _: () = assert!(core::mem::size_of::<PortSlot>() == 64);
const _: () = assert!(DEFAULT_PORT_SLOTS.is_power_of_two());
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<FlowValue>() == 64);
const _: () = assert!(CNT_EXT_LIMIT < COUNTERS_LEN);
const _: () = assert!(core::mem::size_of::<FlowSlot>() == 104);
const _: () = assert!(DEFAULT_FLOW_CACHE_SLOTS.is_power_of_two());

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain #[repr(C)] integer structs without padding holes (sizes asserted above).
    unsafe impl aya::Pod for super::PortKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PortCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PortSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowSlot {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_key_words_round_trip_and_mark_the_slot_used() {
        let w = PortKey::to_word(65535, 132, SIDE_REMOTE, DIR_EGRESS);
        assert_ne!(w & PORT_SLOT_USED, 0);
        let k = PortKey::from_word(w).unwrap();
        assert_eq!(
            (k.port, k.proto, k.side, k.dir),
            (65535, 132, SIDE_REMOTE, DIR_EGRESS)
        );
        assert_eq!(PortKey::from_word(0), None);
        // Port 0 of protocol 0 is still a used slot, distinct from a free one.
        assert!(PortKey::from_word(PortKey::to_word(0, 0, 0, 0)).is_some());
    }

    #[test]
    fn every_field_of_a_port_key_changes_its_word() {
        let base = PortKey::to_word(443, 6, SIDE_LOCAL, DIR_INGRESS);
        for other in [
            PortKey::to_word(444, 6, SIDE_LOCAL, DIR_INGRESS),
            PortKey::to_word(443, 17, SIDE_LOCAL, DIR_INGRESS),
            PortKey::to_word(443, 6, SIDE_REMOTE, DIR_INGRESS),
            PortKey::to_word(443, 6, SIDE_LOCAL, DIR_EGRESS),
        ] {
            assert_ne!(other, base);
        }
        // Fields do not overlap: the highest value of each survives a round trip next to the
        // others' highest values.
        let k = PortKey::from_word(PortKey::to_word(u16::MAX, u8::MAX, u8::MAX, u8::MAX)).unwrap();
        assert_eq!(
            (k.port, k.proto, k.side, k.dir),
            (u16::MAX, u8::MAX, u8::MAX, u8::MAX)
        );
        assert_eq!(k._pad, [0; 3]);
    }

    #[test]
    fn every_key_the_programs_make_finds_a_slot_in_a_three_quarter_full_table() {
        // The realistic worst case the default table is sized for: every TCP and UDP port on
        // the remote side in one direction (131,072 keys of 131,072 slots would be full; this is
        // 3/4 of it), placed as the kernel places them.
        let slots = DEFAULT_PORT_SLOTS as usize;
        let mask = DEFAULT_PORT_SLOTS - 1;
        let mut table = [0u64; DEFAULT_PORT_SLOTS as usize];
        let mut placed = 0usize;
        let mut longest = 0u32;
        'keys: for i in 0..slots * 3 / 4 {
            let proto = if i % 2 == 0 { 6 } else { 17 };
            let w = PortKey::to_word((i / 2) as u16, proto, SIDE_REMOTE, DIR_INGRESS);
            let h = port_hash(w);
            for p in 0..PORT_PROBES {
                let s = &mut table[(h.wrapping_add(p) & mask) as usize];
                if *s == 0 {
                    *s = w;
                    placed += 1;
                    longest = longest.max(p);
                    continue 'keys;
                }
            }
        }
        assert_eq!(placed, slots * 3 / 4, "longest probe {longest}");
    }

    #[test]
    fn layouts_match_what_the_kernel_and_userspace_read() {
        use core::mem::offset_of;
        assert_eq!(offset_of!(PortSlot, key), 0);
        assert_eq!(offset_of!(PortSlot, counters), 8);
        assert_eq!(offset_of!(PortCounters, packets), 0);
        assert_eq!(offset_of!(PortCounters, rst), 48);
        assert_eq!(offset_of!(FlowKey, local_addr), 0);
        assert_eq!(offset_of!(FlowKey, remote_addr), 16);
        assert_eq!(offset_of!(FlowKey, local_port), 32);
        assert_eq!(offset_of!(FlowKey, remote_port), 34);
        assert_eq!(offset_of!(FlowKey, proto), 36);
        assert_eq!(offset_of!(FlowKey, family), 37);
        assert_eq!(offset_of!(FlowValue, syns_in), 48);
        assert_eq!(offset_of!(FlowValue, flags_in), 56);
        assert_eq!(offset_of!(FlowValue, last_tick), 60);
        // Counter indices are distinct and inside the array.
        let all = [
            CNT_PACKETS,
            CNT_FLOW_FULL,
            CNT_FLOW_ERR,
            CNT_PORT_FULL,
            CNT_PORT_ERR,
            CNT_MALFORMED,
            CNT_TRUNCATED,
            CNT_NON_IP,
            CNT_FRAGMENTS,
            CNT_VLAN,
            CNT_PULLED,
            CNT_PULL_FAILED,
            CNT_EXT_LIMIT,
        ];
        for (i, a) in all.iter().enumerate() {
            assert!(*a < COUNTERS_LEN);
            assert!(all[i + 1..].iter().all(|b| b != a), "index {a} used twice");
        }
    }

    /// Places `keys` in one bank of the default flow cache as the program does; returns how
    /// many found a slot within [`FLOW_CACHE_PROBES`].
    fn cache_placed(keys: impl Iterator<Item = FlowKey>) -> usize {
        let mask = DEFAULT_FLOW_CACHE_SLOTS - 1;
        let mut bank = [[0u64; 5]; DEFAULT_FLOW_CACHE_SLOTS as usize];
        let mut placed = 0;
        'keys: for k in keys {
            let w = k.words();
            let h = flow_hash(&w);
            for p in 0..FLOW_CACHE_PROBES {
                let s = &mut bank[(h.wrapping_add(p) & mask) as usize];
                if s[4] == 0 {
                    *s = w;
                    placed += 1;
                    continue 'keys;
                }
            }
        }
        placed
    }

    fn v4(local_port: u16, remote_port: u16, remote: u32) -> FlowKey {
        FlowKey {
            local_addr: [u32::from_be_bytes([10, 0, 0, 1]), 0, 0, 0],
            remote_addr: [remote, 0, 0, 0],
            local_port,
            remote_port,
            proto: 17,
            family: FAMILY_V4,
            _pad: [0; 2],
        }
    }

    #[test]
    fn flow_key_words_cover_every_field_and_a_used_key_is_never_a_free_slot() {
        let base = v4(53, 40000, 7);
        assert_ne!(base.words()[4], 0);
        let mut v6 = base;
        v6.family = FAMILY_V6;
        assert_ne!(v6.words()[4], 0);
        let mut changed = [base; 8];
        changed[0].local_addr[3] = 1;
        changed[1].remote_addr[1] = 1;
        changed[2].local_port = 54;
        changed[3].remote_port = 40001;
        changed[4].proto = 6;
        changed[5].family = FAMILY_V6;
        changed[6].local_addr[0] ^= 1 << 31;
        changed[7].remote_addr[2] = 1 << 31;
        for c in changed {
            assert_ne!(c.words(), base.words(), "{c:?}");
        }
        assert_eq!(FlowKey::default().words(), [0; 5]);
    }

    #[test]
    fn flows_that_differ_in_one_field_fill_half_the_cache_with_few_misses() {
        // Half a bank of flows (8,192) that differ only in the remote port, only in the remote
        // IPv4 address, or only in the last word of a remote IPv6 address: with a random hash,
        // linear probing at load 1/2 leaves about 3% of the keys without a slot within four
        // probes; a hash that ignores a field would leave most of them out.
        let n = DEFAULT_FLOW_CACHE_SLOTS as usize / 2;
        // Addresses as the program stores them: network byte order in a native word.
        let addr = |host: u32| u32::from_ne_bytes(host.to_be_bytes());
        let remote = addr(0xC0A8_0009);
        let by_port = cache_placed((0..n as u16).map(|i| v4(443, 1024 + i, remote)));
        let by_addr = cache_placed((0..n as u32).map(|i| v4(443, 50000, addr(0xC0A8_0000 + i))));
        let by_v6 = cache_placed((0..n as u32).map(|i| {
            let mut k = v4(443, 50000, 0);
            k.family = FAMILY_V6;
            k.remote_addr = [addr(0x2001_0db8), 0, 0, addr(i)];
            k
        }));
        for (what, placed) in [
            ("port", by_port),
            ("IPv4 address", by_addr),
            ("IPv6 address", by_v6),
        ] {
            assert!(placed * 100 >= n * 95, "by {what}: {placed} of {n} placed");
        }
    }

    #[test]
    fn neighbouring_ports_spread_over_the_table() {
        let mask = DEFAULT_PORT_SLOTS - 1;
        let mut seen = [false; 1024];
        for port in 0..1024u16 {
            let h = port_hash(PortKey::to_word(port, 6, SIDE_LOCAL, DIR_INGRESS)) & mask;
            seen[(h >> 7) as usize] = true;
        }
        // 1,024 consecutive ports land in most of 1,024 ranges of 128 slots.
        assert!(seen.iter().filter(|s| **s).count() > 600);
    }
}
