//! The eBPF backend counts real UDP traffic between two network namespaces exactly (IPv4 and
//! IPv6), into both the per-port totals and flow detail (the flow cache and, beyond it, the
//! flow map), and detaches cleanly.
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use portwatch::capture::Backend;
use portwatch::capture::ebpf::{CacheSize, CacheSizeSource, EbpfBackend, EbpfConfig};
use portwatch::flow::{Direction, PortCounts, Side, Snapshot, Transport};
use portwatch_tests::{Link, PinDir, require_root};

const N: u64 = 250;
const PAYLOAD: usize = 100;

fn config(link: &Link, pins: &PinDir) -> EbpfConfig {
    EbpfConfig {
        ifaces: Some(vec![link.a_if.clone()]),
        flow_capacity: 1024,
        pin_dir: pins.path.clone(),
        ..EbpfConfig::default()
    }
}

fn port(s: &Snapshot, t: Transport, port: u16, side: Side, dir: Direction) -> PortCounts {
    let mut c = PortCounts::default();
    for p in &s.ports {
        if (p.transport, p.port, p.side, p.dir) == (t, port, side, dir) {
            c.add(&p.counts);
        }
    }
    c
}

/// Sends `n` datagrams from namespace b to `dst` (from source port `sport`) and waits until
/// `rx` (bound in namespace a) received them all.
fn send_and_receive(link: &Link, rx: &UdpSocket, src: IpAddr, sport: u16, dst: SocketAddr, n: u64) {
    link.b.run(move || {
        let tx = UdpSocket::bind(SocketAddr::new(src, sport)).expect("bind sender");
        let payload = [0x5au8; PAYLOAD];
        for _ in 0..n {
            tx.send_to(&payload, dst).expect("send");
        }
    });
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 2048];
    for i in 0..n {
        let (len, _) = rx
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {i} of {n} not received: {e}"));
        assert_eq!(len, PAYLOAD);
    }
}

#[test]
fn udp_over_ipv4_and_ipv6_is_counted_exactly() {
    if !require_root("udp_over_ipv4_and_ipv6_is_counted_exactly") {
        return;
    }
    let link = Link::new().expect("namespaces and veth");
    let pins = PinDir::new("udp").expect("pin dir");
    let cfg = config(&link, &pins);
    let (a4, a6) = (link.a_v4, link.a_v6);
    let (mut backend, rx4, rx6) = link.a.run(move || {
        let b = EbpfBackend::open(cfg).expect("open the eBPF backend");
        let rx4 = UdpSocket::bind((a4, 7001)).unwrap();
        let rx6 = UdpSocket::bind((a6, 7002)).unwrap();
        (b, rx4, rx6)
    });
    assert_eq!(backend.interfaces(), vec![link.a_if.clone()]);
    // No flow-cache size given: the default for this machine's possible CPUs, as created.
    let cache = backend.flow_cache_size();
    let cpus = aya::util::nr_cpus().expect("possible CPUs");
    assert_eq!(cache, CacheSize::pick(None, cpus));
    assert_eq!(cache.source, CacheSizeSource::Default);
    let cache_pin = pins.path.join(portwatch_common::MAP_FLOW_CACHE);
    let cache_map = aya::maps::MapInfo::from_pin(&cache_pin).expect("pinned flow cache");
    assert_eq!(cache_map.max_entries(), 2 * cache.slots);

    send_and_receive(&link, &rx4, link.b_v4.into(), 40001, (a4, 7001).into(), N);
    send_and_receive(&link, &rx6, link.b_v6.into(), 40002, (a6, 7002).into(), N);
    let s = backend.collect(1).expect("collect");

    let v4 = port(&s, Transport::Udp, 7001, Side::Local, Direction::In);
    assert_eq!(v4.packets, N);
    assert_eq!(v4.segments, N);
    assert_eq!(v4.bytes, N * (14 + 20 + 8 + PAYLOAD as u64));
    let v4r = port(&s, Transport::Udp, 40001, Side::Remote, Direction::In);
    assert_eq!((v4r.packets, v4r.bytes), (v4.packets, v4.bytes));
    let v6 = port(&s, Transport::Udp, 7002, Side::Local, Direction::In);
    assert_eq!(v6.packets, N);
    assert_eq!(v6.bytes, N * (14 + 40 + 8 + PAYLOAD as u64));
    // Nothing was sent back on these ports.
    assert_eq!(
        port(&s, Transport::Udp, 7001, Side::Local, Direction::Out).packets,
        0
    );

    let flow4 = s
        .flows
        .iter()
        .find(|f| f.key.transport == Transport::Udp && f.key.local.port == 7001)
        .expect("IPv4 flow recorded");
    assert_eq!(flow4.key.local.addr, IpAddr::from(a4));
    assert_eq!(flow4.key.remote.addr, IpAddr::from(link.b_v4));
    assert_eq!(flow4.key.remote.port, 40001);
    assert_eq!(flow4.stats.inbound.packets, N);
    assert_eq!(flow4.stats.outbound.packets, 0);
    assert!(flow4.stats.first_seen <= flow4.stats.last_seen);
    let flow6 = s
        .flows
        .iter()
        .find(|f| f.key.transport == Transport::Udp && f.key.local.port == 7002)
        .expect("IPv6 flow recorded");
    assert_eq!(flow6.key.remote.addr, IpAddr::from(link.b_v6));
    assert_eq!(flow6.stats.inbound.bytes, v6.bytes);
    assert_eq!(s.health.flow_table_full + s.health.flow_update_errors, 0);
    assert!(s.health.packets_seen >= 2 * N);

    // A second interval without traffic on these ports reports nothing for them.
    let s2 = backend.collect(2).expect("collect");
    assert_eq!(
        port(&s2, Transport::Udp, 7001, Side::Local, Direction::In).packets,
        0
    );
    assert!(s2.flows.iter().all(|f| f.key.local.port != 7001));

    // Detached: traffic sent now is not counted, by this agent or the next one.
    let if_a = link.a_if.clone();
    backend.close().expect("detach");
    let listed = portwatch_tests::tcx_programs(&link.a, &if_a).unwrap();
    assert!(listed.is_empty(), "still attached: {listed:?}");
    send_and_receive(&link, &rx4, link.b_v4.into(), 40001, (a4, 7001).into(), 10);
    let cfg = config(&link, &pins);
    let mut again = link.a.run(move || EbpfBackend::open(cfg).expect("reopen"));
    assert_eq!(
        aya::maps::MapInfo::from_pin(&cache_pin).unwrap().id(),
        cache_map.id(),
        "same settings on the same machine: the pinned flow cache is reused, not resized"
    );
    let s3 = again.collect(3).expect("collect");
    assert_eq!(
        port(&s3, Transport::Udp, 7001, Side::Local, Direction::In).packets,
        0
    );
    assert_eq!(s3.start, 2, "continues after the last interval handed out");
}

/// Unix time now, in ns.
fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn flow_first_and_last_seen_bracket_the_traffic() {
    if !require_root("flow_first_and_last_seen_bracket_the_traffic") {
        return;
    }
    // The kernel reads a coarse clock (one tick, at most 10 ms, behind the precise one) and
    // refreshes last seen when the tick changes: allow two ticks of slack.
    const SLACK: u64 = 20_000_000;
    const GAP: Duration = Duration::from_millis(150);
    let link = Link::new().expect("namespaces and veth");
    let pins = PinDir::new("udptime").expect("pin dir");
    let cfg = config(&link, &pins);
    let a4 = link.a_v4;
    let (mut backend, rx) = link.a.run(move || {
        let b = EbpfBackend::open(cfg).expect("open the eBPF backend");
        (b, UdpSocket::bind((a4, 7003)).unwrap())
    });
    let t0 = unix_ns();
    send_and_receive(&link, &rx, link.b_v4.into(), 40003, (a4, 7003).into(), 3);
    let t1 = unix_ns();
    // Not a synchronisation: time has to pass between the two bursts for last seen to move.
    std::thread::sleep(GAP);
    let t2 = unix_ns();
    send_and_receive(&link, &rx, link.b_v4.into(), 40003, (a4, 7003).into(), 3);
    let t3 = unix_ns();
    let s = backend.collect(1).expect("collect");
    let f = s
        .flows
        .iter()
        .find(|f| f.key.transport == Transport::Udp && f.key.local.port == 7003)
        .expect("flow recorded");
    assert_eq!(f.stats.inbound.packets, 6);
    let (first, last) = (f.stats.first_seen, f.stats.last_seen);
    assert!(
        first + SLACK >= t0 && first <= t1,
        "first seen {first} outside the first burst [{t0}, {t1}]"
    );
    assert!(
        last + SLACK >= t2 && last <= t3,
        "last seen {last} outside the second burst [{t2}, {t3}]"
    );
    backend.close().expect("close");
}

#[test]
fn flows_beyond_the_flow_cache_are_counted_exactly_in_the_flow_map() {
    if !require_root("flows_beyond_the_flow_cache_are_counted_exactly_in_the_flow_map") {
        return;
    }
    // One cache slot per bank and CPU: one flow per CPU and interval is cached, the others go
    // to the flow map; a flow can be in both (cached on one CPU, mapped on another). Every copy
    // is merged into one record with exact counts, interval after interval.
    const FLOWS: u16 = 6;
    const ROUNDS: u64 = 15; // at most 180 datagrams queued: below the receive buffer
    let link = Link::new().expect("namespaces and veth");
    let pins = PinDir::new("udpcache").expect("pin dir");
    let cfg = EbpfConfig {
        flow_cache_slots: Some(1),
        ..config(&link, &pins)
    };
    let a4 = link.a_v4;
    let (mut backend, rx) = link.a.run(move || {
        let b = EbpfBackend::open(cfg).expect("open the eBPF backend");
        (b, UdpSocket::bind((a4, 7004)).unwrap())
    });
    let b4 = link.b_v4;
    for interval in 1..=2u64 {
        // Round-robin over the flows, so cached and mapped flows interleave.
        link.b.run(move || {
            let socks: Vec<UdpSocket> = (0..FLOWS)
                .map(|i| UdpSocket::bind((b4, 41000 + i)).expect("bind sender"))
                .collect();
            for r in 0..ROUNDS * interval {
                for s in &socks {
                    s.send_to(&[r as u8; PAYLOAD], (a4, 7004)).expect("send");
                }
            }
        });
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 2048];
        for i in 0..ROUNDS * interval * u64::from(FLOWS) {
            rx.recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("datagram {i} not received: {e}"));
        }
        let s = backend.collect(interval).expect("collect");
        let ours: Vec<_> = s
            .flows
            .iter()
            .filter(|f| f.key.transport == Transport::Udp && f.key.local.port == 7004)
            .collect();
        assert_eq!(
            ours.len(),
            usize::from(FLOWS),
            "one record per flow: {ours:?}"
        );
        for f in ours {
            assert!((41000..41000 + FLOWS).contains(&f.key.remote.port));
            assert_eq!(f.stats.inbound.packets, ROUNDS * interval, "{f:?}");
            assert_eq!(
                f.stats.inbound.bytes,
                ROUNDS * interval * (14 + 20 + 8 + PAYLOAD as u64)
            );
        }
        assert_eq!(s.health.flow_table_full + s.health.flow_update_errors, 0);
    }
    backend.close().expect("close");
}
