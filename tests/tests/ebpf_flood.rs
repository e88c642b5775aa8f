//! A flood of 200,000 distinct flows against a small flow map and flow cache: the per-port
//! totals stay exact (they do not depend on flow detail), every flow that did not fit is
//! counted, and the interval is marked approximate.
use std::net::Ipv4Addr;

use portwatch::capture::Backend;
use portwatch::capture::ebpf::{EbpfBackend, EbpfConfig};
use portwatch::flow::{Direction, Side, Snapshot, Transport};
use portwatch_tests::{FrameBuilder, Link, PinDir, TxRing, require_root};

const SOURCES: u16 = 4;
const PORTS: u16 = 50_000;
const FIRST_PORT: u16 = 10_000;
const CAPACITY: u32 = 4096;
/// Flow-cache slots per bank and CPU: the cache and the map together can drain more than
/// CAPACITY flows, of which the agent keeps the CAPACITY seen first.
const CACHE_SLOTS: u32 = 1024;
const DPORT: u16 = 5300;

fn sum_in(s: &Snapshot, pred: impl Fn(u16, Side) -> bool) -> (u64, u64) {
    s.ports
        .iter()
        .filter(|p| p.transport == Transport::Udp && p.dir == Direction::In && pred(p.port, p.side))
        .fold((0, 0), |(n, b), p| {
            (n + p.counts.packets, b + p.counts.bytes)
        })
}

#[test]
fn flood_of_distinct_flows_keeps_port_totals_exact() {
    if !require_root("flood_of_distinct_flows_keeps_port_totals_exact") {
        return;
    }
    let link = Link::new().unwrap();
    let pins = PinDir::new("flood").unwrap();
    let cfg = EbpfConfig {
        ifaces: Some(vec![link.a_if.clone()]),
        flow_capacity: CAPACITY,
        flow_cache_slots: Some(CACHE_SLOTS),
        pin_dir: pins.path.clone(),
        ..EbpfConfig::default()
    };
    let mut backend = link.a.run(move || EbpfBackend::open(cfg).unwrap());
    // What flow detail can hold in one interval.
    let room = u64::from(CAPACITY);
    let fb = FrameBuilder {
        dst_mac: Link::mac(&link.a, &link.a_if).unwrap(),
        src_mac: Link::mac(&link.b, &link.b_if).unwrap(),
        vlans: Vec::new(),
    };
    let base = link.b_v4.octets();
    let frame_len = fb.udp4(link.b_v4, link.a_v4, 1, DPORT, &[0u8; 18]).len() as u64;
    let total = u64::from(SOURCES) * u64::from(PORTS);
    let (mut packets, mut bytes, mut remote, mut recorded, mut full) = (0, 0, 0, 0, 0);
    let mut approximate = false;
    // Two halves, one interval each: totals exact across intervals too.
    for half in 0..2u16 {
        let frames: Vec<Vec<u8>> = (0..SOURCES)
            .flat_map(|s| {
                let src = Ipv4Addr::new(base[0], base[1], base[2], 100 + s as u8);
                let fb = fb.clone();
                let dst = link.a_v4;
                (0..PORTS / 2).map(move |i| {
                    fb.udp4(
                        src,
                        dst,
                        FIRST_PORT + half * (PORTS / 2) + i,
                        DPORT,
                        &[0u8; 18],
                    )
                })
            })
            .collect();
        let n = frames.len() as u64;
        let ifname = link.b_if.clone();
        link.b.run(move || {
            let mut ring = TxRing::open(&ifname).unwrap();
            assert_eq!(ring.send_all(frames.iter().map(Vec::as_slice)).unwrap(), n);
        });
        let s = backend.collect(u64::from(half) + 1).unwrap();
        let (p, b) = sum_in(&s, |port, side| port == DPORT && side == Side::Local);
        packets += p;
        bytes += b;
        remote += sum_in(&s, |port, side| {
            side == Side::Remote && (FIRST_PORT..FIRST_PORT + PORTS).contains(&port)
        })
        .0;
        let here = s
            .flows
            .iter()
            .filter(|f| f.key.transport == Transport::Udp && f.key.local.port == DPORT)
            .count() as u64;
        assert!(here <= room, "{here} flows recorded, room for {room}");
        assert!(
            here + s.health.flow_table_full >= n && here + s.health.flow_table_full <= n + 64,
            "every flow either recorded or counted as dropped: {here} recorded, {} dropped, {n} sent",
            s.health.flow_table_full
        );
        recorded += here;
        full += s.health.flow_table_full;
        approximate |= s.health.flows_approximate();
        let k = backend.kernel_counters().unwrap();
        eprintln!(
            "half {half}: health {:?}; kernel counters {:?}",
            s.health, k.c
        );
        assert_eq!(s.health.port_table_full, 0);
    }
    assert_eq!(
        packets, total,
        "per-port total of the flooded port is exact"
    );
    assert_eq!(bytes, total * frame_len);
    assert_eq!(
        remote, total,
        "every source port counted on the remote side"
    );
    assert!(full >= total - 2 * room);
    assert!(recorded > 0);
    assert!(approximate);
}
