//! portwatch's TC programs: parse each frame (Ethernet, 802.1Q/802.1ad, IPv4, IPv6 extension
//! headers, TCP/UDP/SCTP/ICMP) and count it per port and per flow. Parsing and counting only;
//! no policy lives in the kernel, and the programs never change or drop a packet.
//!
//! Headers are read with direct packet access. When a header lies beyond the linear area (frames
//! sent from a packet socket's TX ring carry only the Ethernet header there), the program pulls
//! the bytes it needs once with `bpf_skb_pull_data` and carries on with direct access.
#![no_std]
#![no_main]
// Atomic read-modify-write on map values: core's Atomic* types lack fetch_add on this target.
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::intrinsics::{AtomicOrdering, atomic_or, atomic_xadd};
use core::mem::size_of;

use aya_ebpf::{
    bindings::{__sk_buff, BPF_NOEXIST, TC_ACT_UNSPEC},
    helpers::bpf_ktime_get_coarse_ns,
    macros::{classifier, map},
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::TcContext,
};
use portwatch_common::{
    BPF_F_NO_PREALLOC, CNT_EXT_LIMIT, CNT_FLOW_ERR, CNT_FLOW_FULL, CNT_FRAGMENTS, CNT_MALFORMED,
    CNT_NON_IP, CNT_PACKETS, CNT_PORT_ERR, CNT_PORT_FULL, CNT_PULL_FAILED, CNT_PULLED,
    CNT_TRUNCATED, CNT_VLAN, Counters, DEFAULT_FLOW_CAPACITY, DIR_EGRESS, DIR_INGRESS, FAMILY_V4,
    FAMILY_V6, FlowKey, FlowValue, PORT_TOTALS_CAPACITY, PortCounters, PortKey, SIDE_LOCAL,
    SIDE_REMOTE,
};

#[map(name = "PW_PORT_TOTALS")]
static PORT_TOTALS: PerCpuHashMap<PortKey, PortCounters> =
    PerCpuHashMap::pinned(PORT_TOTALS_CAPACITY, BPF_F_NO_PREALLOC);

/// Capacity is replaced at load time (`EbpfLoader::set_max_entries`).
#[map(name = "PW_FLOWS")]
static FLOWS: HashMap<FlowKey, FlowValue> =
    HashMap::pinned(DEFAULT_FLOW_CAPACITY, BPF_F_NO_PREALLOC);

#[map(name = "PW_COUNTERS")]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::pinned(1, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const ETH_P_QINQ1: u16 = 0x9100;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_SCTP: u8 = 132;

/// IPv6 extension headers followed before giving up (counted as `CNT_EXT_LIMIT`).
const MAX_EXT_HEADERS: usize = 6;
/// Largest transport-header offset the parser accepts (keeps offsets bounded for the verifier).
const MAX_L4_OFFSET: usize = 512;
/// Bytes made linear when a header is not in the linear area (covers all usual headers).
const PULL_LEN: usize = 128;

const EEXIST: i32 = 17;
const E2BIG: i32 = 7;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

#[classifier]
pub fn portwatch_ingress(ctx: TcContext) -> i32 {
    observe(&ctx, DIR_INGRESS);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn portwatch_egress(ctx: TcContext) -> i32 {
    observe(&ctx, DIR_EGRESS);
    TC_ACT_UNSPEC
}

/// Why a frame was not counted per port.
#[derive(Clone, Copy)]
enum Skip {
    Truncated,
    Malformed,
    NonIp,
    PullFailed,
    ExtLimit,
}

/// What the parser extracted from one frame.
struct Parsed {
    family: u8,
    proto: u8,
    src: [u32; 4],
    dst: [u32; 4],
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    fragment: bool,
    vlan: bool,
}

#[inline(always)]
fn observe(ctx: &TcContext, dir: u8) {
    let Some(cnt) = COUNTERS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the per-CPU slot of this CPU; programs do not nest on one CPU.
    let cnt = unsafe { &mut (*cnt).c };
    cnt[CNT_PACKETS] += 1;
    let mut pulled = false;
    let res = parse(ctx, &mut pulled);
    if pulled {
        cnt[CNT_PULLED] += 1;
    }
    let p = match res {
        Ok(p) => p,
        Err(e) => {
            let i = match e {
                Skip::Truncated => CNT_TRUNCATED,
                Skip::Malformed => CNT_MALFORMED,
                Skip::NonIp => CNT_NON_IP,
                Skip::PullFailed => CNT_PULL_FAILED,
                Skip::ExtLimit => CNT_EXT_LIMIT,
            };
            cnt[i] += 1;
            return;
        }
    };
    if p.vlan {
        cnt[CNT_VLAN] += 1;
    }
    if p.fragment {
        cnt[CNT_FRAGMENTS] += 1;
    }
    let skb = ctx.skb.skb;
    // SAFETY: reads of __sk_buff context fields.
    let (len, segs, vlan_meta) = unsafe { ((*skb).len, (*skb).gso_segs, (*skb).vlan_present) };
    let bytes = u64::from(len) + if vlan_meta != 0 { 4 } else { 0 };
    let segments = if segs > 1 { u64::from(segs) } else { 1 };
    let f = p.tcp_flags;
    let tcp = p.proto == IPPROTO_TCP;
    let syn = tcp && f & TCP_SYN != 0 && f & TCP_ACK == 0;
    let inc = PortCounters {
        packets: 1,
        segments,
        bytes,
        syn: u64::from(syn),
        synack: u64::from(tcp && f & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK),
        fin: u64::from(tcp && f & TCP_FIN != 0),
        rst: u64::from(tcp && f & TCP_RST != 0),
    };
    let ingress = dir == DIR_INGRESS;
    let (lport, rport) = if ingress {
        (p.dport, p.sport)
    } else {
        (p.sport, p.dport)
    };
    count_port(
        &PortKey {
            port: lport,
            proto: p.proto,
            side: SIDE_LOCAL,
            dir,
            _pad: [0; 3],
        },
        &inc,
        cnt,
    );
    count_port(
        &PortKey {
            port: rport,
            proto: p.proto,
            side: SIDE_REMOTE,
            dir,
            _pad: [0; 3],
        },
        &inc,
        cnt,
    );
    let (laddr, raddr) = if ingress {
        (p.dst, p.src)
    } else {
        (p.src, p.dst)
    };
    let key = FlowKey {
        local_addr: laddr,
        remote_addr: raddr,
        local_port: lport,
        remote_port: rport,
        proto: p.proto,
        family: p.family,
        _pad: [0; 2],
    };
    count_flow(&key, ingress, bytes, f, syn, cnt);
}

/// Adds `inc` to this CPU's totals for `key`, inserting the key when it is new.
#[inline(always)]
fn count_port(key: &PortKey, inc: &PortCounters, cnt: &mut [u64; 16]) {
    if let Some(v) = PORT_TOTALS.get_ptr_mut(key) {
        // SAFETY: this CPU's value; programs do not nest on one CPU.
        unsafe { add_counters(&mut *v, inc) };
        return;
    }
    match PORT_TOTALS.insert(key, inc, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        // Another CPU inserted the key first: its slot for this CPU is zero, add to it.
        Err(e) if e == -EEXIST => match PORT_TOTALS.get_ptr_mut(key) {
            // SAFETY: as above.
            Some(v) => unsafe { add_counters(&mut *v, inc) },
            None => cnt[CNT_PORT_ERR] += 1,
        },
        Err(e) if e == -E2BIG => cnt[CNT_PORT_FULL] += 1,
        Err(_) => cnt[CNT_PORT_ERR] += 1,
    }
}

#[inline(always)]
fn add_counters(v: &mut PortCounters, inc: &PortCounters) {
    v.packets += inc.packets;
    v.segments += inc.segments;
    v.bytes += inc.bytes;
    v.syn += inc.syn;
    v.synack += inc.synack;
    v.fin += inc.fin;
    v.rst += inc.rst;
}

/// Adds the packet to its flow (shared by all CPUs: atomic adds), inserting the flow when new.
#[inline(always)]
fn count_flow(key: &FlowKey, ingress: bool, bytes: u64, flags: u8, syn: bool, cnt: &mut [u64; 16]) {
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if let Some(v) = FLOWS.get_ptr_mut(key) {
        update_flow(v, ingress, bytes, flags, syn, now);
        return;
    }
    let mut init = FlowValue {
        first_seen_ns: now,
        last_seen_ns: now,
        ..FlowValue::default()
    };
    if ingress {
        init.packets_in = 1;
        init.bytes_in = bytes;
        init.tcp_flags = u64::from(flags);
        init.syns = u64::from(syn);
    } else {
        init.packets_out = 1;
        init.bytes_out = bytes;
        init.tcp_flags = u64::from(flags) << 8;
        init.syns = u64::from(syn) << 32;
    }
    match FLOWS.insert(key, init, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        Err(e) if e == -EEXIST => match FLOWS.get_ptr_mut(key) {
            Some(v) => update_flow(v, ingress, bytes, flags, syn, now),
            None => cnt[CNT_FLOW_ERR] += 1,
        },
        Err(e) if e == -E2BIG => cnt[CNT_FLOW_FULL] += 1,
        Err(_) => cnt[CNT_FLOW_ERR] += 1,
    }
}

#[inline(always)]
fn update_flow(v: *mut FlowValue, ingress: bool, bytes: u64, flags: u8, syn: bool, now: u64) {
    // SAFETY: `v` points at a live map value; every field is updated atomically or is a
    // single aligned store.
    unsafe {
        let (pk, by, shift) = if ingress {
            (&raw mut (*v).packets_in, &raw mut (*v).bytes_in, 0)
        } else {
            (&raw mut (*v).packets_out, &raw mut (*v).bytes_out, 8)
        };
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(pk, 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(by, bytes);
        if syn {
            let one = if ingress { 1 } else { 1 << 32 };
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*v).syns, one);
        }
        let bits = u64::from(flags) << shift;
        let fl = &raw mut (*v).tcp_flags;
        if *fl & bits != bits {
            atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(fl, bits);
        }
        let last = &raw mut (*v).last_seen_ns;
        if *last < now {
            *last = now;
        }
    }
}

/// Returns a pointer to `size_of::<T>()` bytes at `off`, pulling non-linear data in first when
/// the linear area is too short.
///
/// The bounds check is made on `data + off` plus a constant, so the verifier learns the range
/// of the very pointer that is returned (checking `data + (off + size)` would not tell it).
/// `skb->data`, read afresh: a volatile load keeps LLVM from caching the 32-bit field across
/// blocks and zero-extending it later, which the verifier rejects as pointer arithmetic.
#[inline(always)]
fn data(ctx: &TcContext) -> *const u8 {
    // SAFETY: reads a context field of the live skb.
    unsafe { core::ptr::read_volatile(&raw const (*ctx.skb.skb).data) as usize as *const u8 }
}

/// `skb->data_end`, read afresh (see [`data`]).
#[inline(always)]
fn data_end(ctx: &TcContext) -> *const u8 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&raw const (*ctx.skb.skb).data_end) as usize as *const u8 }
}

#[inline(always)]
fn ptr_at<T>(ctx: &TcContext, off: usize, pulled: &mut bool) -> Result<*const T, Skip> {
    let size = size_of::<T>();
    let p = data(ctx).wrapping_add(off);
    if p.wrapping_add(size) > data_end(ctx) {
        let need = off + size;
        let len = ctx.len() as usize;
        if need > len {
            return Err(Skip::Truncated);
        }
        let want = if len < PULL_LEN {
            len
        } else if need > PULL_LEN {
            need
        } else {
            PULL_LEN
        };
        if ctx.pull_data(want as u32).is_err() {
            return Err(Skip::PullFailed);
        }
        *pulled = true;
        let p = data(ctx).wrapping_add(off);
        if p.wrapping_add(size) > data_end(ctx) {
            return Err(Skip::Truncated);
        }
        return Ok(p.cast());
    }
    Ok(p.cast())
}

#[inline(always)]
fn is_ext_header(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
    )
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
fn parse(ctx: &TcContext, pulled: &mut bool) -> Result<Parsed, Skip> {
    let skb: *mut __sk_buff = ctx.skb.skb;
    // SAFETY: context field read.
    let mut vlan = unsafe { (*skb).vlan_present } != 0;
    // Ethernet and up to two VLAN tags in the packet (a tag in skb metadata was already removed
    // from the bytes by the kernel).
    let eth: *const [u8; ETH_HLEN] = ptr_at(ctx, 0, pulled)?;
    // SAFETY: ptr_at checked the bounds.
    let mut proto = unsafe { be16([(*eth)[12], (*eth)[13]]) };
    let mut l3 = ETH_HLEN;
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD || proto == ETH_P_QINQ1 {
        vlan = true;
        let t: *const [u8; 4] = ptr_at(ctx, l3, pulled)?;
        // SAFETY: bounds checked.
        proto = unsafe { be16([(*t)[2], (*t)[3]]) };
        l3 += 4;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD || proto == ETH_P_QINQ1 {
            let t: *const [u8; 4] = ptr_at(ctx, l3, pulled)?;
            // SAFETY: bounds checked.
            proto = unsafe { be16([(*t)[2], (*t)[3]]) };
            l3 += 4;
        }
    }
    let mut p = Parsed {
        family: 0,
        proto: 0,
        src: [0; 4],
        dst: [0; 4],
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        fragment: false,
        vlan,
    };
    let l4 = match proto {
        ETH_P_IP => {
            let ip: *const [u8; 20] = ptr_at(ctx, l3, pulled)?;
            // SAFETY: bounds checked; the array is copied out before the next pull.
            let ip = unsafe { *ip };
            if ip[0] >> 4 != 4 {
                return Err(Skip::Malformed);
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ihl < 20 {
                return Err(Skip::Malformed);
            }
            p.family = FAMILY_V4;
            p.proto = ip[9];
            p.src[0] = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]);
            p.dst[0] = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]);
            p.fragment = be16([ip[6], ip[7]]) & 0x1fff != 0;
            l3 + ihl
        }
        ETH_P_IPV6 => {
            let ip: *const [u32; 10] = ptr_at(ctx, l3, pulled)?;
            // SAFETY: bounds checked; copied out.
            let ip = unsafe { *ip };
            let w0 = ip[0].to_ne_bytes();
            if w0[0] >> 4 != 6 {
                return Err(Skip::Malformed);
            }
            p.family = FAMILY_V6;
            p.src = [ip[2], ip[3], ip[4], ip[5]];
            p.dst = [ip[6], ip[7], ip[8], ip[9]];
            let mut next = ip[1].to_ne_bytes()[2];
            let mut off = l3 + 40;
            for _ in 0..MAX_EXT_HEADERS {
                match next {
                    IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH => {
                        if off > MAX_L4_OFFSET {
                            return Err(Skip::Malformed);
                        }
                        let h: *const [u8; 2] = ptr_at(ctx, off, pulled)?;
                        // SAFETY: bounds checked.
                        let h = unsafe { *h };
                        off += if next == IPPROTO_AH {
                            (usize::from(h[1]) + 2) * 4
                        } else {
                            (usize::from(h[1]) + 1) * 8
                        };
                        next = h[0];
                    }
                    IPPROTO_FRAGMENT => {
                        if off > MAX_L4_OFFSET {
                            return Err(Skip::Malformed);
                        }
                        let h: *const [u8; 8] = ptr_at(ctx, off, pulled)?;
                        // SAFETY: bounds checked.
                        let h = unsafe { *h };
                        next = h[0];
                        off += 8;
                        if be16([h[2], h[3]]) & 0xfff8 != 0 {
                            // A later fragment: what follows is payload, not headers.
                            p.fragment = true;
                            break;
                        }
                    }
                    _ => break,
                }
            }
            if is_ext_header(next) {
                return Err(Skip::ExtLimit);
            }
            p.proto = next;
            off
        }
        _ => return Err(Skip::NonIp),
    };
    if p.fragment {
        return Ok(p);
    }
    if l4 > MAX_L4_OFFSET {
        return Err(Skip::Malformed);
    }
    match p.proto {
        IPPROTO_TCP => {
            let t: *const [u8; 14] = ptr_at(ctx, l4, pulled)?;
            // SAFETY: bounds checked.
            let t = unsafe { *t };
            if t[12] >> 4 < 5 {
                return Err(Skip::Malformed);
            }
            p.sport = be16([t[0], t[1]]);
            p.dport = be16([t[2], t[3]]);
            p.tcp_flags = t[13];
        }
        IPPROTO_UDP | IPPROTO_SCTP => {
            let t: *const [u8; 4] = ptr_at(ctx, l4, pulled)?;
            // SAFETY: bounds checked.
            let t = unsafe { *t };
            p.sport = be16([t[0], t[1]]);
            p.dport = be16([t[2], t[3]]);
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let t: *const [u8; 2] = ptr_at(ctx, l4, pulled)?;
            // SAFETY: bounds checked.
            let t = unsafe { *t };
            p.dport = be16([t[0], t[1]]);
        }
        _ => {}
    }
    Ok(p)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
