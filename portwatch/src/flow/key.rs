//! Flow keys and counters: the typed hand-off between capture backends and classification.
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::clock::UnixNanos;

/// The transport protocol of a flow, by IP protocol number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv6,
    /// Any other IP protocol, by number.
    Other(u8),
}

impl Transport {
    /// Maps an IP protocol number.
    pub fn from_proto(p: u8) -> Self {
        match p {
            6 => Self::Tcp,
            17 => Self::Udp,
            132 => Self::Sctp,
            1 => Self::Icmp,
            58 => Self::Icmpv6,
            n => Self::Other(n),
        }
    }
    /// The IP protocol number.
    pub fn proto(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
            Self::Icmp => 1,
            Self::Icmpv6 => 58,
            Self::Other(n) => n,
        }
    }
    /// Whether the protocol carries port numbers.
    pub fn has_ports(self) -> bool {
        matches!(self, Self::Tcp | Self::Udp | Self::Sctp)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp => f.write_str("tcp"),
            Self::Udp => f.write_str("udp"),
            Self::Sctp => f.write_str("sctp"),
            Self::Icmp => f.write_str("icmp"),
            Self::Icmpv6 => f.write_str("icmpv6"),
            Self::Other(n) => write!(f, "ip-proto-{n}"),
        }
    }
}

/// One end of a flow. For ICMP the port holds `type << 8 | code` of the first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// A flow as seen from the node: `local` is this node's end, `remote` the peer.
///
/// Backends that cannot know which end is local (an offline capture without node addresses)
/// put the destination of the first packet they saw in `local` and say so in
/// [`FlowRecord::vantage_known`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlowKey {
    pub transport: Transport,
    pub local: Endpoint,
    pub remote: Endpoint,
}

/// Packet direction relative to the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Towards the node (TC ingress).
    In,
    /// Away from the node (TC egress).
    Out,
}

/// Which end of a packet a port belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Local,
    Remote,
}

/// TCP flags seen (bit layout of the TCP header's flag byte: FIN=0x01, SYN=0x02, RST=0x04,
/// PSH=0x08, ACK=0x10, URG=0x20, ECE=0x40, CWR=0x80).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
    /// Whether every bit of `mask` was seen.
    pub fn has(self, mask: u8) -> bool {
        self.0 & mask == mask
    }
}

/// Packets and bytes in one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub packets: u64,
    pub bytes: u64,
}

impl Counts {
    /// Adds `other` (saturating).
    pub fn add(&mut self, other: Counts) {
        self.packets = self.packets.saturating_add(other.packets);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

/// Per-flow detail for one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStats {
    /// remote -> local.
    pub inbound: Counts,
    /// local -> remote.
    pub outbound: Counts,
    /// TCP flags seen on inbound packets.
    pub flags_in: TcpFlags,
    /// TCP flags seen on outbound packets.
    pub flags_out: TcpFlags,
    /// TCP SYN-without-ACK seen inbound (the remote end opened the connection).
    pub syn_in: u32,
    /// TCP SYN-without-ACK seen outbound (this node opened the connection).
    pub syn_out: u32,
    pub first_seen: UnixNanos,
    pub last_seen: UnixNanos,
}

impl FlowStats {
    /// Merges another interval's (or CPU's) detail for the same flow.
    pub fn merge(&mut self, o: &FlowStats) {
        self.inbound.add(o.inbound);
        self.outbound.add(o.outbound);
        self.flags_in.0 |= o.flags_in.0;
        self.flags_out.0 |= o.flags_out.0;
        self.syn_in = self.syn_in.saturating_add(o.syn_in);
        self.syn_out = self.syn_out.saturating_add(o.syn_out);
        self.first_seen = if self.first_seen == 0 {
            o.first_seen
        } else {
            self.first_seen.min(o.first_seen.max(1))
        };
        self.last_seen = self.last_seen.max(o.last_seen);
    }
}

/// A flow and its detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    pub key: FlowKey,
    pub stats: FlowStats,
    /// False when the backend could not tell which end is the node (see [`FlowKey`]).
    pub vantage_known: bool,
}

/// Lossless per-port counters for one interval (deltas).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCounts {
    pub packets: u64,
    /// Wire-equivalent segments (GSO split), >= packets.
    pub segments: u64,
    pub bytes: u64,
    pub syn: u64,
    pub synack: u64,
    pub fin: u64,
    pub rst: u64,
}

impl PortCounts {
    /// Adds `o` (saturating).
    pub fn add(&mut self, o: &PortCounts) {
        self.packets = self.packets.saturating_add(o.packets);
        self.segments = self.segments.saturating_add(o.segments);
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.syn = self.syn.saturating_add(o.syn);
        self.synack = self.synack.saturating_add(o.synack);
        self.fin = self.fin.saturating_add(o.fin);
        self.rst = self.rst.saturating_add(o.rst);
    }
    /// Whether nothing was counted.
    pub fn is_zero(&self) -> bool {
        *self == PortCounts::default()
    }
}

/// Per-port totals keyed by transport, port, side and direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortTotal {
    pub transport: Transport,
    pub port: u16,
    pub side: Side,
    pub dir: Direction,
    pub counts: PortCounts,
}

impl PortTotal {
    /// A total from its key as maps hold it, (transport, port, side, direction), and counts.
    pub fn from_key(
        (transport, port, side, dir): (Transport, u16, Side, Direction),
        counts: PortCounts,
    ) -> Self {
        Self {
            transport,
            port,
            side,
            dir,
            counts,
        }
    }
}
