//! Offline capture files: a zero-copy pcap and pcapng reader over a byte slice (a memory map
//! in practice) and the driver that feeds their frames through [`decode`](super::decode) into a
//! [`FlowTable`]. Reads files only; never consults the spec, never panics on file contents.
//!
//! A truncated or corrupt file is not fatal: the frames before the damage are counted and the
//! damage is reported with its byte offset ([`FormatError`]).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fmt;
use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::decode::{self, Decoded, LinkType, Skip};
use crate::clock::UnixNanos;
use crate::flow::table::BATCH;
use crate::flow::{Direction, FlowTable, Packet};

/// Largest captured length a record may claim (libpcap's own limit is 256 KiB; D-Bus and
/// USB captures go to 128 MiB). Anything larger means the file is corrupt.
const MAX_RECORD: u32 = 128 << 20;
/// How far ahead of the record being read the reader prefetches the file, in bytes (a few
/// dozen typical records; 1 and 4 KiB measured alike).
const READ_AHEAD: usize = 2048;

/// The container format of a capture file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Classic libpcap format (microsecond or nanosecond timestamps, either byte order).
    Pcap,
    /// pcapng (any number of sections and interfaces).
    Pcapng,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pcap => "pcap",
            Self::Pcapng => "pcapng",
        })
    }
}

/// What is wrong at a place in a capture file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatErrorKind {
    #[error("not a pcap or pcapng file (first 4 bytes {0:02x?})")]
    UnknownMagic([u8; 4]),
    #[error("file ends inside a {what}: {needed} bytes needed, {available} left")]
    Truncated {
        what: &'static str,
        needed: u64,
        available: u64,
    },
    #[error("record claims {caplen} captured bytes, more than the {max}-byte limit")]
    RecordTooLarge { caplen: u32, max: u32 },
    #[error("pcapng block length {0} is not a multiple of 4 of at least 12")]
    BadBlockLength(u32),
    #[error("pcapng block's trailing length {trailer} differs from its leading length {leading}")]
    BlockLengthMismatch { leading: u32, trailer: u32 },
    #[error("pcapng section header has byte-order magic {0:08x}, expected 1a2b3c4d")]
    BadByteOrderMagic(u32),
    #[error("pcapng packet refers to interface {id}, but the section describes {known}")]
    UnknownInterface { id: u32, known: usize },
    #[error("pcapng packet block found before any section header")]
    NoSection,
    #[error("pcapng packet block claims {caplen} captured bytes in a {body}-byte body")]
    CaplenPastBlock { caplen: u32, body: usize },
}

/// A problem in a capture file, at a byte offset from its start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("at byte offset {offset}: {kind}")]
pub struct FormatError {
    pub offset: u64,
    pub kind: FormatErrorKind,
}

/// One captured frame, borrowed from the file's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub ts: UnixNanos,
    pub link: LinkType,
    /// The captured bytes (possibly cut by snaplen).
    pub data: &'a [u8],
    /// The frame's length on the wire (at least `data.len()`).
    pub wire_len: u32,
    /// Interface index within the pcapng section (0 for pcap).
    pub iface: u32,
    /// Direction from the pcapng `epb_flags` option, when the writer recorded it.
    pub dir: Option<Direction>,
}

/// How a pcapng interface's timestamps convert to nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TsUnit {
    Micros,
    Nanos,
    /// Ticks per second.
    Other(u64),
}

impl TsUnit {
    #[inline(always)]
    fn to_nanos(self, ticks: u64) -> u64 {
        match self {
            Self::Micros => ticks.saturating_mul(1_000),
            Self::Nanos => ticks,
            Self::Other(per_sec) => {
                let per_sec = u128::from(per_sec.max(1));
                let ns = u128::from(ticks).saturating_mul(1_000_000_000) / per_sec;
                u64::try_from(ns).unwrap_or(u64::MAX)
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Iface {
    link: LinkType,
    snaplen: u32,
    unit: TsUnit,
    /// if_tsoffset, seconds.
    offset_s: i64,
}

#[derive(Debug)]
enum State {
    Pcap {
        le: bool,
        unit: TsUnit,
        link: LinkType,
    },
    Pcapng {
        /// None before the first section header.
        le: Option<bool>,
        ifaces: Vec<Iface>,
    },
}

/// A pull parser over a whole capture file held in memory (or mapped).
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    state: State,
    done: bool,
}

#[inline(always)]
fn rd16(b: &[u8], off: usize, le: bool) -> Option<u16> {
    match b.get(off..)? {
        [x, y, ..] => Some(if le {
            u16::from_le_bytes([*x, *y])
        } else {
            u16::from_be_bytes([*x, *y])
        }),
        _ => None,
    }
}

#[inline(always)]
fn rd32(b: &[u8], off: usize, le: bool) -> Option<u32> {
    match b.get(off..)? {
        [x, y, z, w, ..] => Some(if le {
            u32::from_le_bytes([*x, *y, *z, *w])
        } else {
            u32::from_be_bytes([*x, *y, *z, *w])
        }),
        _ => None,
    }
}

fn rd64(b: &[u8], off: usize, le: bool) -> Option<u64> {
    let a: [u8; 8] = b.get(off..off.checked_add(8)?)?.try_into().ok()?;
    Some(if le {
        u64::from_le_bytes(a)
    } else {
        u64::from_be_bytes(a)
    })
}

const PCAP_US: u32 = 0xa1b2_c3d4;
const PCAP_NS: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;

impl<'a> Reader<'a> {
    /// Recognises the format from the first bytes and reads the file header.
    pub fn new(buf: &'a [u8]) -> Result<Self, FormatError> {
        let head: [u8; 4] = buf
            .get(..4)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| truncated(0, "file header", 4, buf.len()))?;
        let be = u32::from_be_bytes(head);
        let le = u32::from_le_bytes(head);
        if be == PCAPNG_SHB {
            return Ok(Self {
                buf,
                pos: 0,
                state: State::Pcapng {
                    le: None,
                    ifaces: Vec::new(),
                },
                done: false,
            });
        }
        let (little, unit) = match (le, be) {
            (PCAP_US, _) => (true, TsUnit::Micros),
            (PCAP_NS, _) => (true, TsUnit::Nanos),
            (_, PCAP_US) => (false, TsUnit::Micros),
            (_, PCAP_NS) => (false, TsUnit::Nanos),
            _ => {
                return Err(FormatError {
                    offset: 0,
                    kind: FormatErrorKind::UnknownMagic(head),
                });
            }
        };
        let link = rd32(buf, 20, little)
            .filter(|_| buf.len() >= 24)
            .ok_or_else(|| truncated(0, "pcap file header", 24, buf.len()))?;
        Ok(Self {
            buf,
            pos: 24,
            state: State::Pcap {
                le: little,
                unit,
                // The upper bits carry FCS information; the link type is the low 16 bits.
                link: LinkType::from_number(link & 0xffff),
            },
            done: false,
        })
    }

    /// The container format.
    pub fn format(&self) -> Format {
        match self.state {
            State::Pcap { .. } => Format::Pcap,
            State::Pcapng { .. } => Format::Pcapng,
        }
    }

    /// Byte offset of the next record.
    pub fn offset(&self) -> u64 {
        self.pos as u64
    }

    /// The next frame, `None` at the end of the file, or the problem that ends the reading.
    /// After an error, `None` follows.
    #[inline(always)]
    pub fn next_frame(&mut self) -> Option<Result<Frame<'a>, FormatError>> {
        if self.done {
            return None;
        }
        let r = match self.state {
            State::Pcap { le, unit, link } => self.next_pcap(le, unit, link),
            State::Pcapng { .. } => self.next_pcapng(),
        };
        match r {
            Ok(Some(f)) => Some(Ok(f)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    #[inline(always)]
    fn next_pcap(
        &mut self,
        le: bool,
        unit: TsUnit,
        link: LinkType,
    ) -> Result<Option<Frame<'a>>, FormatError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let Some((hdr, after)) = rest.split_first_chunk::<16>() else {
            if rest.is_empty() {
                return Ok(None);
            }
            return Err(truncated(self.pos, "pcap record header", 16, rest.len()));
        };
        let [
            s0,
            s1,
            s2,
            s3,
            f0,
            f1,
            f2,
            f3,
            c0,
            c1,
            c2,
            c3,
            o0,
            o1,
            o2,
            o3,
        ] = *hdr;
        let word = |b: [u8; 4]| {
            if le {
                u32::from_le_bytes(b)
            } else {
                u32::from_be_bytes(b)
            }
        };
        let (sec, frac) = (word([s0, s1, s2, s3]), word([f0, f1, f2, f3]));
        let (caplen, orig) = (word([c0, c1, c2, c3]), word([o0, o1, o2, o3]));
        if caplen > MAX_RECORD {
            return Err(FormatError {
                offset: self.pos as u64,
                kind: FormatErrorKind::RecordTooLarge {
                    caplen,
                    max: MAX_RECORD,
                },
            });
        }
        // caplen <= MAX_RECORD: neither sum overflows.
        let Some(data) = after.get(..caplen as usize) else {
            return Err(truncated(
                self.pos,
                "pcap record",
                16 + caplen as usize,
                rest.len(),
            ));
        };
        self.pos += 16 + caplen as usize;
        // Records are read once, in order, from a file mapping: the hardware prefetchers stop
        // at page boundaries (and a page's first touch walks the page table), so ask for the
        // lines a few dozen records ahead; two lines, as a record often spans two.
        let ahead = self.buf.as_ptr().wrapping_add(self.pos + READ_AHEAD);
        crate::flow::table::prefetch(ahead);
        crate::flow::table::prefetch(ahead.wrapping_add(64));
        // A u32 of seconds times 1e9 plus a u32 of microseconds times 1e3 fits in a u64.
        let ts = u64::from(sec) * 1_000_000_000 + unit.to_nanos(u64::from(frac));
        Ok(Some(Frame {
            ts,
            link,
            data,
            wire_len: orig.max(caplen),
            iface: 0,
            dir: None,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<Frame<'a>>, FormatError> {
        loop {
            let at = self.pos;
            let rest = self.buf.get(at..).unwrap_or_default();
            if rest.is_empty() {
                return Ok(None);
            }
            if rest.len() < 12 {
                return Err(truncated(at, "pcapng block header", 12, rest.len()));
            }
            let raw_type = rd32(rest, 0, false).unwrap_or(0);
            if raw_type == PCAPNG_SHB {
                self.section_header(at, rest)?;
                continue;
            }
            let State::Pcapng { le, ifaces } = &mut self.state else {
                return Ok(None);
            };
            let Some(le) = *le else {
                return Err(FormatError {
                    offset: at as u64,
                    kind: FormatErrorKind::NoSection,
                });
            };
            let btype = rd32(rest, 0, le).unwrap_or(0);
            let blen = rd32(rest, 4, le).unwrap_or(0);
            let block = block_bytes(at, rest, blen, le)?;
            let body = block
                .get(8..block.len().saturating_sub(4))
                .unwrap_or_default();
            self.pos = at.saturating_add(blen as usize);
            match btype {
                // Interface Description Block.
                1 => ifaces.push(parse_idb(body, le)),
                // Enhanced Packet Block.
                6 => {
                    let (Some(id), Some(hi), Some(lo), Some(caplen), Some(orig)) = (
                        rd32(body, 0, le),
                        rd32(body, 4, le),
                        rd32(body, 8, le),
                        rd32(body, 12, le),
                        rd32(body, 16, le),
                    ) else {
                        return Err(truncated(at, "enhanced packet block", 28, block.len()));
                    };
                    let iface = lookup_iface(ifaces, id, at)?;
                    let data = packet_data(body, 20, caplen, at)?;
                    let opts = body
                        .get(20usize.saturating_add(pad4(caplen as usize))..)
                        .unwrap_or_default();
                    let ticks = (u64::from(hi) << 32) | u64::from(lo);
                    return Ok(Some(Frame {
                        ts: iface_ts(iface, ticks),
                        link: iface.link,
                        data,
                        wire_len: orig.max(caplen),
                        iface: id,
                        dir: flags_dir(opts, le),
                    }));
                }
                // Simple Packet Block: interface 0, no timestamp, caplen from the snaplen.
                3 => {
                    let Some(orig) = rd32(body, 0, le) else {
                        return Err(truncated(at, "simple packet block", 16, block.len()));
                    };
                    let iface = lookup_iface(ifaces, 0, at)?;
                    let room = body.len().saturating_sub(4);
                    let mut caplen = (orig as usize).min(room);
                    if iface.snaplen != 0 {
                        caplen = caplen.min(iface.snaplen as usize);
                    }
                    let data = body
                        .get(4..4usize.saturating_add(caplen))
                        .unwrap_or_default();
                    return Ok(Some(Frame {
                        ts: 0,
                        link: iface.link,
                        data,
                        wire_len: orig.max(data.len() as u32),
                        iface: 0,
                        dir: None,
                    }));
                }
                // Obsolete Packet Block.
                2 => {
                    let (Some(id), Some(hi), Some(lo), Some(caplen), Some(orig)) = (
                        rd16(body, 0, le),
                        rd32(body, 4, le),
                        rd32(body, 8, le),
                        rd32(body, 12, le),
                        rd32(body, 16, le),
                    ) else {
                        return Err(truncated(at, "packet block", 28, block.len()));
                    };
                    let id = u32::from(id);
                    let iface = lookup_iface(ifaces, id, at)?;
                    let data = packet_data(body, 20, caplen, at)?;
                    let opts = body
                        .get(20usize.saturating_add(pad4(caplen as usize))..)
                        .unwrap_or_default();
                    let ticks = (u64::from(hi) << 32) | u64::from(lo);
                    return Ok(Some(Frame {
                        ts: iface_ts(iface, ticks),
                        link: iface.link,
                        data,
                        wire_len: orig.max(caplen),
                        iface: id,
                        dir: flags_dir(opts, le),
                    }));
                }
                // Statistics, name resolution, decryption secrets, custom blocks...: skipped.
                _ => {}
            }
        }
    }

    fn section_header(&mut self, at: usize, rest: &[u8]) -> Result<(), FormatError> {
        let magic_be = rd32(rest, 8, false).unwrap_or(0);
        let le = match magic_be {
            BYTE_ORDER_MAGIC => false,
            m if m.swap_bytes() == BYTE_ORDER_MAGIC => true,
            m => {
                return Err(FormatError {
                    offset: at.saturating_add(8) as u64,
                    kind: FormatErrorKind::BadByteOrderMagic(m),
                });
            }
        };
        let blen = rd32(rest, 4, le).unwrap_or(0);
        block_bytes(at, rest, blen, le)?;
        self.pos = at.saturating_add(blen as usize);
        self.state = State::Pcapng {
            le: Some(le),
            ifaces: Vec::new(),
        };
        Ok(())
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Frame<'a>, FormatError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_frame()
    }
}

fn truncated(at: usize, what: &'static str, needed: usize, available: usize) -> FormatError {
    FormatError {
        offset: at as u64,
        kind: FormatErrorKind::Truncated {
            what,
            needed: needed as u64,
            available: available as u64,
        },
    }
}

fn pad4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// Checks a pcapng block's leading and trailing lengths and returns its bytes.
fn block_bytes(at: usize, rest: &[u8], blen: u32, le: bool) -> Result<&[u8], FormatError> {
    if blen < 12 || !blen.is_multiple_of(4) {
        return Err(FormatError {
            offset: at as u64,
            kind: FormatErrorKind::BadBlockLength(blen),
        });
    }
    let Some(block) = rest.get(..blen as usize) else {
        return Err(truncated(at, "pcapng block", blen as usize, rest.len()));
    };
    let trailer = rd32(block, block.len().saturating_sub(4), le).unwrap_or(0);
    if trailer != blen {
        return Err(FormatError {
            offset: at as u64,
            kind: FormatErrorKind::BlockLengthMismatch {
                leading: blen,
                trailer,
            },
        });
    }
    Ok(block)
}

fn lookup_iface(ifaces: &[Iface], id: u32, at: usize) -> Result<Iface, FormatError> {
    ifaces.get(id as usize).copied().ok_or(FormatError {
        offset: at as u64,
        kind: FormatErrorKind::UnknownInterface {
            id,
            known: ifaces.len(),
        },
    })
}

fn packet_data(body: &[u8], start: usize, caplen: u32, at: usize) -> Result<&[u8], FormatError> {
    body.get(start..start.saturating_add(caplen as usize))
        .ok_or(FormatError {
            offset: at as u64,
            kind: FormatErrorKind::CaplenPastBlock {
                caplen,
                body: body.len(),
            },
        })
}

fn iface_ts(iface: Iface, ticks: u64) -> UnixNanos {
    let ns = iface.unit.to_nanos(ticks);
    let off = iface.offset_s.saturating_mul(1_000_000_000);
    ns.saturating_add_signed(off)
}

/// Walks a pcapng option list, calling `f(code, value)` for each option until the end.
fn options<'a>(mut opts: &'a [u8], le: bool, mut f: impl FnMut(u16, &'a [u8])) {
    while let (Some(code), Some(len)) = (rd16(opts, 0, le), rd16(opts, 2, le)) {
        if code == 0 {
            break;
        }
        let len = usize::from(len);
        let Some(value) = opts.get(4..4usize.saturating_add(len)) else {
            break;
        };
        f(code, value);
        opts = opts
            .get(4usize.saturating_add(pad4(len))..)
            .unwrap_or_default();
    }
}

fn parse_idb(body: &[u8], le: bool) -> Iface {
    let link = LinkType::from_number(u32::from(rd16(body, 0, le).unwrap_or(u16::MAX)));
    let snaplen = rd32(body, 4, le).unwrap_or(0);
    let mut iface = Iface {
        link,
        snaplen,
        unit: TsUnit::Micros,
        offset_s: 0,
    };
    options(body.get(8..).unwrap_or_default(), le, |code, v| {
        match (code, v) {
            // if_tsresol: MSB clear -> 10^-n, set -> 2^-n seconds.
            (9, [r, ..]) => {
                let n = u32::from(r & 0x7f);
                let per_sec = if r & 0x80 == 0 {
                    10u64.checked_pow(n)
                } else {
                    1u64.checked_shl(n)
                };
                iface.unit = match per_sec {
                    Some(1_000_000) => TsUnit::Micros,
                    Some(1_000_000_000) => TsUnit::Nanos,
                    Some(p) => TsUnit::Other(p),
                    None => TsUnit::Other(u64::MAX),
                };
            }
            // if_tsoffset: seconds added to every timestamp.
            (14, _) => {
                if let Some(o) = rd64(v, 0, le) {
                    iface.offset_s = o as i64;
                }
            }
            _ => {}
        }
    });
    iface
}

/// The direction bits of an `epb_flags` option (01 inbound, 10 outbound).
fn flags_dir(opts: &[u8], le: bool) -> Option<Direction> {
    let mut dir = None;
    options(opts, le, |code, v| {
        if code == 2 {
            dir = match rd32(v, 0, le).map(|f| f & 0b11) {
                Some(1) => Some(Direction::In),
                Some(2) => Some(Direction::Out),
                _ => None,
            };
        }
    });
    dir
}

/// Decides a packet's direction from the node's own addresses (the same rule for live pcap
/// and capture files): from a local address is outbound, to one is inbound.
#[derive(Clone, Debug, Default)]
pub struct Orienter {
    addrs: Vec<IpAddr>,
    nets: Vec<ipnet::IpNet>,
    /// Addresses and networks as (network, mask) integers, per family: what `is_local`
    /// compares (a few instructions per entry; it runs for every packet).
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl Orienter {
    /// An orienter for a node owning `addrs` exactly and everything in `nets`.
    pub fn new(addrs: Vec<IpAddr>, nets: Vec<ipnet::IpNet>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let all = addrs
            .iter()
            .map(|a| ipnet::IpNet::from(*a))
            .chain(nets.iter().copied());
        for n in all {
            match n {
                ipnet::IpNet::V4(n) => {
                    let mask = u32::from(n.netmask());
                    v4.push((u32::from(n.addr()) & mask, mask));
                }
                ipnet::IpNet::V6(n) => {
                    let mask = u128::from(n.netmask());
                    v6.push((u128::from(n.addr()) & mask, mask));
                }
            }
        }
        Self {
            addrs,
            nets,
            v4,
            v6,
        }
    }

    /// The exact addresses.
    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }

    /// The networks.
    pub fn nets(&self) -> &[ipnet::IpNet] {
        &self.nets
    }

    /// Whether no addresses are known (every direction then comes from the capture itself).
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether `a` belongs to the node.
    #[inline]
    pub fn is_local(&self, a: &IpAddr) -> bool {
        match a {
            IpAddr::V4(a) => {
                let a = u32::from(*a);
                self.v4.iter().any(|(net, mask)| a & mask == *net)
            }
            IpAddr::V6(a) => {
                let a = u128::from(*a);
                self.v6.iter().any(|(net, mask)| a & mask == *net)
            }
        }
    }

    /// [`is_local`](Self::is_local) on an address in the flow table's integer form (IPv4 as
    /// its 32-bit number).
    #[inline]
    pub fn is_local_bits(&self, a: u128, v6: bool) -> bool {
        // Every entry is compared (no early exit): the answer differs from packet to packet,
        // the number of entries does not.
        if v6 {
            self.v6
                .iter()
                .fold(false, |hit, (net, mask)| hit | (a & mask == *net))
        } else {
            let a = a as u32;
            self.v4
                .iter()
                .fold(false, |hit, (net, mask)| hit | (a & mask == *net))
        }
    }

    /// [`direction`](Self::direction) of a decoded packet (addresses in integer form),
    /// computed without branching on the answer.
    #[inline]
    pub fn direction_of(&self, d: &Decoded) -> Option<Direction> {
        let src = self.is_local_bits(d.src, d.v6);
        let dst = self.is_local_bits(d.dst, d.v6);
        let dir = if src { Direction::Out } else { Direction::In };
        (src | dst).then_some(dir)
    }

    /// Outbound when the source is local, inbound when only the destination is, else `None`.
    #[inline]
    pub fn direction(&self, src: &IpAddr, dst: &IpAddr) -> Option<Direction> {
        if self.is_local(src) {
            Some(Direction::Out)
        } else if self.is_local(dst) {
            Some(Direction::In)
        } else {
            None
        }
    }
}

/// Errors that stop a capture file from being read at all.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot open capture file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot map capture file {path} into memory")]
    Map {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a readable capture file")]
    Format {
        path: PathBuf,
        #[source]
        source: FormatError,
    },
}

/// What reading one file produced (its packets went into the table).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FileSummary {
    pub path: PathBuf,
    pub format: Format,
    /// Frames read (decoded or counted as skipped).
    pub frames: u64,
    /// Bytes of the file consumed.
    pub bytes_read: u64,
    pub size: u64,
    /// First and last frame timestamps (0 when there were none).
    pub first_ts: UnixNanos,
    pub last_ts: UnixNanos,
    /// The damage that stopped reading early, if any (frames before it are counted).
    #[serde(serialize_with = "ser_display_opt")]
    pub error: Option<FormatError>,
}

fn ser_display_opt<S: serde::Serializer>(e: &Option<FormatError>, s: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.collect_str(e),
        None => s.serialize_none(),
    }
}

/// A capture file mapped into memory.
#[derive(Debug)]
pub struct MappedFile {
    path: PathBuf,
    map: Option<memmap2::Mmap>,
}

impl MappedFile {
    /// Opens and maps `path` (read-only).
    pub fn open(path: &Path) -> Result<Self, FileError> {
        let file = File::open(path).map_err(|source| FileError::Open {
            path: path.to_owned(),
            source,
        })?;
        let len = file
            .metadata()
            .map_err(|source| FileError::Open {
                path: path.to_owned(),
                source,
            })?
            .len();
        if len == 0 {
            return Ok(Self {
                path: path.to_owned(),
                map: None,
            });
        }
        // SAFETY: the map is read-only; a file truncated by another process while we read it
        // would raise SIGBUS, which is the documented risk of reading capture files by mmap
        // (capture files are not modified while analysed).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| FileError::Map {
            path: path.to_owned(),
            source,
        })?;
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(Self {
            path: path.to_owned(),
            map: Some(map),
        })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads every frame of `bytes` into `table`: decoded frames are ingested, the others
/// counted in its health. `progress(bytes_done)` is called every few thousand frames.
pub fn ingest_bytes(
    path: &Path,
    bytes: &[u8],
    table: &mut FlowTable,
    orienter: &Orienter,
    progress: &mut dyn FnMut(u64),
) -> Result<FileSummary, FileError> {
    let mut reader = Reader::new(bytes).map_err(|source| FileError::Format {
        path: path.to_owned(),
        source,
    })?;
    let mut d = Driver {
        table,
        orienter,
        use_addrs: !orienter.is_empty(),
        progress,
        frames: 0,
        first_ts: 0,
        last_ts: 0,
        batch: [Packet::default(); BATCH],
        queued: 0,
    };
    // The container and link type are known per file for classic pcap: the record loop is
    // compiled once per case, with the decoder for the link type inlined (no per-frame
    // dispatch on either).
    let error = match reader.state {
        // The common case: little-endian, microseconds, Ethernet.
        State::Pcap {
            le: true,
            unit: TsUnit::Micros,
            link: LinkType::Ethernet,
        } => d.run(
            &mut reader,
            |r| r.next_pcap(true, TsUnit::Micros, LinkType::Ethernet),
            |_, data| decode::decode(LinkType::Ethernet, data),
        ),
        State::Pcap { le, unit, link } => d.run(
            &mut reader,
            |r| r.next_pcap(le, unit, link),
            |_, data| decode::decode(link, data),
        ),
        State::Pcapng { .. } => d.run(&mut reader, Reader::next_pcapng, decode::decode),
    };
    reader.done = true;
    d.flush();
    (d.progress)(reader.offset());
    Ok(FileSummary {
        path: path.to_owned(),
        format: reader.format(),
        frames: d.frames,
        bytes_read: reader.offset(),
        size: bytes.len() as u64,
        first_ts: d.first_ts,
        last_ts: d.last_ts,
        error,
    })
}

/// The file driver's state: decoded packets are queued in the table's integer form and handed
/// to it a batch at a time (see [`FlowTable::ingest_packets`]).
struct Driver<'t, 'p> {
    table: &'t mut FlowTable,
    orienter: &'t Orienter,
    use_addrs: bool,
    progress: &'p mut dyn FnMut(u64),
    frames: u64,
    first_ts: UnixNanos,
    last_ts: UnixNanos,
    batch: [Packet; BATCH],
    queued: usize,
}

impl Driver<'_, '_> {
    /// Reads frames with `next` and decodes them with `dec` until the end of the file or the
    /// first damage, which it returns.
    #[inline(always)]
    fn run<'a, N, D>(&mut self, reader: &mut Reader<'a>, mut next: N, dec: D) -> Option<FormatError>
    where
        N: FnMut(&mut Reader<'a>) -> Result<Option<Frame<'a>>, FormatError>,
        D: Fn(LinkType, &[u8]) -> Result<Decoded, Skip>,
    {
        loop {
            let f = match next(reader) {
                Ok(Some(f)) => f,
                Ok(None) => return None,
                Err(e) => return Some(e),
            };
            self.frames += 1;
            if self.first_ts == 0 {
                self.first_ts = f.ts;
            }
            self.last_ts = self.last_ts.max(f.ts);
            match dec(f.link, f.data) {
                Ok(d) => {
                    let dir = if self.use_addrs {
                        self.orienter.direction_of(&d).or(f.dir)
                    } else {
                        f.dir
                    };
                    if let Some(slot) = self.batch.get_mut(self.queued) {
                        *slot = d.packet(f.ts, f.wire_len, dir);
                    }
                    self.queued += 1;
                    if self.queued >= BATCH {
                        self.flush();
                    }
                }
                Err(skip) => skip.count(self.table.health_mut()),
            }
            if self.frames.is_multiple_of(65_536) {
                (self.progress)(reader.offset());
            }
        }
    }

    /// Hands the queued packets to the table.
    fn flush(&mut self) {
        let n = self.queued.min(BATCH);
        self.table
            .ingest_packets(self.batch.get(..n).unwrap_or_default());
        self.queued = 0;
    }
}

/// Opens, maps and reads one capture file into `table` (see [`ingest_bytes`]).
pub fn ingest_file(
    path: &Path,
    table: &mut FlowTable,
    orienter: &Orienter,
    progress: &mut dyn FnMut(u64),
) -> Result<FileSummary, FileError> {
    let m = MappedFile::open(path)?;
    ingest_bytes(path, m.bytes(), table, orienter, progress)
}

/// Settings for reading capture files.
#[derive(Clone, Debug)]
pub struct FileConfig {
    /// At most this many flows are kept (per-port totals stay exact beyond it).
    pub flow_capacity: usize,
    /// The node's addresses, when known: they decide direction (see [`Orienter`]).
    pub orienter: Orienter,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            flow_capacity: 1 << 21,
            orienter: Orienter::default(),
        }
    }
}

/// Everything read from a set of capture files: one snapshot spanning them all.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// Observations; `start`/`end` are the first and last frame timestamps.
    pub snapshot: crate::flow::Snapshot,
    /// One summary per file, in the order given (damaged files included).
    pub files: Vec<FileSummary>,
}

/// Reads `paths` in order into one flow table. A file that cannot be opened or is not a
/// capture stops everything; a damaged file keeps its frames up to the damage (see
/// [`FileSummary::error`]). `progress(bytes_done_over_all_files)` reports progress.
pub fn read_captures(
    paths: &[PathBuf],
    cfg: &FileConfig,
    progress: &mut dyn FnMut(u64),
) -> Result<Analysis, FileError> {
    let mut table = FlowTable::new(cfg.flow_capacity, 0);
    let mut files = Vec::with_capacity(paths.len());
    let mut done = 0u64;
    for p in paths {
        let base = done;
        let s = ingest_file(p, &mut table, &cfg.orienter, &mut |b| progress(base + b))?;
        done += s.size;
        files.push(s);
    }
    let start = files
        .iter()
        .map(|f| f.first_ts)
        .filter(|t| *t != 0)
        .min()
        .unwrap_or(0);
    let end = files.iter().map(|f| f.last_ts).max().unwrap_or(0);
    let mut snapshot = table.drain(end);
    snapshot.start = start;
    Ok(Analysis { snapshot, files })
}

/// Total size in bytes of `paths` (missing files count 0), for progress bars.
pub fn total_size(paths: &[PathBuf]) -> u64 {
    paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::capture::testdata as td;
    use crate::flow::{Side, Transport};

    const A: [u8; 4] = [192, 168, 1, 10];
    const B: [u8; 4] = [192, 168, 1, 20];

    fn syn(sport: u16) -> Vec<u8> {
        td::ethernet(
            &[],
            0x0800,
            &td::ipv4(A, B, 6, &[], 0, false, &td::tcp(sport, 80, 0x02)),
        )
    }

    fn read_all(bytes: &[u8]) -> (Vec<Frame<'_>>, Option<FormatError>) {
        let mut r = Reader::new(bytes).unwrap();
        let mut frames = Vec::new();
        for f in &mut r {
            match f {
                Ok(f) => frames.push(f),
                Err(e) => return (frames, Some(e)),
            }
        }
        (frames, None)
    }

    #[test]
    fn pcap_in_every_byte_order_and_resolution() {
        let recs = vec![
            td::Record::new(1_700_000_000_123_456_000, syn(1000)),
            td::Record::new(1_700_000_001_000_001_000, syn(1001)),
        ];
        for (nanos, be) in [(false, false), (true, false), (false, true), (true, true)] {
            let file = td::pcap_file(1, nanos, be, &recs);
            let (frames, err) = read_all(&file);
            assert_eq!(err, None);
            assert_eq!(frames.len(), 2);
            assert_eq!(frames[0].ts, 1_700_000_000_123_456_000);
            assert_eq!(frames[1].ts, 1_700_000_001_000_001_000);
            assert_eq!(frames[0].link, LinkType::Ethernet);
            assert_eq!(frames[0].data, &recs[0].data[..]);
            assert_eq!(Reader::new(&file).unwrap().format(), Format::Pcap);
        }
    }

    #[test]
    fn pcap_snaplen_cut_frames_keep_their_wire_length() {
        let full = td::ethernet(
            &[],
            0x0800,
            &td::ipv4(A, B, 17, &[], 0, false, &td::udp(9, 53, 1000)),
        );
        let n = full.len() as u32;
        let file = td::pcap_file(1, false, false, &[td::Record::new(1, full).snap(60)]);
        let mut t = FlowTable::new(16, 0);
        let s = ingest_bytes(
            Path::new("x.pcap"),
            &file,
            &mut t,
            &Orienter::default(),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(s.frames, 1);
        let snap = t.drain(2);
        assert_eq!(snap.flows.len(), 1);
        assert_eq!(snap.flows[0].stats.inbound.bytes, u64::from(n));
    }

    #[test]
    fn truncated_pcap_reports_offset_and_keeps_earlier_frames() {
        let recs: Vec<_> = (0..3)
            .map(|i| td::Record::new(i, syn(2000 + i as u16)))
            .collect();
        let file = td::pcap_file(1, false, false, &recs);
        let rec_len = 16 + recs[0].data.len();
        let third = 24 + 2 * rec_len;
        // Cut inside the third record's data, then inside its header.
        for cut in [third + 20, third + 5] {
            let mut t = FlowTable::new(16, 0);
            let s = ingest_bytes(
                Path::new("t.pcap"),
                &file[..cut],
                &mut t,
                &Orienter::default(),
                &mut |_| {},
            )
            .unwrap();
            assert_eq!(s.frames, 2);
            let e = s.error.unwrap();
            assert_eq!(e.offset, third as u64);
            assert!(matches!(e.kind, FormatErrorKind::Truncated { .. }), "{e}");
            assert_eq!(t.drain(1).flows.len(), 2);
        }
    }

    #[test]
    fn corrupt_record_length_is_an_error_at_its_offset() {
        let mut file = td::pcap_file(
            1,
            false,
            false,
            &[td::Record::new(0, syn(1)), td::Record::new(0, syn(2))],
        );
        let second = 24 + 16 + syn(1).len();
        file[second + 8..second + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let (frames, err) = read_all(&file);
        assert_eq!(frames.len(), 1);
        let err = err.unwrap();
        assert_eq!(err.offset, second as u64);
        assert!(matches!(err.kind, FormatErrorKind::RecordTooLarge { .. }));
    }

    #[test]
    fn not_a_capture_file() {
        let e = Reader::new(b"hello world, not a pcap").unwrap_err();
        assert!(matches!(e.kind, FormatErrorKind::UnknownMagic(_)));
        assert!(e.to_string().contains("not a pcap or pcapng file"), "{e}");
        assert!(Reader::new(&[0xd4, 0xc3]).is_err());
    }

    #[test]
    fn pcapng_several_interfaces_link_types_resolutions_and_directions() {
        let ifaces = [
            td::NgIface {
                linktype: 1,
                tsresol: None,
            },
            td::NgIface {
                linktype: 113,
                tsresol: Some(9),
            },
            td::NgIface {
                linktype: 101,
                tsresol: None,
            },
        ];
        let ip = td::ipv4(A, B, 6, &[], 0, false, &td::tcp(1234, 22, 0x02));
        let mut r0 = td::Record::new(5_000_000_000, td::ethernet(&[(0x8100, 3)], 0x0800, &ip));
        r0.flags_dir = 2;
        let mut r1 = td::Record::new(6_000_000_007, td::sll(0, 1, 0x0800, &ip));
        r1.iface = 1;
        let mut r2 = td::Record::new(7_000_000_000, ip.clone());
        r2.iface = 2;
        r2.flags_dir = 1;
        let file = td::pcapng_file(&ifaces, &[r0, r1, r2]);
        let (frames, err) = read_all(&file);
        assert_eq!(err, None);
        assert_eq!(frames.len(), 3);
        assert_eq!(Reader::new(&file).unwrap().format(), Format::Pcapng);
        assert_eq!(
            frames
                .iter()
                .map(|f| (f.link, f.iface, f.dir, f.ts))
                .collect::<Vec<_>>(),
            vec![
                (LinkType::Ethernet, 0, Some(Direction::Out), 5_000_000_000),
                (LinkType::LinuxSll, 1, None, 6_000_000_007),
                (LinkType::Raw, 2, Some(Direction::In), 7_000_000_000),
            ]
        );
        for f in &frames {
            let d = decode::decode(f.link, f.data).unwrap();
            assert_eq!((d.sport, d.dport), (1234, 22));
        }
    }

    #[test]
    fn pcapng_two_sections_reset_interfaces() {
        let a = td::pcapng_file(
            &[td::NgIface {
                linktype: 1,
                tsresol: None,
            }],
            &[td::Record::new(1000, syn(1))],
        );
        let ip = td::ipv4(A, B, 6, &[], 0, false, &td::tcp(2, 80, 0x02));
        let b = td::pcapng_file(
            &[td::NgIface {
                linktype: 101,
                tsresol: None,
            }],
            &[td::Record::new(2000, ip)],
        );
        let mut file = a.clone();
        file.extend_from_slice(&b);
        let (frames, err) = read_all(&file);
        assert_eq!(err, None);
        assert_eq!(
            frames.iter().map(|f| f.link).collect::<Vec<_>>(),
            vec![LinkType::Ethernet, LinkType::Raw]
        );
    }

    #[test]
    fn pcapng_damage_is_located() {
        let file = td::pcapng_file(
            &[td::NgIface {
                linktype: 1,
                tsresol: None,
            }],
            &[td::Record::new(1, syn(1)), td::Record::new(2, syn(2))],
        );
        // Find the second EPB: walk blocks.
        let mut at = 0;
        let mut epbs = Vec::new();
        while at < file.len() {
            let ty = u32::from_le_bytes(file[at..at + 4].try_into().unwrap());
            let len = u32::from_le_bytes(file[at + 4..at + 8].try_into().unwrap()) as usize;
            if ty == 6 {
                epbs.push(at);
            }
            at += len;
        }
        let second = epbs[1];
        // Truncated inside the second packet.
        let (frames, err) = read_all(&file[..second + 30]);
        assert_eq!(frames.len(), 1);
        assert_eq!(err.unwrap().offset, second as u64);
        // Trailing length overwritten.
        let mut bad = file.clone();
        let len = u32::from_le_bytes(bad[second + 4..second + 8].try_into().unwrap()) as usize;
        bad[second + len - 4] ^= 0x40;
        let (frames, err) = read_all(&bad);
        assert_eq!(frames.len(), 1);
        let err = err.unwrap();
        assert_eq!(err.offset, second as u64);
        assert!(matches!(
            err.kind,
            FormatErrorKind::BlockLengthMismatch { .. }
        ));
        // Unknown interface.
        let mut bad = file.clone();
        bad[second + 8] = 9;
        let (_, err) = read_all(&bad);
        assert!(matches!(
            err.unwrap().kind,
            FormatErrorKind::UnknownInterface { id: 9, known: 1 }
        ));
    }

    #[test]
    fn orienter_masks_agree_with_ipnet() {
        let nets: Vec<ipnet::IpNet> = [
            "10.0.0.5/24",
            "192.168.7.9/32",
            "172.16.0.0/12",
            "fd00::a00:0/120",
            "2001:db8::1/128",
            "fe80::/10",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let addrs = vec![IpAddr::from([8, 8, 8, 8]), "2001:db8::53".parse().unwrap()];
        let o = Orienter::new(addrs.clone(), nets.clone());
        let everything = Orienter::new(vec![], vec!["0.0.0.0/0".parse().unwrap()]);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Half the probes near the interesting addresses, half anywhere.
            let a: IpAddr = match i % 4 {
                0 => IpAddr::from((0x0a00_0000 | (x as u32 & 0x3ff)).to_be_bytes()),
                1 => IpAddr::from((x as u32).to_be_bytes()),
                2 => IpAddr::from(
                    (0xfd00_0000_0000_0000_0000_0000_0a00_0000u128 | u128::from(x & 0x3ff))
                        .to_be_bytes(),
                ),
                _ => IpAddr::from(((u128::from(x) << 64) | u128::from(x)).to_be_bytes()),
            };
            let want = addrs.contains(&a) || nets.iter().any(|n| n.contains(&a));
            assert_eq!(o.is_local(&a), want, "{a}");
            assert_eq!(everything.is_local(&a), a.is_ipv4(), "{a}");
        }
        for a in &addrs {
            assert!(o.is_local(a));
        }
    }

    #[test]
    fn addresses_decide_direction_before_capture_flags() {
        let ip = td::ipv4(A, B, 17, &[], 0, false, &td::udp(5000, 53, 10));
        let reply = td::ipv4(B, A, 17, &[], 0, false, &td::udp(53, 5000, 10));
        let file = td::pcap_file(
            101,
            false,
            false,
            &[td::Record::new(1, ip), td::Record::new(2, reply)],
        );
        let mut t = FlowTable::new(16, 0);
        let local = Orienter::new(vec![IpAddr::from(A)], vec![]);
        ingest_bytes(Path::new("d.pcap"), &file, &mut t, &local, &mut |_| {}).unwrap();
        let s = t.drain(3);
        assert_eq!(s.flows.len(), 1);
        let f = &s.flows[0];
        assert!(f.vantage_known);
        assert_eq!(
            (f.key.local.addr, f.key.local.port),
            (IpAddr::from(A), 5000)
        );
        assert_eq!((f.stats.outbound.packets, f.stats.inbound.packets), (1, 1));
        let remote53 = s
            .ports
            .iter()
            .find(|p| p.port == 53 && p.side == Side::Remote && p.transport == Transport::Udp);
        assert_eq!(remote53.unwrap().counts.packets, 1);
        let nets = Orienter::new(vec![], vec!["192.168.1.0/28".parse().unwrap()]);
        assert_eq!(
            nets.direction(&IpAddr::from(B), &IpAddr::from(A)),
            Some(Direction::In)
        );
    }

    #[test]
    fn skipped_frames_are_counted_in_health() {
        let arp = td::ethernet(&[], 0x0806, &[0u8; 28]);
        let short = syn(1)[..30].to_vec();
        let file = td::pcap_file(
            1,
            false,
            false,
            &[
                td::Record::new(1, arp),
                td::Record::new(2, short),
                td::Record::new(3, syn(1)),
            ],
        );
        let mut t = FlowTable::new(16, 0);
        ingest_bytes(
            Path::new("h.pcap"),
            &file,
            &mut t,
            &Orienter::default(),
            &mut |_| {},
        )
        .unwrap();
        let h = t.drain(4).health;
        assert_eq!((h.non_ip, h.truncated, h.packets_seen), (1, 1, 3));
    }

    #[test]
    fn a_file_on_disk_is_mapped_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pcap");
        std::fs::write(
            &p,
            td::pcap_file(1, true, false, &[td::Record::new(1, syn(1))]),
        )
        .unwrap();
        let mut t = FlowTable::new(16, 0);
        let s = ingest_file(&p, &mut t, &Orienter::default(), &mut |_| {}).unwrap();
        assert_eq!((s.frames, s.bytes_read, s.size), (1, s.size, s.size));
        let empty = dir.path().join("empty.pcap");
        std::fs::write(&empty, b"").unwrap();
        let e = ingest_file(&empty, &mut t, &Orienter::default(), &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("empty.pcap"), "{e}");
        let e = ingest_file(
            &dir.path().join("missing.pcap"),
            &mut t,
            &Orienter::default(),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(matches!(e, FileError::Open { .. }));
    }
}
