//! One observation model for every backend: the libpcap and eBPF backends watch the same veth
//! interface while real UDP (IPv4, IPv6) and TCP traffic crosses it, and must report the same
//! per-port totals (packets, bytes, SYN/FIN/RST) and the same flows. Segments are not compared:
//! eBPF counts a GSO super-packet's wire segments, libpcap cannot see them.
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use portwatch::capture::Backend;
use portwatch::capture::ebpf::{EbpfBackend, EbpfConfig};
use portwatch::capture::pcap::{PcapBackend, PcapConfig, merge_snapshots};
use portwatch::flow::{Direction, FlowKey, Side, Snapshot, Transport};
use portwatch_tests::{Link, PinDir, require_root};

const UDP4: u16 = 7101;
const TCP4: u16 = 7102;
const UDP6: u16 = 7103;
const OURS: [u16; 3] = [UDP4, TCP4, UDP6];

type Key = (Transport, u16, Side, Direction);

/// Per-port (packets, bytes, syn, synack, fin, rst) for the flows that touch our ports.
fn totals(s: &Snapshot, ours: &[u16]) -> BTreeMap<Key, [u64; 6]> {
    let mut m = BTreeMap::new();
    // Only the rows of our service ports and of the peers' ports of our flows.
    let peer_ports: Vec<u16> = s
        .flows
        .iter()
        .filter(|f| ours.contains(&f.key.local.port))
        .map(|f| f.key.remote.port)
        .collect();
    for p in &s.ports {
        let mine = match p.side {
            Side::Local => ours.contains(&p.port),
            Side::Remote => peer_ports.contains(&p.port),
        };
        if mine && p.transport != Transport::Icmpv6 {
            let c = &p.counts;
            let e = m
                .entry((p.transport, p.port, p.side, p.dir))
                .or_insert([0; 6]);
            for (slot, v) in e
                .iter_mut()
                .zip([c.packets, c.bytes, c.syn, c.synack, c.fin, c.rst])
            {
                *slot += v;
            }
        }
    }
    m
}

/// Per-flow (packets in, bytes in, packets out, bytes out, flags in, flags out).
fn flows(s: &Snapshot, ours: &[u16]) -> BTreeMap<FlowKey, [u64; 6]> {
    s.flows
        .iter()
        .filter(|f| ours.contains(&f.key.local.port))
        .map(|f| {
            let st = &f.stats;
            (
                f.key,
                [
                    st.inbound.packets,
                    st.inbound.bytes,
                    st.outbound.packets,
                    st.outbound.bytes,
                    u64::from(st.flags_in.0),
                    u64::from(st.flags_out.0),
                ],
            )
        })
        .collect()
}

#[test]
fn pcap_and_ebpf_report_the_same_counts_for_the_same_traffic() {
    if !require_root("pcap_and_ebpf_report_the_same_counts_for_the_same_traffic") {
        return;
    }
    let link = Link::new().expect("namespaces and veth");
    let pins = PinDir::new("pcapcmp").expect("pin dir");
    let ecfg = EbpfConfig {
        ifaces: Some(vec![link.a_if.clone()]),
        include_lo: false,
        flow_capacity: 4096,
        pin_dir: pins.path.clone(),
        ..EbpfConfig::default()
    };
    let pcfg = PcapConfig {
        ifaces: vec![link.a_if.clone()],
        ..PcapConfig::default()
    };
    let (a4, a6) = (link.a_v4, link.a_v6);
    let (mut ebpf, mut pcap, rx4, rx6, listener) = link.a.run(move || {
        let e = EbpfBackend::open(ecfg).expect("open the eBPF backend");
        let p = PcapBackend::open(pcfg, 0).expect("open the pcap backend");
        let rx4 = UdpSocket::bind((a4, UDP4)).unwrap();
        let rx6 = UdpSocket::bind((a6, UDP6)).unwrap();
        let l = TcpListener::bind((a4, TCP4)).unwrap();
        (e, p, rx4, rx6, l)
    });
    // Resolve neighbours first (packets queued behind ARP/ND resolution can be dropped), on
    // a port the comparison ignores.
    let warm = link.a.run(move || {
        (
            UdpSocket::bind((a4, 7199)).unwrap(),
            UdpSocket::bind((a6, 7199)).unwrap(),
        )
    });
    let (b4, b6) = (link.b_v4, link.b_v6);
    for (rx, dst) in [(&warm.0, IpAddr::V4(a4)), (&warm.1, IpAddr::V6(a6))] {
        rx.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let src: IpAddr = if dst.is_ipv4() { b4.into() } else { b6.into() };
        let mut ok = false;
        for _ in 0..25 {
            link.b.run(move || {
                let tx = UdpSocket::bind((src, 0)).unwrap();
                tx.send_to(b"warm", SocketAddr::new(dst, 7199)).unwrap();
            });
            if rx.recv_from(&mut [0u8; 16]).is_ok() {
                ok = true;
                break;
            }
        }
        assert!(ok, "no datagram reached {dst} from namespace b");
    }
    // Start both intervals now.
    ebpf.collect(1).unwrap();
    pcap.collect(1).unwrap();

    // Receivers drain their sockets while b sends (a socket buffer holds fewer than 300).
    let recv_all = |rx: UdpSocket| {
        std::thread::spawn(move || {
            rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 2048];
            let mut n = 0;
            while n < 300 && rx.recv_from(&mut buf).is_ok() {
                n += 1;
            }
            n
        })
    };
    let (r4, r6) = (recv_all(rx4), recv_all(rx6));
    // TCP: b connects to a, sends 64 KiB in 1 KiB writes, a echoes 4 KiB, both close.
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        let mut got = 0;
        while got < 65536 {
            let n = c.read(&mut buf[got..]).unwrap();
            assert!(n > 0, "early EOF after {got} bytes");
            got += n;
        }
        c.write_all(&[7u8; 4096]).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
    });
    link.b.run(move || {
        let tx = UdpSocket::bind((b4, 0)).unwrap();
        let tx6 = UdpSocket::bind((b6, 0)).unwrap();
        for i in 0..300u32 {
            if i % 25 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
            tx.send_to(
                &vec![1u8; 50 + (i as usize % 900)],
                SocketAddr::new(IpAddr::V4(a4), UDP4),
            )
            .unwrap();
            tx6.send_to(&[2u8; 200], SocketAddr::new(IpAddr::V6(a6), UDP6))
                .unwrap();
        }
        let mut s = TcpStream::connect((a4, TCP4)).unwrap();
        for _ in 0..64 {
            s.write_all(&[3u8; 1024]).unwrap();
        }
        let mut back = [0u8; 4096];
        s.read_exact(&mut back).unwrap();
        drop(s);
    });
    server.join().unwrap();
    // Both receivers got every datagram before we look at the counts.
    for r in [r4, r6] {
        assert_eq!(r.join().unwrap(), 300, "datagrams received");
    }
    // The TCP close's last ACK may trail the socket calls by a moment.
    std::thread::sleep(Duration::from_millis(300));
    let e = ebpf.collect(2).unwrap();
    let want = totals(&e, &OURS);
    assert!(want.len() >= 6, "eBPF saw too little: {want:?}");

    // libpcap delivers from its own thread: collect until it has caught up (or 10 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut p = Snapshot::default();
    let mut t = 2;
    loop {
        t += 1;
        let s = pcap.collect(t).unwrap();
        p = merge_snapshots(vec![p, s], 0, t);
        if totals(&p, &OURS) == want || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        totals(&p, &OURS),
        want,
        "per-port totals: pcap (left) vs eBPF (right)"
    );
    assert_eq!(
        flows(&p, &OURS),
        flows(&e, &OURS),
        "flows: pcap (left) vs eBPF (right)"
    );
    assert_eq!(p.health.capture_drops, 0);
    let udp4 = want[&(Transport::Udp, UDP4, Side::Local, Direction::In)];
    assert_eq!(udp4[0], 300);
}
