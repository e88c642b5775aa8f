//! Types shared by the kernel program and the userspace agent: map names, sizes and the
//! `#[repr(C)]` layouts of every map key and value. No logic lives here.
#![no_std]

/// The nightly toolchain that builds the eBPF object (pinned; `cargo xtask setup` installs it).
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";

/// Name of the per-CPU per-port totals map (never deleted from by userspace).
pub const MAP_PORT_TOTALS: &str = "PW_PORT_TOTALS";
/// Name of the bounded flow-detail hash map (drained by userspace every interval).
pub const MAP_FLOWS: &str = "PW_FLOWS";
/// Name of the per-CPU error/health counters array.
pub const MAP_COUNTERS: &str = "PW_COUNTERS";

/// Default capacity of the flow-detail map (overridable at load time).
pub const DEFAULT_FLOW_CAPACITY: u32 = 65_536;
/// Capacity of the per-port totals map: 3 transports with ports x 65,536 ports x 2 sides x
/// 2 directions would be 786,432; real nodes see far fewer, and overflow is counted.
pub const PORT_TOTALS_CAPACITY: u32 = 262_144;

/// Packet direction as seen by the hook.
pub const DIR_INGRESS: u8 = 0;
/// Packet direction as seen by the hook.
pub const DIR_EGRESS: u8 = 1;

/// Which end of the packet the port in a [`PortKey`] belongs to.
pub const SIDE_LOCAL: u8 = 0;
/// Which end of the packet the port in a [`PortKey`] belongs to.
pub const SIDE_REMOTE: u8 = 1;

/// Key of the per-port totals map.
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
    /// Bytes (skb length, L2 included).
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

const _: () = assert!(core::mem::size_of::<PortKey>() == 8);
const _: () = assert!(core::mem::size_of::<PortCounters>() == 56);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain #[repr(C)] integer structs without padding holes.
    unsafe impl aya::Pod for super::PortKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PortCounters {}
}
