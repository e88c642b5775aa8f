//! Pure packet decoding: captured bytes plus their link type become a [`Decoded`] observation
//! or a counted [`Skip`] reason. No I/O, no clock, no allocation; never panics on packet data.
//!
//! Supported: Ethernet with any number (up to 8) of 802.1Q / 802.1ad / QinQ tags, Linux cooked
//! capture v1 and v2 (SLL, SLL2), raw IP (link types 101, 12, 14, 228, 229), BSD loopback
//! (NULL 0 and LOOP 108); IPv4 with options and fragments, IPv6 with hop-by-hop, routing,
//! fragment, destination-options and AH extension headers; TCP (ports and flags), UDP, SCTP,
//! ICMP and ICMPv6 (`type << 8 | code` as the destination "port"), anything else by protocol
//! number without ports.
//!
//! Byte counting (what [`Decoded::wire_bytes`] returns) follows the eBPF backend, which counts
//! the skb length including the Ethernet header:
//! - Ethernet (and VLAN-tagged) frames: the frame's wire length as captured;
//! - SLL/SLL2 whose device type is Ethernet or loopback: the wire length with the cooked
//!   header replaced by the 14-byte Ethernet header the frame had on the device; other device
//!   types (tun, ppp, ...): the length of the network-layer packet;
//! - raw IP and BSD loopback: the length of the IP packet (no link header existed on a
//!   Linux skb for such devices; the BSD 4-byte family word is not counted).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::clock::UnixNanos;
use crate::flow::{DST_V6, Direction, Endpoint, Health, Packet, PacketMeta, SRC_V6, Transport};

/// A capture's link-layer header type (the pcap LINKTYPE_* numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// LINKTYPE_NULL (0): 4-byte address family in the capturing host's byte order.
    Null,
    /// LINKTYPE_ETHERNET (1).
    Ethernet,
    /// LINKTYPE_RAW (101), and DLT_RAW's platform numbers 12 and 14: a bare IPv4/IPv6 packet.
    Raw,
    /// LINKTYPE_LOOP (108): 4-byte address family in network byte order.
    Loop,
    /// LINKTYPE_LINUX_SLL (113): Linux cooked capture v1.
    LinuxSll,
    /// LINKTYPE_IPV4 (228).
    Ipv4,
    /// LINKTYPE_IPV6 (229).
    Ipv6,
    /// LINKTYPE_LINUX_SLL2 (276): Linux cooked capture v2.
    LinuxSll2,
    /// Anything else, by number (frames are counted as not IP).
    Other(u32),
}

impl LinkType {
    /// Maps a pcap LINKTYPE_* (or DLT_*) number.
    pub fn from_number(n: u32) -> Self {
        match n {
            0 => Self::Null,
            1 => Self::Ethernet,
            12 | 14 | 101 => Self::Raw,
            108 => Self::Loop,
            113 => Self::LinuxSll,
            228 => Self::Ipv4,
            229 => Self::Ipv6,
            276 => Self::LinuxSll2,
            n => Self::Other(n),
        }
    }

    /// The LINKTYPE_* number (101 for every raw-IP variant).
    pub fn number(self) -> u32 {
        match self {
            Self::Null => 0,
            Self::Ethernet => 1,
            Self::Raw => 101,
            Self::Loop => 108,
            Self::LinuxSll => 113,
            Self::Ipv4 => 228,
            Self::Ipv6 => 229,
            Self::LinuxSll2 => 276,
            Self::Other(n) => n,
        }
    }
}

/// Why a frame did not become an observation; each reason maps to one [`Health`] counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Skip {
    /// A header field is impossible (bad IP version, header length below the minimum, ...).
    Malformed,
    /// The frame ends inside a header (cut by snaplen or shorter than it claims).
    Truncated,
    /// Not an IP packet (ARP, LLDP, 802.2 LLC, MPLS, PPPoE, unknown link type, ...).
    NonIp,
}

impl Skip {
    /// Adds this reason to the matching health counter (and to `packets_seen`).
    pub fn count(self, h: &mut Health) {
        h.packets_seen = h.packets_seen.saturating_add(1);
        let c = match self {
            Self::Malformed => &mut h.malformed,
            Self::Truncated => &mut h.truncated,
            Self::NonIp => &mut h.non_ip,
        };
        *c = c.saturating_add(1);
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed",
            Self::Truncated => "truncated",
            Self::NonIp => "not IP",
        })
    }
}

/// One decoded frame: everything of a [`Packet`] that the bytes say, in the flow table's
/// integer form (addresses as numbers: no `IpAddr` is built per packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Source address: IPv4 as its 32-bit number, IPv6 as its 128-bit number.
    pub src: u128,
    /// Destination address, as `src`.
    pub dst: u128,
    pub sport: u16,
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Whether the packet is IPv6 (both addresses then are).
    pub v6: bool,
    /// TCP flag byte (0 for other transports and for non-first fragments).
    pub tcp_flags: u8,
    /// Direction when the link header says it (SLL/SLL2 packet type); `None` otherwise.
    pub dir: Option<Direction>,
    /// Bytes to add to the captured wire length to get the counted length (see module docs).
    pub l2_adjust: i32,
}

impl Decoded {
    /// The transport protocol.
    pub fn transport(&self) -> Transport {
        Transport::from_proto(self.proto)
    }

    fn addr(&self, a: u128) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(a))
        } else {
            IpAddr::V4(Ipv4Addr::from(a as u32))
        }
    }

    /// The source endpoint.
    pub fn src(&self) -> Endpoint {
        Endpoint {
            addr: self.addr(self.src),
            port: self.sport,
        }
    }

    /// The destination endpoint.
    pub fn dst(&self) -> Endpoint {
        Endpoint {
            addr: self.addr(self.dst),
            port: self.dport,
        }
    }

    /// The counted length of a frame whose wire length (from the capture header) is
    /// `wire_len` (see the module docs for the definition).
    #[inline]
    pub fn wire_bytes(&self, wire_len: u32) -> u32 {
        wire_len.saturating_add_signed(self.l2_adjust)
    }

    /// Completes the observation with the capture's timestamp and wire length; `dir` from the
    /// caller (interface addresses, pcapng flags) wins over the link header's hint.
    #[inline]
    pub fn packet(&self, ts: UnixNanos, wire_len: u32, dir: Option<Direction>) -> Packet {
        Packet {
            src: self.src,
            dst: self.dst,
            ts,
            wire_len: self.wire_bytes(wire_len),
            segments: 1,
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            family: if self.v6 { SRC_V6 | DST_V6 } else { 0 },
            tcp_flags: self.tcp_flags,
            dir: dir.or(self.dir),
        }
    }

    /// As [`packet`](Self::packet), with typed endpoints.
    pub fn into_meta(self, ts: UnixNanos, wire_len: u32, dir: Option<Direction>) -> PacketMeta {
        PacketMeta {
            ts,
            transport: self.transport(),
            src: self.src(),
            dst: self.dst(),
            dir: dir.or(self.dir),
            wire_len: self.wire_bytes(wire_len),
            segments: 1,
            tcp_flags: self.tcp_flags,
        }
    }
}

const ETH_HLEN: i32 = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
const MAX_VLAN_TAGS: usize = 8;
const MAX_IPV6_EXT: usize = 16;

#[inline(always)]
fn be16(d: &[u8], off: usize) -> Option<u16> {
    match d.get(off..)? {
        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

#[inline(always)]
fn be32(d: &[u8], off: usize) -> Option<u32> {
    match d.get(off..)? {
        [a, b, c, e, ..] => Some(u32::from_be_bytes([*a, *b, *c, *e])),
        _ => None,
    }
}

#[inline(always)]
fn byte(d: &[u8], off: usize) -> Option<u8> {
    d.get(off).copied()
}

/// Decodes one captured frame of link type `link`.
#[inline(always)]
pub fn decode(link: LinkType, frame: &[u8]) -> Result<Decoded, Skip> {
    match link {
        LinkType::Ethernet => ethernet(frame, 0, None),
        LinkType::Raw => raw_ip(frame, 0, None),
        LinkType::Ipv4 => ipv4(frame, 0, None),
        LinkType::Ipv6 => ipv6(frame, 0, None),
        LinkType::LinuxSll => sll(frame),
        LinkType::LinuxSll2 => sll2(frame),
        LinkType::Null => bsd_loopback(frame, false),
        LinkType::Loop => bsd_loopback(frame, true),
        LinkType::Other(_) => Err(Skip::NonIp),
    }
}

/// Ethernet (and the part of SLL/SLL2 after the protocol field): VLAN tags, then IP.
#[inline(always)]
fn ethernet(frame: &[u8], adjust: i32, dir: Option<Direction>) -> Result<Decoded, Skip> {
    let mut ethertype = be16(frame, 12).ok_or(Skip::Truncated)?;
    let mut off = 14usize;
    for _ in 0..MAX_VLAN_TAGS {
        if !matches!(
            ethertype,
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD
        ) {
            break;
        }
        ethertype = be16(frame, off.wrapping_add(2)).ok_or(Skip::Truncated)?;
        off = off.wrapping_add(4);
    }
    after_ethertype(frame.get(off..).unwrap_or_default(), ethertype, adjust, dir)
}

#[inline(always)]
fn after_ethertype(
    l3: &[u8],
    ethertype: u16,
    adjust: i32,
    dir: Option<Direction>,
) -> Result<Decoded, Skip> {
    match ethertype {
        ETHERTYPE_IPV4 => ipv4(l3, adjust, dir),
        ETHERTYPE_IPV6 => ipv6(l3, adjust, dir),
        // Still tagged after MAX_VLAN_TAGS tags: not something we decode.
        _ => Err(Skip::NonIp),
    }
}

/// A bare IP packet: the version nibble decides.
#[inline]
fn raw_ip(l3: &[u8], adjust: i32, dir: Option<Direction>) -> Result<Decoded, Skip> {
    match byte(l3, 0).ok_or(Skip::Truncated)? >> 4 {
        4 => ipv4(l3, adjust, dir),
        6 => ipv6(l3, adjust, dir),
        _ => Err(Skip::Malformed),
    }
}

/// Linux packet types (sll_pkttype) to a direction.
fn pkttype_dir(t: u16) -> Option<Direction> {
    match t {
        // PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST
        0..=2 => Some(Direction::In),
        // PACKET_OUTGOING
        4 => Some(Direction::Out),
        // PACKET_OTHERHOST (promiscuous) and anything else
        _ => None,
    }
}

/// How the counted length differs from the captured wire length for a cooked header of
/// `hdr` bytes on a device of ARPHRD type `hatype`.
fn cooked_adjust(hatype: u16, hdr: i32) -> i32 {
    match hatype {
        // ARPHRD_ETHER, ARPHRD_LOOPBACK: the skb had a 14-byte Ethernet header.
        1 | 772 => ETH_HLEN.wrapping_sub(hdr),
        _ => hdr.wrapping_neg(),
    }
}

/// Linux cooked capture v1: pkttype(2) hatype(2) halen(2) addr(8) protocol(2).
fn sll(frame: &[u8]) -> Result<Decoded, Skip> {
    let pkttype = be16(frame, 0).ok_or(Skip::Truncated)?;
    let hatype = be16(frame, 2).ok_or(Skip::Truncated)?;
    let proto = be16(frame, 14).ok_or(Skip::Truncated)?;
    cooked_payload(frame, 16, proto, hatype, pkttype_dir(pkttype))
}

/// Linux cooked capture v2: protocol(2) reserved(2) ifindex(4) hatype(2) pkttype(1) halen(1)
/// addr(8).
fn sll2(frame: &[u8]) -> Result<Decoded, Skip> {
    let proto = be16(frame, 0).ok_or(Skip::Truncated)?;
    let hatype = be16(frame, 8).ok_or(Skip::Truncated)?;
    let pkttype = byte(frame, 10).ok_or(Skip::Truncated)?;
    if frame.len() < 20 {
        return Err(Skip::Truncated);
    }
    cooked_payload(frame, 20, proto, hatype, pkttype_dir(u16::from(pkttype)))
}

fn cooked_payload(
    frame: &[u8],
    hdr: usize,
    proto: u16,
    hatype: u16,
    dir: Option<Direction>,
) -> Result<Decoded, Skip> {
    let adjust = cooked_adjust(hatype, i32::try_from(hdr).unwrap_or(0));
    let rest = frame.get(hdr..).ok_or(Skip::Truncated)?;
    match proto {
        ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD => {
            // libpcap re-inserts VLAN tags after the cooked header: tag(2) ethertype(2) ...
            let mut ethertype = proto;
            let mut off = 0usize;
            for _ in 0..MAX_VLAN_TAGS {
                if !matches!(
                    ethertype,
                    ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD
                ) {
                    break;
                }
                ethertype = be16(rest, off.wrapping_add(2)).ok_or(Skip::Truncated)?;
                off = off.wrapping_add(4);
            }
            after_ethertype(rest.get(off..).unwrap_or_default(), ethertype, adjust, dir)
        }
        _ => after_ethertype(rest, proto, adjust, dir),
    }
}

/// BSD loopback: a 4-byte address family (host order for NULL, network order for LOOP).
fn bsd_loopback(frame: &[u8], network_order: bool) -> Result<Decoded, Skip> {
    let raw = be32(frame, 0).ok_or(Skip::Truncated)?;
    let family = if network_order {
        raw
    } else {
        raw.min(raw.swap_bytes())
    };
    let l3 = frame.get(4..).unwrap_or_default();
    match family {
        2 => ipv4(l3, -4, None),
        // AF_INET6 on Linux, NetBSD/OpenBSD, FreeBSD, macOS.
        10 | 24 | 28 | 30 => ipv6(l3, -4, None),
        _ => Err(Skip::NonIp),
    }
}

#[inline(always)]
fn ipv4(d: &[u8], adjust: i32, dir: Option<Direction>) -> Result<Decoded, Skip> {
    let [
        vihl,
        _tos,
        tl0,
        tl1,
        _id0,
        _id1,
        fr0,
        fr1,
        _ttl,
        proto,
        _c0,
        _c1,
        s0,
        s1,
        s2,
        s3,
        d0,
        d1,
        d2,
        d3,
        ..,
    ] = *d
    else {
        return Err(Skip::Truncated);
    };
    if vihl >> 4 != 4 {
        return Err(Skip::Malformed);
    }
    let hlen = usize::from(vihl & 0x0f) << 2;
    if hlen < 20 {
        return Err(Skip::Malformed);
    }
    let total = usize::from(u16::from_be_bytes([tl0, tl1]));
    // A total length of 0 is what TSO/GSO super-packets carry in captures: use what we have.
    if total != 0 && total < hlen {
        return Err(Skip::Malformed);
    }
    let end = if total == 0 {
        d.len()
    } else {
        total.min(d.len())
    };
    let l4 = d.get(hlen..end).ok_or(Skip::Truncated)?;
    let frag_off = u16::from_be_bytes([fr0, fr1]) & 0x1fff;
    let src = u128::from(u32::from_be_bytes([s0, s1, s2, s3]));
    let dst = u128::from(u32::from_be_bytes([d0, d1, d2, d3]));
    transport(proto, l4, frag_off != 0, (src, dst, false), adjust, dir)
}

#[inline]
fn ipv6(d: &[u8], adjust: i32, dir: Option<Direction>) -> Result<Decoded, Skip> {
    let hdr: &[u8; 40] = d
        .get(..40)
        .and_then(|h| h.try_into().ok())
        .ok_or(Skip::Truncated)?;
    let [v, _, _, _, pl0, pl1, next, ..] = *hdr;
    if v >> 4 != 6 {
        return Err(Skip::Malformed);
    }
    let mut s = [0u8; 16];
    let mut t = [0u8; 16];
    if let (Some(a), Some(b)) = (hdr.get(8..24), hdr.get(24..40)) {
        s.copy_from_slice(a);
        t.copy_from_slice(b);
    }
    let src = u128::from_be_bytes(s);
    let dst = u128::from_be_bytes(t);
    let payload = usize::from(u16::from_be_bytes([pl0, pl1]));
    let rest = d.get(40..).unwrap_or_default();
    // Payload length 0: jumbogram or GSO super-packet; use what we have.
    let mut l4 = if payload == 0 {
        rest
    } else {
        rest.get(..payload.min(rest.len())).unwrap_or(rest)
    };
    let mut next = next;
    let mut later_fragment = false;
    for _ in 0..MAX_IPV6_EXT {
        match next {
            // Hop-by-hop, routing, destination options, mobility, HIP, shim6: (len + 1) * 8.
            0 | 43 | 60 | 135 | 139 | 140 => {
                let [nh, len, ..] = *l4 else {
                    return Err(Skip::Truncated);
                };
                let n = (usize::from(len) + 1) << 3;
                l4 = l4.get(n..).ok_or(Skip::Truncated)?;
                next = nh;
            }
            // Fragment: fixed 8 bytes; offset in the upper 13 bits of bytes 2..4.
            44 => {
                let [nh, _, o0, o1, ..] = *l4 else {
                    return Err(Skip::Truncated);
                };
                if l4.len() < 8 {
                    return Err(Skip::Truncated);
                }
                later_fragment |= u16::from_be_bytes([o0, o1]) >> 3 != 0;
                l4 = l4.get(8..).unwrap_or_default();
                next = nh;
                if later_fragment {
                    break;
                }
            }
            // Authentication header: (len + 2) * 4.
            51 => {
                let [nh, len, ..] = *l4 else {
                    return Err(Skip::Truncated);
                };
                let n = (usize::from(len) + 2) << 2;
                l4 = l4.get(n..).ok_or(Skip::Truncated)?;
                next = nh;
            }
            _ => return transport(next, l4, later_fragment, (src, dst, true), adjust, dir),
        }
    }
    if later_fragment {
        return transport(next, l4, true, (src, dst, true), adjust, dir);
    }
    // An extension-header chain longer than any real stack sends.
    Err(Skip::Malformed)
}

#[inline(always)]
fn transport(
    proto: u8,
    l4: &[u8],
    later_fragment: bool,
    (src, dst, v6): (u128, u128, bool),
    adjust: i32,
    dir: Option<Direction>,
) -> Result<Decoded, Skip> {
    let (sport, dport, flags) = if later_fragment {
        (0, 0, 0)
    } else {
        match proto {
            // TCP
            6 => match *l4 {
                [
                    a,
                    b,
                    c,
                    e,
                    _,
                    _,
                    _,
                    _,
                    _,
                    _,
                    _,
                    _,
                    off,
                    flags,
                    _,
                    _,
                    _,
                    _,
                    _,
                    _,
                    ..,
                ] => {
                    if off >> 4 < 5 {
                        return Err(Skip::Malformed);
                    }
                    (
                        u16::from_be_bytes([a, b]),
                        u16::from_be_bytes([c, e]),
                        flags,
                    )
                }
                _ => return Err(Skip::Truncated),
            },
            // UDP
            17 => match *l4 {
                [a, b, c, e, _, _, _, _, ..] => {
                    (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, e]), 0)
                }
                _ => return Err(Skip::Truncated),
            },
            // SCTP
            132 => match *l4 {
                [a, b, c, e, _, _, _, _, _, _, _, _, ..] => {
                    (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, e]), 0)
                }
                _ => return Err(Skip::Truncated),
            },
            // ICMP, ICMPv6
            1 | 58 => match *l4 {
                [ty, code, _, _, ..] => (0, u16::from_be_bytes([ty, code]), 0),
                _ => return Err(Skip::Truncated),
            },
            _ => (0, 0, 0),
        }
    };
    Ok(Decoded {
        src,
        dst,
        sport,
        dport,
        proto,
        v6,
        tcp_flags: flags,
        dir,
        l2_adjust: adjust,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::capture::testdata as td;

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 0, 0, 2];
    const A6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const B6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::from(a)
    }
    fn v6(a: [u8; 16]) -> IpAddr {
        IpAddr::from(a)
    }
    fn tcp_syn() -> Vec<u8> {
        td::ipv4(A, B, 6, &[], 0, false, &td::tcp(40000, 443, 0x02))
    }
    fn check_tcp_syn(d: &Decoded) {
        assert_eq!(d.transport(), Transport::Tcp);
        assert_eq!((d.src().addr, d.src().port), (v4(A), 40000));
        assert_eq!((d.dst().addr, d.dst().port), (v4(B), 443));
        assert_eq!(d.tcp_flags, 0x02);
    }

    #[test]
    fn ethernet_ipv4_tcp() {
        let f = td::ethernet(&[], 0x0800, &tcp_syn());
        let d = decode(LinkType::Ethernet, &f).unwrap();
        check_tcp_syn(&d);
        assert_eq!(d.dir, None);
        assert_eq!(d.wire_bytes(f.len() as u32), f.len() as u32);
    }

    #[test]
    fn single_and_double_vlan_tags() {
        for tags in [
            vec![(0x8100, 10)],
            vec![(0x88a8, 100), (0x8100, 10)],
            vec![(0x9100, 7), (0x8100, 8), (0x8100, 9)],
        ] {
            let f = td::ethernet(&tags, 0x0800, &tcp_syn());
            check_tcp_syn(&decode(LinkType::Ethernet, &f).unwrap());
        }
        let f = td::ethernet(&[(0x8100, 10)], 0x0806, &[0u8; 28]);
        assert_eq!(decode(LinkType::Ethernet, &f), Err(Skip::NonIp));
        // Cut inside the tag.
        let f = td::ethernet(&[(0x8100, 10)], 0x0800, &[]);
        assert_eq!(decode(LinkType::Ethernet, &f[..16]), Err(Skip::Truncated));
    }

    #[test]
    fn ipv4_options_are_skipped() {
        let p = td::ipv4(
            A,
            B,
            17,
            &[1, 1, 1, 0, 0x94, 4, 0, 0],
            0,
            false,
            &td::udp(5353, 53, 4),
        );
        let d = decode(LinkType::Raw, &p).unwrap();
        assert_eq!(d.transport(), Transport::Udp);
        assert_eq!((d.src().port, d.dst().port), (5353, 53));
    }

    #[test]
    fn ipv4_fragments_first_has_ports_later_do_not() {
        let first = td::ipv4(A, B, 17, &[], 0, true, &td::udp(1000, 2000, 16));
        let d = decode(LinkType::Raw, &first).unwrap();
        assert_eq!((d.src().port, d.dst().port), (1000, 2000));
        let later = td::ipv4(A, B, 17, &[], 3, false, &[0xffu8; 16]);
        let d = decode(LinkType::Raw, &later).unwrap();
        assert_eq!(d.transport(), Transport::Udp);
        assert_eq!((d.src().port, d.dst().port, d.tcp_flags), (0, 0, 0));
    }

    #[test]
    fn ethernet_padding_is_not_read_as_transport_header() {
        // An IPv4 packet whose total length ends before a TCP header; the frame is padded.
        let mut p = td::ipv4(A, B, 6, &[], 0, false, &[]);
        p.extend_from_slice(&[0u8; 26]);
        assert_eq!(decode(LinkType::Raw, &p), Err(Skip::Truncated));
    }

    #[test]
    fn ipv4_bad_fields_are_malformed() {
        let mut p = tcp_syn();
        p[0] = 0x44; // IHL 4
        assert_eq!(decode(LinkType::Raw, &p), Err(Skip::Malformed));
        let mut p = tcp_syn();
        p[2..4].copy_from_slice(&10u16.to_be_bytes()); // total length below the header
        assert_eq!(decode(LinkType::Raw, &p), Err(Skip::Malformed));
        let mut p = tcp_syn();
        p[0] = 0x55; // version 5
        assert_eq!(
            decode(LinkType::Ethernet, &td::ethernet(&[], 0x0800, &p)),
            Err(Skip::Malformed)
        );
        let mut p = tcp_syn();
        p[20 + 12] = 0x40; // TCP data offset 4
        assert_eq!(decode(LinkType::Raw, &p), Err(Skip::Malformed));
    }

    #[test]
    fn ipv4_total_length_zero_is_a_gso_packet() {
        let mut p = tcp_syn();
        p[2..4].copy_from_slice(&[0, 0]);
        check_tcp_syn(&decode(LinkType::Raw, &p).unwrap());
    }

    #[test]
    fn every_cut_of_a_frame_is_truncated_never_a_panic() {
        let f = td::ethernet(
            &[(0x8100, 1)],
            0x86dd,
            &td::ipv6(
                A6,
                B6,
                &[(0, vec![]), (44, td::frag6(0, true))],
                6,
                &td::tcp(1, 2, 0x12),
            ),
        );
        for n in 0..f.len() {
            let r = decode(LinkType::Ethernet, &f[..n]);
            assert_eq!(r, Err(Skip::Truncated), "cut at {n}");
        }
        assert!(decode(LinkType::Ethernet, &f).is_ok());
    }

    #[test]
    fn ipv6_extension_headers() {
        let exts = vec![
            (0u8, vec![]),
            (43, vec![0, 0, 0, 0, 0, 0]),
            (60, vec![1; 10]),
            (51, vec![0; 10]),
        ];
        let p = td::ipv6(A6, B6, &exts, 6, &td::tcp(55000, 22, 0x18));
        let d = decode(LinkType::Raw, &p).unwrap();
        assert_eq!(d.transport(), Transport::Tcp);
        assert_eq!((d.src().addr, d.dst().addr), (v6(A6), v6(B6)));
        assert_eq!((d.src().port, d.dst().port, d.tcp_flags), (55000, 22, 0x18));
    }

    #[test]
    fn ipv6_fragments() {
        let first = td::ipv6(A6, B6, &[(44, td::frag6(0, true))], 17, &td::udp(7, 8, 32));
        let d = decode(LinkType::Ipv6, &first).unwrap();
        assert_eq!(
            (d.transport(), d.src().port, d.dst().port),
            (Transport::Udp, 7, 8)
        );
        let later = td::ipv6(A6, B6, &[(44, td::frag6(4, false))], 17, &[0xaa; 32]);
        let d = decode(LinkType::Ipv6, &later).unwrap();
        assert_eq!(
            (d.transport(), d.src().port, d.dst().port),
            (Transport::Udp, 0, 0)
        );
    }

    #[test]
    fn ipv6_endless_extension_chain_is_malformed() {
        let exts: Vec<(u8, Vec<u8>)> = (0..20).map(|_| (60u8, vec![])).collect();
        let p = td::ipv6(A6, B6, &exts, 6, &td::tcp(1, 2, 0));
        assert_eq!(decode(LinkType::Raw, &p), Err(Skip::Malformed));
    }

    #[test]
    fn udp_sctp_icmp_and_other_protocols() {
        let d = decode(
            LinkType::Raw,
            &td::ipv4(A, B, 132, &[], 0, false, &td::sctp(3868, 3868)),
        )
        .unwrap();
        assert_eq!(
            (d.transport(), d.src().port, d.dst().port),
            (Transport::Sctp, 3868, 3868)
        );
        let d = decode(
            LinkType::Raw,
            &td::ipv4(A, B, 1, &[], 0, false, &td::icmp(8, 0)),
        )
        .unwrap();
        assert_eq!(
            (d.transport(), d.src().port, d.dst().port),
            (Transport::Icmp, 0, 0x0800)
        );
        let d = decode(LinkType::Raw, &td::ipv6(A6, B6, &[], 58, &td::icmp(135, 0))).unwrap();
        assert_eq!((d.transport(), d.dst().port), (Transport::Icmpv6, 135 << 8));
        let d = decode(LinkType::Raw, &td::ipv4(A, B, 47, &[], 0, false, &[0u8; 4])).unwrap();
        assert_eq!(
            (d.transport(), d.src().port, d.dst().port),
            (Transport::Other(47), 0, 0)
        );
        let d = decode(LinkType::Raw, &td::ipv6(A6, B6, &[], 59, &[])).unwrap();
        assert_eq!(d.transport(), Transport::Other(59));
    }

    #[test]
    fn linux_cooked_v1_direction_and_length() {
        let p = tcp_syn();
        let out = td::sll(4, 1, 0x0800, &p);
        let d = decode(LinkType::LinuxSll, &out).unwrap();
        check_tcp_syn(&d);
        assert_eq!(d.dir, Some(Direction::Out));
        // Counted as the Ethernet frame it was: IP packet + 14.
        assert_eq!(d.wire_bytes(out.len() as u32), p.len() as u32 + 14);
        let d = decode(LinkType::LinuxSll, &td::sll(0, 1, 0x0800, &p)).unwrap();
        assert_eq!(d.dir, Some(Direction::In));
        let d = decode(LinkType::LinuxSll, &td::sll(3, 1, 0x0800, &p)).unwrap();
        assert_eq!(d.dir, None);
        // A tun device (ARPHRD_NONE): just the IP packet.
        let f = td::sll(0, 0xfffe, 0x0800, &p);
        let d = decode(LinkType::LinuxSll, &f).unwrap();
        assert_eq!(d.wire_bytes(f.len() as u32), p.len() as u32);
        // VLAN re-inserted by libpcap.
        let mut tagged = vec![0, 10, 0x08, 0x00];
        tagged.extend_from_slice(&p);
        check_tcp_syn(&decode(LinkType::LinuxSll, &td::sll(0, 1, 0x8100, &tagged)).unwrap());
        assert_eq!(
            decode(LinkType::LinuxSll, &td::sll(0, 1, 0x0806, &[0; 28])),
            Err(Skip::NonIp)
        );
    }

    #[test]
    fn linux_cooked_v2() {
        let p = td::ipv6(A6, B6, &[], 17, &td::udp(546, 547, 10));
        let f = td::sll2(4, 772, 0x86dd, &p);
        let d = decode(LinkType::LinuxSll2, &f).unwrap();
        assert_eq!(
            (d.transport(), d.src().port, d.dst().port),
            (Transport::Udp, 546, 547)
        );
        assert_eq!(d.dir, Some(Direction::Out));
        assert_eq!(d.wire_bytes(f.len() as u32), p.len() as u32 + 14);
        assert_eq!(decode(LinkType::LinuxSll2, &f[..19]), Err(Skip::Truncated));
    }

    #[test]
    fn bsd_loopback_null_and_loop() {
        let p = tcp_syn();
        for (fam, net) in [(2u32, false), (2, true)] {
            let f = td::bsd_loop(fam, net, &p);
            let link = if net { LinkType::Loop } else { LinkType::Null };
            let d = decode(link, &f).unwrap();
            check_tcp_syn(&d);
            assert_eq!(d.wire_bytes(f.len() as u32), p.len() as u32);
        }
        let p6 = td::ipv6(A6, B6, &[], 6, &td::tcp(1, 2, 0));
        for fam in [24u32, 28, 30] {
            assert!(decode(LinkType::Null, &td::bsd_loop(fam, false, &p6)).is_ok());
            assert!(decode(LinkType::Loop, &td::bsd_loop(fam, true, &p6)).is_ok());
        }
        assert_eq!(
            decode(LinkType::Null, &td::bsd_loop(7, false, &p)),
            Err(Skip::NonIp)
        );
    }

    #[test]
    fn raw_ip_link_types() {
        let p = tcp_syn();
        for n in [12, 14, 101, 228] {
            check_tcp_syn(&decode(LinkType::from_number(n), &p).unwrap());
        }
        assert_eq!(decode(LinkType::Raw, &[0x10, 0, 0]), Err(Skip::Malformed));
        assert_eq!(decode(LinkType::Raw, &[]), Err(Skip::Truncated));
        assert_eq!(decode(LinkType::from_number(147), &p), Err(Skip::NonIp));
    }

    #[test]
    fn snaplen_cut_after_headers_still_decodes() {
        let p = td::ipv4(A, B, 17, &[], 0, false, &td::udp(1, 2, 1400));
        let f = td::ethernet(&[], 0x0800, &p);
        let d = decode(LinkType::Ethernet, &f[..64]).unwrap();
        assert_eq!((d.src().port, d.dst().port), (1, 2));
        let m = d.into_meta(7, f.len() as u32, None);
        assert_eq!(m.wire_len, f.len() as u32);
    }

    #[test]
    fn skip_reasons_land_in_their_counters() {
        let mut h = Health::default();
        Skip::Malformed.count(&mut h);
        Skip::Truncated.count(&mut h);
        Skip::Truncated.count(&mut h);
        Skip::NonIp.count(&mut h);
        assert_eq!(
            (h.malformed, h.truncated, h.non_ip, h.packets_seen),
            (1, 2, 1, 4)
        );
    }
}
