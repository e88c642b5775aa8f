//! Real TCP between two namespaces (IPv4 and IPv6): the eBPF backend counts at least the payload
//! that was sent (GSO super-packets count their bytes once and their segments all), exactly one
//! SYN in and one SYN-ACK out per connection, the FINs of both ends, and flow detail that agrees
//! with the per-port totals.
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};

use portwatch::capture::Backend;
use portwatch::capture::ebpf::{EbpfBackend, EbpfConfig};
use portwatch::flow::{Direction, PortCounts, Side, Snapshot, Transport};
use portwatch_tests::{Link, PinDir, require_root};

/// Bytes the client sends (large enough for the kernel to build GSO super-packets).
const UP: usize = 4 << 20;
/// Bytes the server answers.
const DOWN: usize = 64 << 10;

fn port(s: &Snapshot, port: u16, side: Side, dir: Direction) -> PortCounts {
    let mut c = PortCounts::default();
    for p in &s.ports {
        if (p.transport, p.port, p.side, p.dir) == (Transport::Tcp, port, side, dir) {
            c.add(&p.counts);
        }
    }
    c
}

/// One connection from namespace b to `server` (listening in namespace a): `UP` bytes up, the
/// client's FIN, `DOWN` bytes back, the server's FIN. Returns once the client read the server's
/// FIN, i.e. every packet that matters here has passed a's hooks.
fn converse(link: &Link, listener: TcpListener, server: SocketAddr) {
    let srv = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = s.read(&mut buf).expect("server read");
            if n == 0 {
                break;
            }
            got += n;
        }
        assert_eq!(got, UP, "server received everything");
        s.write_all(&vec![7u8; DOWN]).expect("server write");
        // Dropping the stream sends the server's FIN.
    });
    link.b.run(move || {
        let mut c = TcpStream::connect(server).expect("connect");
        c.write_all(&vec![5u8; UP]).expect("client write");
        c.shutdown(Shutdown::Write).expect("client FIN");
        let mut back = Vec::new();
        c.read_to_end(&mut back).expect("client read");
        assert_eq!(back.len(), DOWN, "client received the answer");
    });
    srv.join().expect("server thread");
}

#[test]
fn tcp_bytes_cover_the_payload_and_handshakes_are_exact() {
    if !require_root("tcp_bytes_cover_the_payload_and_handshakes_are_exact") {
        return;
    }
    let link = Link::new().expect("namespaces and veth");
    let pins = PinDir::new("tcp").expect("pin dir");
    let cfg = EbpfConfig {
        ifaces: Some(vec![link.a_if.clone()]),
        flow_capacity: 1024,
        pin_dir: pins.path.clone(),
        ..EbpfConfig::default()
    };
    let (a4, a6) = (link.a_v4, link.a_v6);
    let (mut backend, l4, l6) = link.a.run(move || {
        let b = EbpfBackend::open(cfg).expect("open the eBPF backend");
        let l4 = TcpListener::bind((a4, 7201)).unwrap();
        let l6 = TcpListener::bind((a6, 7202)).unwrap();
        (b, l4, l6)
    });
    converse(&link, l4, (a4, 7201).into());
    converse(&link, l6, (a6, 7202).into());
    let s = backend.collect(1).expect("collect");

    for (p, family, remote) in [
        (7201u16, "IPv4", IpAddr::from(link.b_v4)),
        (7202, "IPv6", IpAddr::from(link.b_v6)),
    ] {
        let inb = port(&s, p, Side::Local, Direction::In);
        let out = port(&s, p, Side::Local, Direction::Out);
        // Bytes are skb lengths with headers: at least the payload, whatever the segmentation
        // (a GSO super-packet carries the headers once).
        assert!(
            inb.bytes >= UP as u64,
            "{family}: {} bytes in for {UP} sent",
            inb.bytes
        );
        assert!(
            out.bytes >= DOWN as u64,
            "{family}: {} bytes out for {DOWN} sent",
            out.bytes
        );
        // At most one 1,500-byte frame's payload per wire segment: the segments account for
        // what was sent.
        assert!(inb.segments >= inb.packets, "{family}: {inb:?}");
        assert!(
            inb.segments * 1448 >= UP as u64,
            "{family}: {} segments cannot carry {UP} bytes",
            inb.segments
        );
        assert_eq!((inb.syn, inb.synack), (1, 0), "{family}: one SYN in");
        assert_eq!((out.syn, out.synack), (0, 1), "{family}: one SYN-ACK out");
        assert!(
            inb.fin >= 1 && out.fin >= 1,
            "{family}: FINs {inb:?} {out:?}"
        );
        assert_eq!(inb.rst + out.rst, 0, "{family}: no reset");

        // Flow detail saw the same packets as the totals (one connection on this port).
        let flows: Vec<_> = s
            .flows
            .iter()
            .filter(|f| f.key.transport == Transport::Tcp && f.key.local.port == p)
            .collect();
        assert_eq!(flows.len(), 1, "{family}: one flow");
        let f = flows[0];
        assert_eq!(f.key.remote.addr, remote);
        assert_eq!(
            (f.stats.inbound.packets, f.stats.inbound.bytes),
            (inb.packets, inb.bytes),
            "{family}: flow inbound = port total"
        );
        assert_eq!(
            (f.stats.outbound.packets, f.stats.outbound.bytes),
            (out.packets, out.bytes),
            "{family}: flow outbound = port total"
        );
        assert_eq!((f.stats.syn_in, f.stats.syn_out), (1, 0), "{family}");
        // The remote (client) port carries the same traffic on the remote side.
        let rp = f.key.remote.port;
        let rin = port(&s, rp, Side::Remote, Direction::In);
        assert_eq!((rin.packets, rin.bytes), (inb.packets, inb.bytes));
    }
    assert_eq!(s.health.flow_table_full + s.health.flow_update_errors, 0);
}
