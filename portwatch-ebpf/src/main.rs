//! portwatch's TC programs: parse each frame (Ethernet, 802.1Q/802.1ad, IPv4, IPv6 extension
//! headers, TCP/UDP/SCTP/ICMP) and count it per port and per flow. Parsing and counting only;
//! no policy lives in the kernel, and the programs never change or drop a packet.
//!
//! Headers are read with direct packet access. When a header lies beyond the linear area (frames
//! sent from a packet socket's TX ring carry only the Ethernet header there), the program pulls
//! the bytes it needs once with `bpf_skb_pull_data` and carries on with direct access.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    Global,
    bindings::{__sk_buff, BPF_NOEXIST, TC_ACT_UNSPEC},
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_skb_load_bytes},
    macros::{classifier, map},
    maps::{Array, PerCpuArray, PerCpuHashMap},
    programs::TcContext,
};
use portwatch_common::{
    CNT_EXT_LIMIT, CNT_FLOW_ERR, CNT_FLOW_FULL, CNT_FRAGMENTS, CNT_MALFORMED, CNT_NON_IP,
    CNT_PACKETS, CNT_PORT_ERR, CNT_PORT_FULL, CNT_PULL_FAILED, CNT_PULLED, CNT_TRUNCATED, CNT_VLAN,
    COUNTERS_LEN, DEFAULT_FLOW_CACHE_SLOTS, DEFAULT_FLOW_CAPACITY, DEFAULT_PORT_SLOTS, DIR_EGRESS,
    DIR_INGRESS, FAMILY_V4, FAMILY_V6, FLOW_CACHE_PROBES, FlowKey, FlowSlot, FlowValue,
    PORT_PROBES, PortCounters, PortKey, PortSlot, SIDE_LOCAL, SIDE_REMOTE, flow_hash, port_hash,
};

// Sizes are replaced at load time (`EbpfLoader::map_max_entries`); nothing allocates on the
// packet path.

/// Per-port totals: a per-CPU open-addressing table (see `DEFAULT_PORT_SLOTS`).
#[map(name = "PW_PORT_TOTALS")]
static PORT_TOTALS: PerCpuArray<PortSlot> = PerCpuArray::pinned(DEFAULT_PORT_SLOTS, 0);

/// Slot count minus one of `PORT_TOTALS`, set by the loader.
#[unsafe(no_mangle)]
static PW_PORT_SLOT_MASK: Global<u32> = Global::new(DEFAULT_PORT_SLOTS - 1);

/// Flow detail: a per-CPU hash, so that a packet updates its own CPU's copy of the entry with
/// plain stores (no atomic read-modify-write on a line other CPUs write); userspace merges the
/// copies when it drains the entry.
#[map(name = "PW_FLOWS")]
static FLOWS: PerCpuHashMap<FlowKey, FlowValue> = PerCpuHashMap::pinned(DEFAULT_FLOW_CAPACITY, 0);

/// The flow cache in front of `FLOWS`: per CPU, two banks of open-addressing slots (see
/// `MAP_FLOW_CACHE` in portwatch-common). A packet of a flow found in the active bank costs
/// one inlined array access per probe and plain adds; no hash-map helper call.
#[map(name = "PW_FLOW_CACHE")]
static FLOW_CACHE: PerCpuArray<FlowSlot> = PerCpuArray::pinned(2 * DEFAULT_FLOW_CACHE_SLOTS, 0);

/// The flow cache's active bank (entry 0: 0 or 1), flipped by userspace before it drains the
/// other bank.
#[map(name = "PW_CACHE_BANK")]
static CACHE_BANK: Array<u32> = Array::pinned(1, 0);

/// Slots per bank minus one of `FLOW_CACHE`, set by the loader.
#[unsafe(no_mangle)]
static PW_FLOW_CACHE_MASK: Global<u32> = Global::new(DEFAULT_FLOW_CACHE_SLOTS - 1);

/// One u64 per `CNT_*` index. Each counter is looked up by index rather than reached by adding
/// an index to one value pointer: without CAP_PERFMON the verifier refuses pointer arithmetic
/// whose offset differs between paths, which LLVM produces when it merges increments.
#[map(name = "PW_COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTERS_LEN as u32, 0);

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
/// Largest header offset the parser reads with `bpf_skb_load_bytes` (a bound on the walk).
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
    observe::<true>(&ctx);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn portwatch_egress(ctx: TcContext) -> i32 {
    observe::<false>(&ctx);
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

/// Parser findings that are not part of the flow key.
#[derive(Default)]
struct Meta {
    tcp_flags: u8,
    fragment: bool,
    vlan: bool,
    pulled: bool,
}

/// Adds one to this CPU's counter `i` (a `CNT_*` index).
#[inline(always)]
fn bump(i: usize) {
    if let Some(c) = COUNTERS.get_ptr_mut(i as u32) {
        // SAFETY: this CPU's slot; programs do not nest on one CPU.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn observe<const INGRESS: bool>(ctx: &TcContext) {
    bump(CNT_PACKETS);
    let mut key = FlowKey::default();
    let mut meta = Meta::default();
    let res = parse::<INGRESS>(ctx, &mut key, &mut meta);
    if meta.pulled {
        bump(CNT_PULLED);
    }
    if let Err(e) = res {
        match e {
            Skip::Truncated => bump(CNT_TRUNCATED),
            Skip::Malformed => bump(CNT_MALFORMED),
            Skip::NonIp => bump(CNT_NON_IP),
            Skip::PullFailed => bump(CNT_PULL_FAILED),
            Skip::ExtLimit => bump(CNT_EXT_LIMIT),
        }
        return;
    }
    if meta.vlan {
        bump(CNT_VLAN);
    }
    if meta.fragment {
        bump(CNT_FRAGMENTS);
    }
    let skb = ctx.skb.skb;
    // SAFETY: reads of __sk_buff context fields.
    let (len, segs, vlan_meta) = unsafe { ((*skb).len, (*skb).gso_segs, (*skb).vlan_present) };
    let bytes = u64::from(len) + if vlan_meta != 0 { 4 } else { 0 };
    let f = meta.tcp_flags;
    let syn = f & (TCP_SYN | TCP_ACK) == TCP_SYN;
    let inc = PortCounters {
        packets: 1,
        segments: if segs > 1 { u64::from(segs) } else { 1 },
        bytes,
        syn: u64::from(syn),
        synack: u64::from(f & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK),
        fin: u64::from(f & TCP_FIN != 0),
        rst: u64::from(f & TCP_RST != 0),
    };
    let dir = if INGRESS { DIR_INGRESS } else { DIR_EGRESS };
    count_port(
        PortKey::to_word(key.local_port, key.proto, SIDE_LOCAL, dir),
        &inc,
    );
    count_port(
        PortKey::to_word(key.remote_port, key.proto, SIDE_REMOTE, dir),
        &inc,
    );
    count_flow::<INGRESS>(&key, bytes, f, syn);
}

/// Adds `inc` to this CPU's totals for the key `word` ([`PortKey::to_word`]): linear probing
/// from the key's hash, claiming the first free slot when the key is new. The table is this
/// CPU's own, and programs do not nest on one CPU, so nothing else writes the slot meanwhile.
#[inline(always)]
fn count_port(word: u64, inc: &PortCounters) {
    let mask = PW_PORT_SLOT_MASK.load();
    let h = port_hash(word);
    for i in 0..PORT_PROBES {
        let Some(slot) = PORT_TOTALS.get_ptr_mut(h.wrapping_add(i) & mask) else {
            bump(CNT_PORT_ERR);
            return;
        };
        // SAFETY: this CPU's slot (see above).
        let slot = unsafe { &mut *slot };
        if slot.key == word {
            slot.counters.add(inc);
            return;
        }
        if slot.key == 0 {
            slot.key = word;
            slot.counters.add(inc);
            return;
        }
    }
    bump(CNT_PORT_FULL);
}

/// Adds the packet to this CPU's copy of its flow: in the flow cache when the flow has a slot
/// there or a free one within `FLOW_CACHE_PROBES`, else in the flow map, inserting the flow
/// when new.
///
/// The time is read in two steps: `bpf_jiffies64` (which the verifier inlines into one load on
/// x86-64) on every packet, and the coarse monotonic clock (a helper call) only when the tick
/// differs from this CPU's previous packet of the flow. The coarse clock only moves at ticks,
/// so `last_seen_ns` is what reading it at every packet would give, at most a few times per
/// tick instead of on every packet.
#[inline(always)]
fn count_flow<const INGRESS: bool>(key: &FlowKey, bytes: u64, flags: u8, syn: bool) {
    // SAFETY: helper without arguments.
    let tick = unsafe { bpf_jiffies64() } as u32;
    if cache_flow::<INGRESS>(key, bytes, flags, syn, tick) {
        return;
    }
    if let Some(v) = FLOWS.get_ptr_mut(key) {
        update_flow::<INGRESS>(v, bytes, flags, syn, tick);
        return;
    }
    new_flow::<INGRESS>(key, bytes, u16::from(flags) | (u16::from(syn) << 8), tick);
}

/// Counts the packet in this CPU's flow cache, active bank; false when every probed slot holds
/// another flow (the caller then uses the flow map). The cache is this CPU's own and programs
/// do not nest on one CPU, so nothing else writes a slot meanwhile; userspace only touches the
/// bank that is not active, after every program run that could still use it has ended.
#[inline(always)]
fn cache_flow<const INGRESS: bool>(
    key: &FlowKey,
    bytes: u64,
    flags: u8,
    syn: bool,
    tick: u32,
) -> bool {
    let Some(bank) = CACHE_BANK.get(0) else {
        return false;
    };
    let mask = PW_FLOW_CACHE_MASK.load();
    let base = (*bank & 1) * (mask + 1);
    let w = key.words();
    let h = flow_hash(&w);
    for i in 0..FLOW_CACHE_PROBES {
        let Some(slot) = FLOW_CACHE.get_ptr_mut(base + (h.wrapping_add(i) & mask)) else {
            return false;
        };
        // SAFETY: this CPU's slot (see above); a FlowSlot starts with the 40-byte key, at an
        // 8-byte aligned offset.
        let sw = unsafe { &*slot.cast::<[u64; 5]>() };
        if sw[4] == w[4] && sw[0] == w[0] && sw[2] == w[2] && sw[1] == w[1] && sw[3] == w[3] {
            // SAFETY: as above.
            update_flow::<INGRESS>(unsafe { &raw mut (*slot).value }, bytes, flags, syn, tick);
            return true;
        }
        if sw[4] == 0 {
            install_flow::<INGRESS>(
                slot,
                key,
                bytes,
                u16::from(flags) | (u16::from(syn) << 8),
                tick,
            );
            return true;
        }
    }
    false
}

/// First packet of a flow in this CPU's bank (out of line): claims the free `slot`.
/// `flags_syn` as in [`new_flow`].
#[inline(never)]
fn install_flow<const INGRESS: bool>(
    slot: *mut FlowSlot,
    key: &FlowKey,
    bytes: u64,
    flags_syn: u16,
    tick: u32,
) {
    // SAFETY: this CPU's free slot.
    let slot = unsafe { &mut *slot };
    slot.key = *key;
    slot.value = first_value::<INGRESS>(bytes, flags_syn, tick);
}

/// The value of a flow's first packet on this CPU.
#[inline(always)]
fn first_value<const INGRESS: bool>(bytes: u64, flags_syn: u16, tick: u32) -> FlowValue {
    let flags = flags_syn as u8;
    let syn = flags_syn & 0x100 != 0;
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let mut init = FlowValue {
        first_seen_ns: now,
        last_seen_ns: now,
        last_tick: tick,
        ..FlowValue::default()
    };
    if INGRESS {
        init.packets_in = 1;
        init.bytes_in = bytes;
        init.flags_in = flags;
        init.syns_in = u32::from(syn);
    } else {
        init.packets_out = 1;
        init.bytes_out = bytes;
        init.flags_out = flags;
        init.syns_out = u32::from(syn);
    }
    init
}

/// The rare path, out of line: first packet of a flow in the flow map (this CPU's cache slots
/// for it were all taken). `flags_syn` is the TCP flag byte, plus
/// 0x100 for a SYN without ACK (a BPF function takes at most five arguments). The insert sets
/// this CPU's copy and zeroes the others; only this copy carries `first_seen_ns`.
#[inline(never)]
fn new_flow<const INGRESS: bool>(key: &FlowKey, bytes: u64, flags_syn: u16, tick: u32) {
    let flags = flags_syn as u8;
    let syn = flags_syn & 0x100 != 0;
    let init = first_value::<INGRESS>(bytes, flags_syn, tick);
    match FLOWS.insert(key, init, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        Err(e) if e == -EEXIST => match FLOWS.get_ptr_mut(key) {
            Some(v) => update_flow::<INGRESS>(v, bytes, flags, syn, tick),
            None => bump(CNT_FLOW_ERR),
        },
        Err(e) if e == -E2BIG => bump(CNT_FLOW_FULL),
        Err(_) => bump(CNT_FLOW_ERR),
    }
}

#[inline(always)]
fn update_flow<const INGRESS: bool>(
    v: *mut FlowValue,
    bytes: u64,
    flags: u8,
    syn: bool,
    tick: u32,
) {
    // SAFETY: `v` points at this CPU's copy of a live entry; programs do not nest on one CPU,
    // so nothing else writes it meanwhile (userspace only reads it when draining).
    let v = unsafe { &mut *v };
    if INGRESS {
        v.packets_in += 1;
        v.bytes_in += bytes;
        v.flags_in |= flags;
        v.syns_in += u32::from(syn);
    } else {
        v.packets_out += 1;
        v.bytes_out += bytes;
        v.flags_out |= flags;
        v.syns_out += u32::from(syn);
    }
    // A copy zeroed by another CPU's insert has tick 0 and no time: read the clock too.
    if v.last_tick != tick || v.last_seen_ns == 0 {
        v.last_tick = tick;
        // SAFETY: helper without arguments. One CPU reads a monotonic clock: its own readings
        // never go back.
        v.last_seen_ns = unsafe { bpf_ktime_get_coarse_ns() };
    }
}

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

/// Returns a pointer to `size_of::<T>()` bytes at `off`, pulling non-linear data in first when
/// the linear area is too short.
///
/// The bounds check is made on `data + off` plus a constant, so the verifier learns the range
/// of the very pointer that is returned (checking `data + (off + size)` would not tell it).
#[inline(always)]
fn ptr_at<T>(ctx: &TcContext, off: usize, meta: &mut Meta) -> Result<*const T, Skip> {
    let size = size_of::<T>();
    let p = data(ctx).wrapping_add(off);
    if p.wrapping_add(size) <= data_end(ctx) {
        return Ok(p.cast());
    }
    pull(ctx, off + size, meta)?;
    let p = data(ctx).wrapping_add(off);
    if p.wrapping_add(size) > data_end(ctx) {
        return Err(Skip::Truncated);
    }
    Ok(p.cast())
}

/// Makes at least `need` bytes linear (`PULL_LEN` when the frame has them, so that one pull
/// usually covers every header).
#[inline(never)]
fn pull(ctx: &TcContext, need: usize, meta: &mut Meta) -> Result<(), Skip> {
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
    meta.pulled = true;
    Ok(())
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

/// Copies `N` bytes at `off` into a stack buffer with `bpf_skb_load_bytes` (works on
/// non-linear data too). Used where the offset depends on the packet (IPv4 options, IPv6
/// extension headers): the verifier only lets a program with CAP_PERFMON add a variable to a
/// packet pointer, and the agent is meant to run without it.
#[inline(always)]
fn load<const N: usize>(ctx: &TcContext, off: usize) -> Result<[u8; N], Skip> {
    let mut buf = [0u8; N];
    if off > MAX_L4_OFFSET {
        return Err(Skip::Malformed);
    }
    // SAFETY: the helper writes at most N bytes into our buffer.
    let rc = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            off as u32,
            buf.as_mut_ptr().cast(),
            N as u32,
        )
    };
    if rc != 0 {
        return Err(Skip::Truncated);
    }
    Ok(buf)
}

/// Fills `key` (oriented: the local end is the destination on ingress, the source on egress)
/// and `meta` from the frame.
///
/// Every direct packet access is at an offset that is a constant in its copy of the code
/// (Ethernet without tags, or with one or two tags in the bytes; IPv4 without options; IPv6
/// without extension headers); the rest goes through [`load`].
#[inline(always)]
fn parse<const INGRESS: bool>(
    ctx: &TcContext,
    key: &mut FlowKey,
    meta: &mut Meta,
) -> Result<(), Skip> {
    let skb: *mut __sk_buff = ctx.skb.skb;
    // SAFETY: context field read.
    meta.vlan = unsafe { (*skb).vlan_present } != 0;
    // Ethernet and up to two VLAN tags in the packet (a tag in skb metadata was already removed
    // from the bytes by the kernel).
    let eth: *const [u8; ETH_HLEN] = ptr_at(ctx, 0, meta)?;
    // SAFETY: ptr_at checked the bounds.
    let proto = unsafe { be16([(*eth)[12], (*eth)[13]]) };
    match proto {
        ETH_P_IP => ipv4::<INGRESS>(ctx, ETH_HLEN, key, meta),
        ETH_P_IPV6 => ipv6::<INGRESS>(ctx, ETH_HLEN, key, meta),
        ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ1 => {
            meta.vlan = true;
            let t: *const [u8; 4] = ptr_at(ctx, ETH_HLEN, meta)?;
            // SAFETY: bounds checked.
            let inner = unsafe { be16([(*t)[2], (*t)[3]]) };
            match inner {
                ETH_P_IP => ipv4::<INGRESS>(ctx, ETH_HLEN + 4, key, meta),
                ETH_P_IPV6 => ipv6::<INGRESS>(ctx, ETH_HLEN + 4, key, meta),
                ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ1 => {
                    let t: *const [u8; 4] = ptr_at(ctx, ETH_HLEN + 4, meta)?;
                    // SAFETY: bounds checked.
                    let inner = unsafe { be16([(*t)[2], (*t)[3]]) };
                    match inner {
                        ETH_P_IP => ipv4::<INGRESS>(ctx, ETH_HLEN + 8, key, meta),
                        ETH_P_IPV6 => ipv6::<INGRESS>(ctx, ETH_HLEN + 8, key, meta),
                        _ => Err(Skip::NonIp),
                    }
                }
                _ => Err(Skip::NonIp),
            }
        }
        _ => Err(Skip::NonIp),
    }
}

#[inline(always)]
fn ipv4<const INGRESS: bool>(
    ctx: &TcContext,
    l3: usize,
    key: &mut FlowKey,
    meta: &mut Meta,
) -> Result<(), Skip> {
    let ip: *const [u32; 5] = ptr_at(ctx, l3, meta)?;
    // SAFETY: bounds checked; copied out before any further pull.
    let ip = unsafe { *ip };
    let w0 = ip[0].to_ne_bytes();
    if w0[0] >> 4 != 4 {
        return Err(Skip::Malformed);
    }
    let ihl = usize::from(w0[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(Skip::Malformed);
    }
    let w1 = ip[1].to_ne_bytes();
    meta.fragment = be16([w1[2], w1[3]]) & 0x1fff != 0;
    key.family = FAMILY_V4;
    key.proto = ip[2].to_ne_bytes()[1];
    if INGRESS {
        key.local_addr[0] = ip[4];
        key.remote_addr[0] = ip[3];
    } else {
        key.local_addr[0] = ip[3];
        key.remote_addr[0] = ip[4];
    }
    if meta.fragment {
        return Ok(());
    }
    if ihl == 20 {
        transport::<INGRESS>(ctx, l3 + 20, key, meta)
    } else {
        transport_loaded::<INGRESS>(ctx, l3 + ihl, key, meta)
    }
}

#[inline(always)]
fn ipv6<const INGRESS: bool>(
    ctx: &TcContext,
    l3: usize,
    key: &mut FlowKey,
    meta: &mut Meta,
) -> Result<(), Skip> {
    let ip: *const [u32; 10] = ptr_at(ctx, l3, meta)?;
    // SAFETY: bounds checked; copied out.
    let ip = unsafe { *ip };
    if ip[0].to_ne_bytes()[0] >> 4 != 6 {
        return Err(Skip::Malformed);
    }
    key.family = FAMILY_V6;
    let src = [ip[2], ip[3], ip[4], ip[5]];
    let dst = [ip[6], ip[7], ip[8], ip[9]];
    if INGRESS {
        key.local_addr = dst;
        key.remote_addr = src;
    } else {
        key.local_addr = src;
        key.remote_addr = dst;
    }
    let next = ip[1].to_ne_bytes()[2];
    key.proto = next;
    if !is_ext_header(next) {
        return transport::<INGRESS>(ctx, l3 + 40, key, meta);
    }
    ext_headers::<INGRESS>(ctx, l3 + 40, next, key, meta)
}

/// Walks IPv6 extension headers (rare; out of line, read with `bpf_skb_load_bytes`).
#[inline(never)]
fn ext_headers<const INGRESS: bool>(
    ctx: &TcContext,
    start: usize,
    first: u8,
    key: &mut FlowKey,
    meta: &mut Meta,
) -> Result<(), Skip> {
    let mut next = first;
    let mut off = start;
    for _ in 0..MAX_EXT_HEADERS {
        if !is_ext_header(next) {
            break;
        }
        let h = load::<4>(ctx, off)?;
        if next == IPPROTO_FRAGMENT {
            next = h[0];
            off += 8;
            if be16([h[2], h[3]]) & 0xfff8 != 0 {
                // A later fragment: what follows is payload, not headers.
                meta.fragment = true;
                key.proto = next;
                return Ok(());
            }
        } else {
            off += if next == IPPROTO_AH {
                (usize::from(h[1]) + 2) * 4
            } else {
                (usize::from(h[1]) + 1) * 8
            };
            next = h[0];
        }
    }
    if is_ext_header(next) {
        return Err(Skip::ExtLimit);
    }
    key.proto = next;
    transport_loaded::<INGRESS>(ctx, off, key, meta)
}

/// Sets the ports (and TCP flags) from the transport header at `l4`, a constant offset in each
/// inlined copy, read directly.
#[inline(always)]
fn transport<const INGRESS: bool>(
    ctx: &TcContext,
    l4: usize,
    key: &mut FlowKey,
    meta: &mut Meta,
) -> Result<(), Skip> {
    let (sport, dport) = match key.proto {
        IPPROTO_TCP => {
            let t: *const [u8; 14] = ptr_at(ctx, l4, meta)?;
            // SAFETY: bounds checked.
            let t = unsafe { *t };
            tcp_ports(&t, meta)?
        }
        IPPROTO_UDP | IPPROTO_SCTP => {
            let t: *const [u8; 4] = ptr_at(ctx, l4, meta)?;
            // SAFETY: bounds checked.
            let t = unsafe { *t };
            (be16([t[0], t[1]]), be16([t[2], t[3]]))
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let t: *const [u8; 2] = ptr_at(ctx, l4, meta)?;
            // SAFETY: bounds checked.
            let t = unsafe { *t };
            (0, be16([t[0], t[1]]))
        }
        _ => (0, 0),
    };
    set_ports::<INGRESS>(key, sport, dport);
    Ok(())
}

/// As [`transport`], for a transport header at an offset that depends on the packet.
#[inline(never)]
fn transport_loaded<const INGRESS: bool>(
    ctx: &TcContext,
    l4: usize,
    key: &mut FlowKey,
    meta: &mut Meta,
) -> Result<(), Skip> {
    let (sport, dport) = match key.proto {
        IPPROTO_TCP => {
            let t = load::<14>(ctx, l4)?;
            tcp_ports(&t, meta)?
        }
        IPPROTO_UDP | IPPROTO_SCTP => {
            let t = load::<4>(ctx, l4)?;
            (be16([t[0], t[1]]), be16([t[2], t[3]]))
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let t = load::<2>(ctx, l4)?;
            (0, be16([t[0], t[1]]))
        }
        _ => (0, 0),
    };
    set_ports::<INGRESS>(key, sport, dport);
    Ok(())
}

#[inline(always)]
fn tcp_ports(t: &[u8; 14], meta: &mut Meta) -> Result<(u16, u16), Skip> {
    if t[12] >> 4 < 5 {
        return Err(Skip::Malformed);
    }
    meta.tcp_flags = t[13];
    Ok((be16([t[0], t[1]]), be16([t[2], t[3]])))
}

#[inline(always)]
fn set_ports<const INGRESS: bool>(key: &mut FlowKey, sport: u16, dport: u16) {
    if INGRESS {
        key.local_port = dport;
        key.remote_port = sport;
    } else {
        key.local_port = sport;
        key.remote_port = dport;
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
