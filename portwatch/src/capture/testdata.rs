//! Builders for packets and capture files in tests, fuzz seeds and benchmarks: Ethernet/VLAN,
//! cooked and loopback headers, IPv4/IPv6 (options, extension headers, fragments), TCP/UDP/
//! SCTP/ICMP, and pcap/pcapng containers. Writes bytes only; no I/O, no checksums.

/// A TCP header (20 bytes) with ports and flags.
pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = flags;
    h
}

/// A UDP header with `payload` bytes of zeros after it.
pub fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut h = vec![0u8; 8 + payload];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    h
}

/// An SCTP common header (12 bytes).
pub fn sctp(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = vec![0u8; 12];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h
}

/// An ICMP or ICMPv6 header (8 bytes).
pub fn icmp(ty: u8, code: u8) -> Vec<u8> {
    vec![ty, code, 0, 0, 0, 0, 0, 0]
}

/// An IPv4 packet; `options` must be a multiple of 4 bytes; `frag_off` in 8-byte units.
pub fn ipv4(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    options: &[u8],
    frag_off: u16,
    more_frags: bool,
    l4: &[u8],
) -> Vec<u8> {
    let hlen = 20 + options.len();
    let total = hlen + l4.len();
    let mut p = vec![0u8; 20];
    p[0] = 0x40 | (hlen / 4) as u8;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    let fr = (frag_off & 0x1fff) | if more_frags { 0x2000 } else { 0 };
    p[6..8].copy_from_slice(&fr.to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p.extend_from_slice(options);
    p.extend_from_slice(l4);
    p
}

/// An IPv6 packet: `exts` are (header type, body) pairs in order; each body is padded to the
/// header's length rule (fragment headers take a 6-byte body: offset/flags and id).
pub fn ipv6(src: [u8; 16], dst: [u8; 16], exts: &[(u8, Vec<u8>)], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut chain = Vec::new();
    for (i, (_, body)) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map(|e| e.0).unwrap_or(proto);
        let ty = exts[i].0;
        match ty {
            44 => {
                chain.push(next);
                chain.push(0);
                let mut b = body.clone();
                b.resize(6, 0);
                chain.extend_from_slice(&b);
            }
            51 => {
                // AH: (len + 2) * 4 bytes in all.
                let mut b = body.clone();
                let total = (2 + b.len()).div_ceil(4).max(3) * 4;
                b.resize(total - 2, 0);
                chain.push(next);
                chain.push((total / 4 - 2) as u8);
                chain.extend_from_slice(&b);
            }
            _ => {
                let mut b = body.clone();
                let total = (2 + b.len()).div_ceil(8) * 8;
                b.resize(total - 2, 0);
                chain.push(next);
                chain.push((total / 8 - 1) as u8);
                chain.extend_from_slice(&b);
            }
        }
    }
    let first = exts.first().map(|e| e.0).unwrap_or(proto);
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&((chain.len() + l4.len()) as u16).to_be_bytes());
    p[6] = first;
    p[7] = 64;
    p[8..24].copy_from_slice(&src);
    p[24..40].copy_from_slice(&dst);
    p.extend_from_slice(&chain);
    p.extend_from_slice(l4);
    p
}

/// An IPv6 fragment header body: offset in 8-byte units and the more-fragments flag.
pub fn frag6(offset: u16, more: bool) -> Vec<u8> {
    let v = (offset << 3) | u16::from(more);
    let mut b = v.to_be_bytes().to_vec();
    b.extend_from_slice(&[0, 0, 0, 1]);
    b
}

/// An Ethernet frame with the given 802.1Q/802.1ad tags (TPID, VLAN id), outermost first.
pub fn ethernet(tags: &[(u16, u16)], ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

/// A Linux cooked (SLL) frame.
pub fn sll(pkttype: u16, hatype: u16, proto: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&pkttype.to_be_bytes());
    f.extend_from_slice(&hatype.to_be_bytes());
    f.extend_from_slice(&6u16.to_be_bytes());
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0]);
    f.extend_from_slice(&proto.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

/// A Linux cooked v2 (SLL2) frame.
pub fn sll2(pkttype: u8, hatype: u16, proto: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&proto.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&3u32.to_be_bytes());
    f.extend_from_slice(&hatype.to_be_bytes());
    f.push(pkttype);
    f.push(6);
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0]);
    f.extend_from_slice(l3);
    f
}

/// A BSD loopback frame: the family word in little-endian (NULL from an x86 host) or network
/// order (LOOP).
pub fn bsd_loop(family: u32, network_order: bool, l3: &[u8]) -> Vec<u8> {
    let mut f = if network_order {
        family.to_be_bytes().to_vec()
    } else {
        family.to_le_bytes().to_vec()
    };
    f.extend_from_slice(l3);
    f
}

/// One record for a capture file.
#[derive(Clone, Debug)]
pub struct Record {
    pub ts_ns: u64,
    /// Wire length (>= data length).
    pub wire_len: u32,
    pub data: Vec<u8>,
    /// pcapng interface id.
    pub iface: u32,
    /// pcapng epb_flags direction bits (0 none, 1 in, 2 out).
    pub flags_dir: u32,
}

impl Record {
    /// A whole frame at `ts_ns` on interface 0.
    pub fn new(ts_ns: u64, data: Vec<u8>) -> Self {
        Self {
            ts_ns,
            wire_len: data.len() as u32,
            data,
            iface: 0,
            flags_dir: 0,
        }
    }
    /// Cuts the captured bytes to `snaplen`, keeping the wire length.
    pub fn snap(mut self, snaplen: usize) -> Self {
        self.data.truncate(snaplen);
        self
    }
}

/// A classic pcap file (nanosecond magic when `nanos`, little- or big-endian).
pub fn pcap_file(linktype: u32, nanos: bool, big_endian: bool, recs: &[Record]) -> Vec<u8> {
    let w32 = |v: &mut Vec<u8>, x: u32| {
        v.extend_from_slice(&if big_endian {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        })
    };
    let w16 = |v: &mut Vec<u8>, x: u16| {
        v.extend_from_slice(&if big_endian {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        })
    };
    let mut v = Vec::new();
    w32(&mut v, if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
    w16(&mut v, 2);
    w16(&mut v, 4);
    w32(&mut v, 0);
    w32(&mut v, 0);
    w32(&mut v, 262_144);
    w32(&mut v, linktype);
    for r in recs {
        w32(&mut v, (r.ts_ns / 1_000_000_000) as u32);
        let frac = r.ts_ns % 1_000_000_000;
        w32(&mut v, if nanos { frac } else { frac / 1000 } as u32);
        w32(&mut v, r.data.len() as u32);
        w32(&mut v, r.wire_len);
        v.extend_from_slice(&r.data);
    }
    v
}

/// A pcapng interface: link type and if_tsresol byte (None: default microseconds).
#[derive(Clone, Copy, Debug)]
pub struct NgIface {
    pub linktype: u16,
    pub tsresol: Option<u8>,
}

fn ng_block(v: &mut Vec<u8>, ty: u32, body: &[u8]) {
    let len = 12 + body.len().div_ceil(4) * 4;
    v.extend_from_slice(&ty.to_le_bytes());
    v.extend_from_slice(&(len as u32).to_le_bytes());
    v.extend_from_slice(body);
    v.resize(v.len() + (len - 12 - body.len()), 0);
    v.extend_from_slice(&(len as u32).to_le_bytes());
}

/// A little-endian pcapng section with the given interfaces and enhanced packet blocks (plus
/// an interface statistics block that readers must skip).
pub fn pcapng_file(ifaces: &[NgIface], recs: &[Record]) -> Vec<u8> {
    let mut v = Vec::new();
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    ng_block(&mut v, 0x0a0d_0d0a, &shb);
    for i in ifaces {
        let mut b = Vec::new();
        b.extend_from_slice(&i.linktype.to_le_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&0u32.to_le_bytes());
        if let Some(r) = i.tsresol {
            b.extend_from_slice(&9u16.to_le_bytes());
            b.extend_from_slice(&1u16.to_le_bytes());
            b.extend_from_slice(&[r, 0, 0, 0]);
            b.extend_from_slice(&[0, 0, 0, 0]);
        }
        ng_block(&mut v, 1, &b);
    }
    for r in recs {
        let res = ifaces
            .get(r.iface as usize)
            .and_then(|i| i.tsresol)
            .unwrap_or(6);
        let ticks = if res == 9 { r.ts_ns } else { r.ts_ns / 1000 };
        let mut b = Vec::new();
        b.extend_from_slice(&r.iface.to_le_bytes());
        b.extend_from_slice(&((ticks >> 32) as u32).to_le_bytes());
        b.extend_from_slice(&(ticks as u32).to_le_bytes());
        b.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
        b.extend_from_slice(&r.wire_len.to_le_bytes());
        b.extend_from_slice(&r.data);
        b.resize(b.len().div_ceil(4) * 4, 0);
        if r.flags_dir != 0 {
            b.extend_from_slice(&2u16.to_le_bytes());
            b.extend_from_slice(&4u16.to_le_bytes());
            b.extend_from_slice(&r.flags_dir.to_le_bytes());
            b.extend_from_slice(&[0, 0, 0, 0]);
        }
        ng_block(&mut v, 6, &b);
    }
    // An interface statistics block (skipped by readers).
    ng_block(&mut v, 5, &[0u8; 20]);
    v
}
