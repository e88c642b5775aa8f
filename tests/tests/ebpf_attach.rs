//! Which interfaces the backend attaches to, and how politely: by default every interface that
//! is up except loopback, interfaces that appear (or come up) later on the next refresh,
//! vanished ones forgotten; named interfaces (loopback included) on request; two agents on one
//! interface both see every packet (TC_ACT_UNSPEC lets the next program run) and the packet is
//! still delivered.
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use portwatch::capture::Backend;
use portwatch::capture::ebpf::{EbpfBackend, EbpfConfig, EbpfError};
use portwatch::flow::{Direction, Side, Transport};
use portwatch_tests::{Link, NetNs, PinDir, require_root, tcx_programs, unique};

fn cfg(pins: &PinDir, ifaces: Option<Vec<String>>) -> EbpfConfig {
    EbpfConfig {
        ifaces,
        flow_capacity: 1024,
        pin_dir: pins.path.clone(),
        ..EbpfConfig::default()
    }
}

/// Runs `f` with the backend on a thread inside `ns` (interface lookups are per namespace).
fn within<R: Send + 'static>(
    ns: &NetNs,
    b: EbpfBackend,
    f: impl FnOnce(&mut EbpfBackend) -> R + Send + 'static,
) -> (EbpfBackend, R) {
    ns.run(move || {
        let mut b = b;
        let r = f(&mut b);
        (b, r)
    })
}

fn attached_programs(ns: &NetNs, ifname: &str) -> usize {
    tcx_programs(ns, ifname)
        .unwrap()
        .iter()
        .filter(|n| n.starts_with("portwatch_"))
        .count()
}

#[test]
fn default_selection_refresh_and_named_interfaces() {
    if !require_root("default_selection_refresh_and_named_interfaces") {
        return;
    }
    let link = Link::new().unwrap();
    let pins = PinDir::new("attach").unwrap();
    let c = cfg(&pins, None);
    let b = link.a.run(move || EbpfBackend::open(c).unwrap());
    assert_eq!(
        b.interfaces(),
        vec![link.a_if.clone()],
        "up interfaces except lo"
    );
    assert_eq!(
        attached_programs(&link.a, &link.a_if),
        2,
        "ingress and egress"
    );
    assert_eq!(attached_programs(&link.a, "lo"), 0);

    // A new pair inside a: both ends up -> attached on refresh; a down one waits until it is up.
    let (x1, x2, x3, x4) = (unique("pwx"), unique("pwx"), unique("pwx"), unique("pwx"));
    for (p, q) in [(&x1, &x2), (&x3, &x4)] {
        link.a
            .ip(&["link", "add", p, "type", "veth", "peer", "name", q])
            .unwrap();
    }
    link.a.ip(&["link", "set", &x1, "up"]).unwrap();
    link.a.ip(&["link", "set", &x2, "up"]).unwrap();
    let (b, mut added) = within(&link.a, b, |b| b.refresh_interfaces().unwrap());
    added.sort();
    let mut want = vec![x1.clone(), x2.clone()];
    want.sort();
    assert_eq!(added, want);
    assert_eq!(attached_programs(&link.a, &x1), 2);
    assert_eq!(attached_programs(&link.a, &x3), 0, "down: not attached");
    link.a.ip(&["link", "set", &x3, "up"]).unwrap();
    let (b, added) = within(&link.a, b, |b| b.refresh_interfaces().unwrap());
    assert_eq!(added, vec![x3.clone()], "x4 is still down");

    // Deleted interfaces are forgotten; nothing else changes.
    link.a.ip(&["link", "del", &x1]).unwrap();
    let (b, added) = within(&link.a, b, |b| b.refresh_interfaces().unwrap());
    assert!(added.is_empty());
    let now = b.interfaces();
    assert!(!now.contains(&x1) && !now.contains(&x2), "{now:?}");
    assert!(now.contains(&x3) && now.contains(&link.a_if), "{now:?}");

    // Clean detach from everything.
    b.close().unwrap();
    for i in [&link.a_if, &x3] {
        assert_eq!(attached_programs(&link.a, i), 0, "{i} still attached");
    }

    // Named interfaces: loopback included when asked; an unknown name is an error naming the
    // interfaces that exist.
    let c = cfg(&pins, Some(vec!["lo".into()]));
    let b = link.a.run(move || EbpfBackend::open(c).unwrap());
    assert_eq!(b.interfaces(), vec!["lo".to_owned()]);
    assert_eq!(attached_programs(&link.a, "lo"), 2);
    drop(b);
    assert_eq!(attached_programs(&link.a, "lo"), 0, "drop detaches");
    let c = cfg(&pins, Some(vec!["nosuch0".into()]));
    let e = link
        .a
        .run(move || EbpfBackend::open(c).err().expect("unknown interface"));
    assert!(matches!(e, EbpfError::NoSuchInterface { .. }), "{e}");
    assert!(e.to_string().contains("lo"), "{e}");
    let c = EbpfConfig {
        include_lo: true,
        ..cfg(&pins, None)
    };
    let b = link.a.run(move || EbpfBackend::open(c).unwrap());
    let mut got = b.interfaces();
    got.sort();
    let mut want = vec!["lo".to_owned(), link.a_if.clone(), x3.clone()];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn two_agents_on_one_interface_both_count_and_the_packet_is_delivered() {
    if !require_root("two_agents_on_one_interface_both_count_and_the_packet_is_delivered") {
        return;
    }
    let link = Link::new().unwrap();
    let (p1, p2) = (
        PinDir::new("chain1").unwrap(),
        PinDir::new("chain2").unwrap(),
    );
    let (c1, c2) = (
        cfg(&p1, Some(vec![link.a_if.clone()])),
        cfg(&p2, Some(vec![link.a_if.clone()])),
    );
    let a4 = link.a_v4;
    let (mut b1, mut b2, rx) = link.a.run(move || {
        let b1 = EbpfBackend::open(c1).unwrap();
        let b2 = EbpfBackend::open(c2).unwrap();
        (b1, b2, UdpSocket::bind((a4, 7300)).unwrap())
    });
    assert_eq!(attached_programs(&link.a, &link.a_if), 4);
    // The same pin directory cannot be used twice at once.
    let c3 = cfg(&p1, Some(vec![link.a_if.clone()]));
    let e = link.a.run(move || {
        EbpfBackend::open(c3)
            .err()
            .expect("second agent on one pin dir")
    });
    assert!(matches!(e, EbpfError::AlreadyRunning { .. }), "{e}");

    let (src, dst): (SocketAddr, SocketAddr) = ((link.b_v4, 41300).into(), (a4, 7300).into());
    link.b.run(move || {
        let tx = UdpSocket::bind(src).unwrap();
        for _ in 0..123 {
            tx.send_to(b"chained", dst).unwrap();
        }
    });
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    for i in 0..123 {
        rx.recv(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {i} not delivered: {e}"));
    }
    for b in [&mut b1, &mut b2] {
        let s = b.collect(1).unwrap();
        let n: u64 = s
            .ports
            .iter()
            .filter(|p| {
                (p.transport, p.port, p.side, p.dir)
                    == (Transport::Udp, 7300, Side::Local, Direction::In)
            })
            .map(|p| p.counts.packets)
            .sum();
        assert_eq!(n, 123);
    }
}
