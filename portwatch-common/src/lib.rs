//! Types shared by the kernel program and the userspace agent: map names, sizes, counter
//! indices and the `#[repr(C)]` layouts of every map key and value. No logic lives here; the
//! kernel side (portwatch-ebpf) and the user side (portwatch::capture::ebpf) both depend on it.
#![no_std]

/// The nightly toolchain that builds the eBPF object (pinned; `cargo xtask setup` installs it).
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";

/// Name of the per-CPU per-port totals map (never deleted from by userspace).
pub const MAP_PORT_TOTALS: &str = "PW_PORT_TOTALS";
/// Name of the bounded flow-detail hash map (drained by userspace every interval).
pub const MAP_FLOWS: &str = "PW_FLOWS";
/// Name of the per-CPU health counters array: one u64 per `CNT_*` index.
pub const MAP_COUNTERS: &str = "PW_COUNTERS";

/// Name of the program attached to TC ingress.
pub const PROG_INGRESS: &str = "portwatch_ingress";
/// Name of the program attached to TC egress.
pub const PROG_EGRESS: &str = "portwatch_egress";

/// Version of the map layouts below. Pinned maps whose key or value sizes do not match are
/// replaced on start (a layout change cannot continue old totals).
pub const LAYOUT_VERSION: u32 = 1;

/// Default capacity of the flow-detail map (overridable at load time).
pub const DEFAULT_FLOW_CAPACITY: u32 = 65_536;
/// Default capacity of the per-port totals map (overridable at load time). The map is
/// preallocated: an insert during a burst of new keys must never fail for want of memory (a
/// map created with `BPF_F_NO_PREALLOC` lost about 4% of new keys in a flood of new source
/// ports on this kernel). Each entry costs about 72 bytes plus 56 bytes per CPU. 131,072 keys
/// hold every remote port of TCP and UDP in one direction; an insert into a full map is counted
/// ([`CNT_PORT_FULL`]).
pub const DEFAULT_PORT_CAPACITY: u32 = 131_072;

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

/// Value of the per-port totals map (one per CPU; userspace sums them).
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

/// Value of the flow-detail map. Updated with atomic adds by every CPU.
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
    /// Kernel monotonic time (CLOCK_MONOTONIC, coarse) of the first packet.
    pub first_seen_ns: u64,
    /// Kernel monotonic time of the latest packet.
    pub last_seen_ns: u64,
    /// TCP flags seen: inbound in bits 0..8, outbound in bits 8..16 (64 bits wide so that
    /// the program can update it with a 64-bit atomic OR, which every BPF ISA has).
    pub tcp_flags: u64,
    /// TCP SYN-without-ACK packets: inbound in the low 32 bits, outbound in the high 32 bits
    /// (updated with one 64-bit atomic add).
    pub syns: u64,
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
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<FlowValue>() == 64);
const _: () = assert!(CNT_EXT_LIMIT < COUNTERS_LEN);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain #[repr(C)] integer structs without padding holes (sizes asserted above).
    unsafe impl aya::Pod for super::PortKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PortCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowValue {}
}
