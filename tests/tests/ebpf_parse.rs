//! The TC programs parse every header layout the kernel can hand them: crafted frames sent
//! through an AF_PACKET socket from namespace b to a are counted on b's egress (VLAN tags in the
//! packet bytes) and on a's ingress (the outer tag moved to skb metadata by the kernel), with
//! exact per-port packets and bytes, and every malformed or truncated frame counted as such.
use portwatch::capture::Backend;
use portwatch::capture::ebpf::{EbpfBackend, EbpfConfig, KernelCounters};
use portwatch::flow::{Direction, PortCounts, Side, Snapshot, Transport};
use portwatch_common as common;
use portwatch_tests::{
    Ext, FrameBuilder, L4, Link, PacketSocket, PinDir, TxRing, V4Opts, require_root,
};

const K: u64 = 37;

fn open(ns: &portwatch_tests::NetNs, iface: &str, pins: &PinDir) -> EbpfBackend {
    let cfg = EbpfConfig {
        ifaces: Some(vec![iface.to_owned()]),
        flow_capacity: 4096,
        pin_dir: pins.path.clone(),
        ..EbpfConfig::default()
    };
    ns.run(move || EbpfBackend::open(cfg).expect("open the eBPF backend"))
}

fn rig(
    a: bool,
    b: bool,
) -> (
    Link,
    Option<EbpfBackend>,
    Option<EbpfBackend>,
    PinDir,
    PinDir,
) {
    let link = Link::new().expect("namespaces and veth");
    let pa = PinDir::new("pa").unwrap();
    let pb = PinDir::new("pb").unwrap();
    let ba = a.then(|| open(&link.a, &link.a_if.clone(), &pa));
    let bb = b.then(|| open(&link.b, &link.b_if.clone(), &pb));
    (link, ba, bb, pa, pb)
}

fn builder(link: &Link, vlans: Vec<(u16, u16)>) -> FrameBuilder {
    FrameBuilder {
        dst_mac: Link::mac(&link.a, &link.a_if).unwrap(),
        src_mac: Link::mac(&link.b, &link.b_if).unwrap(),
        vlans,
    }
}

/// Sends each frame `K` times from namespace b.
fn send(link: &Link, frames: Vec<Vec<u8>>) {
    let ifname = link.b_if.clone();
    link.b.run(move || {
        let s = PacketSocket::open(&ifname).expect("AF_PACKET socket");
        for f in &frames {
            for _ in 0..K {
                s.send(f).expect("send frame");
            }
        }
    });
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

fn delta(after: &KernelCounters, before: &KernelCounters, i: usize) -> u64 {
    after.get(i) - before.get(i)
}

/// One crafted frame and where it must be counted.
struct Case {
    name: &'static str,
    frame: Vec<u8>,
    transport: Transport,
    /// Destination port as counted (local side on a's ingress, remote side on b's egress).
    dport: u16,
}

#[test]
fn every_header_layout_is_counted_on_both_hooks() {
    if !require_root("every_header_layout_is_counted_on_both_hooks") {
        return;
    }
    let (link, a, b, _pa, _pb) = rig(true, true);
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    let plain = builder(&link, vec![]);
    let q = builder(&link, vec![(0x8100, 10)]);
    let qinq = builder(&link, vec![(0x88a8, 20), (0x8100, 30)]);
    let (s4, d4) = (link.b_v4, link.a_v4);
    let (s6, d6) = (link.b_v6, link.a_v6);
    let pl = [0x42u8; 40];
    let udp = |sport, dport| L4::Udp {
        sport,
        dport,
        payload: &pl,
    };
    let tcp = |sport, dport, flags| L4::Tcp {
        sport,
        dport,
        flags,
        payload: &pl,
    };
    let v4 = V4Opts::default();
    let mut cases = vec![
        Case {
            name: "IPv4 UDP",
            frame: plain.ipv4(s4, d4, &udp(30001, 20001), &v4),
            transport: Transport::Udp,
            dport: 20001,
        },
        Case {
            name: "802.1Q IPv4 UDP",
            frame: q.ipv4(s4, d4, &udp(30002, 20002), &v4),
            transport: Transport::Udp,
            dport: 20002,
        },
        Case {
            name: "802.1ad+802.1Q IPv6 UDP",
            frame: qinq.ipv6(s6, d6, &[], &udp(30003, 20003)),
            transport: Transport::Udp,
            dport: 20003,
        },
        Case {
            name: "802.1Q IPv6 TCP SYN",
            frame: q.ipv6(s6, d6, &[], &tcp(30004, 20004, 0x02)),
            transport: Transport::Tcp,
            dport: 20004,
        },
        Case {
            name: "IPv4 options UDP",
            frame: plain.ipv4(
                s4,
                d4,
                &udp(30005, 20005),
                &V4Opts {
                    options: &[1, 1, 1, 1, 1, 1, 1, 0],
                    ..V4Opts::default()
                },
            ),
            transport: Transport::Udp,
            dport: 20005,
        },
        Case {
            name: "IPv4 first fragment UDP",
            frame: plain.ipv4(
                s4,
                d4,
                &udp(30006, 20006),
                &V4Opts {
                    more_fragments: true,
                    ..V4Opts::default()
                },
            ),
            transport: Transport::Udp,
            dport: 20006,
        },
        Case {
            name: "IPv6 hop-by-hop, routing, destination options UDP",
            frame: plain.ipv6(
                s6,
                d6,
                &[
                    Ext::HopByHop { len8: 0 },
                    Ext::Routing { len8: 1 },
                    Ext::DstOpts { len8: 2 },
                ],
                &udp(30007, 20007),
            ),
            transport: Transport::Udp,
            dport: 20007,
        },
        Case {
            name: "IPv6 first fragment UDP",
            frame: plain.ipv6(
                s6,
                d6,
                &[
                    Ext::DstOpts { len8: 0 },
                    Ext::Fragment {
                        offset: 0,
                        more: true,
                    },
                ],
                &udp(30008, 20008),
            ),
            transport: Transport::Udp,
            dport: 20008,
        },
        Case {
            name: "IPv4 TCP SYN-ACK",
            frame: plain.ipv4(s4, d4, &tcp(30009, 20009, 0x12), &v4),
            transport: Transport::Tcp,
            dport: 20009,
        },
        Case {
            name: "IPv4 TCP FIN-ACK",
            frame: plain.ipv4(s4, d4, &tcp(30010, 20010, 0x11), &v4),
            transport: Transport::Tcp,
            dport: 20010,
        },
        Case {
            name: "IPv6 TCP RST",
            frame: plain.ipv6(s6, d6, &[], &tcp(30011, 20011, 0x04)),
            transport: Transport::Tcp,
            dport: 20011,
        },
        Case {
            name: "IPv4 SCTP",
            frame: plain.ipv4(
                s4,
                d4,
                &L4::Raw {
                    proto: 132,
                    bytes: &[0x75, 0x3c, 0x4e, 0x2c, 0, 0, 0, 1, 0, 0, 0, 0],
                },
                &v4,
            ),
            transport: Transport::Sctp,
            dport: 20012,
        },
        Case {
            name: "ICMP echo request",
            frame: plain.ipv4(
                s4,
                d4,
                &L4::Raw {
                    proto: 1,
                    bytes: &[8, 0, 0xf7, 0xfe, 0, 1, 0, 0],
                },
                &v4,
            ),
            transport: Transport::Icmp,
            dport: 0x0800,
        },
        Case {
            name: "ICMPv6 echo request",
            frame: plain.ipv6(
                s6,
                d6,
                &[],
                &L4::Raw {
                    proto: 58,
                    bytes: &[128, 0, 0, 0, 0, 1, 0, 0],
                },
            ),
            transport: Transport::Icmpv6,
            dport: 0x8000,
        },
        Case {
            name: "GRE (no ports)",
            frame: plain.ipv4(
                s4,
                d4,
                &L4::Raw {
                    proto: 47,
                    bytes: &[0, 0, 0x08, 0],
                },
                &v4,
            ),
            transport: Transport::Other(47),
            dport: 0,
        },
    ];
    // Later fragments carry no transport header: counted under port 0 of their protocol.
    let later4 = plain.ipv4(
        s4,
        d4,
        &udp(1, 2),
        &V4Opts {
            frag_offset: 185,
            ..V4Opts::default()
        },
    );
    let later6 = plain.ipv6(
        s6,
        d6,
        &[Ext::Fragment {
            offset: 185,
            more: false,
        }],
        &udp(1, 2),
    );
    cases.push(Case {
        name: "IPv4 and IPv6 later fragments",
        frame: later4,
        transport: Transport::Udp,
        dport: 0,
    });
    // Frames that must be counted as not parseable.
    let malformed = plain.ipv4(
        s4,
        d4,
        &udp(30020, 20020),
        &V4Opts {
            ihl: Some(3),
            ..V4Opts::default()
        },
    );
    let mut truncated = plain.ipv4(s4, d4, &tcp(30021, 20021, 0x10), &v4);
    truncated.truncate(14 + 20 + 10);
    let non_ip = {
        let mut f = plain.l2(0x88b5);
        f.extend_from_slice(&[0u8; 46]);
        f
    };
    let too_many_ext = plain.ipv6(s6, d6, &[Ext::DstOpts { len8: 0 }; 7], &udp(30022, 20022));

    let (ca0, cb0) = (a.kernel_counters().unwrap(), b.kernel_counters().unwrap());
    let mut frames: Vec<Vec<u8>> = cases.iter().map(|c| c.frame.clone()).collect();
    frames.extend([later6.clone(), malformed, truncated, non_ip, too_many_ext]);
    send(&link, frames);
    let sa = a.collect(1).unwrap();
    let sb = b.collect(1).unwrap();
    let (ca, cb) = (a.kernel_counters().unwrap(), b.kernel_counters().unwrap());

    for c in &cases {
        let k = if c.dport == 0 && c.transport == Transport::Udp {
            2 * K
        } else {
            K
        };
        let len = if c.dport == 0 && c.transport == Transport::Udp {
            K * (c.frame.len() + later6.len()) as u64
        } else {
            k * c.frame.len() as u64
        };
        let on_a = port(&sa, c.transport, c.dport, Side::Local, Direction::In);
        assert_eq!(on_a.packets, k, "{}: a's ingress packets", c.name);
        assert_eq!(
            on_a.bytes, len,
            "{}: a's ingress bytes (tag in metadata counted)",
            c.name
        );
        let on_b = port(&sb, c.transport, c.dport, Side::Remote, Direction::Out);
        assert_eq!(on_b.packets, k, "{}: b's egress packets", c.name);
        assert_eq!(on_b.bytes, len, "{}: b's egress bytes", c.name);
    }
    for (s, who) in [(&sa, "a ingress"), (&sb, "b egress")] {
        let dir = if who.starts_with('a') {
            Direction::In
        } else {
            Direction::Out
        };
        let side = if who.starts_with('a') {
            Side::Local
        } else {
            Side::Remote
        };
        let syn = port(s, Transport::Tcp, 20004, side, dir);
        assert_eq!((syn.syn, syn.synack), (K, 0), "{who}: SYN");
        let synack = port(s, Transport::Tcp, 20009, side, dir);
        assert_eq!((synack.syn, synack.synack), (0, K), "{who}: SYN-ACK");
        assert_eq!(
            port(s, Transport::Tcp, 20010, side, dir).fin,
            K,
            "{who}: FIN"
        );
        assert_eq!(
            port(s, Transport::Tcp, 20011, side, dir).rst,
            K,
            "{who}: RST"
        );
        assert_eq!(
            port(s, Transport::Udp, 20020, side, dir).packets,
            0,
            "{who}: malformed not counted per port"
        );
    }
    for (after, before, who) in [(&ca, &ca0, "a"), (&cb, &cb0, "b")] {
        assert_eq!(
            delta(after, before, common::CNT_MALFORMED),
            K,
            "{who}: malformed"
        );
        assert_eq!(
            delta(after, before, common::CNT_TRUNCATED),
            K,
            "{who}: truncated"
        );
        assert_eq!(
            delta(after, before, common::CNT_EXT_LIMIT),
            K,
            "{who}: extension chain too long"
        );
        assert!(
            delta(after, before, common::CNT_NON_IP) >= K,
            "{who}: non-IP"
        );
        assert_eq!(
            delta(after, before, common::CNT_FRAGMENTS),
            2 * K,
            "{who}: later fragments"
        );
        assert_eq!(
            delta(after, before, common::CNT_VLAN),
            3 * K,
            "{who}: VLAN-tagged frames"
        );
    }
    assert_eq!(
        sa.health.malformed,
        2 * K,
        "IHL 3 and the long extension chain"
    );
    assert_eq!(sa.health.truncated, K);
}

/// Non-linear frames (TX ring: only the Ethernet header linear; big frames: the same) are
/// pulled and counted exactly, on ingress and on egress.
#[test]
fn non_linear_frames_are_counted() {
    if !require_root("non_linear_frames_are_counted") {
        return;
    }
    for side_a in [true, false] {
        let (link, a, b, _pa, _pb) = rig(side_a, !side_a);
        let mut backend = a.or(b).unwrap();
        for (ns, ifn) in [(&link.a, &link.a_if), (&link.b, &link.b_if)] {
            ns.ip(&["link", "set", ifn, "mtu", "9000"]).unwrap();
        }
        let fb = builder(&link, vec![]);
        let small = fb.udp4(link.b_v4, link.a_v4, 30100, 20100, &[1u8; 64]);
        let big = fb.udp6(link.b_v6, link.a_v6, 30101, 20101, &vec![2u8; 6000]);
        let before = backend.kernel_counters().unwrap();
        let ifname = link.b_if.clone();
        let (s2, b2) = (small.clone(), big.clone());
        link.b.run(move || {
            let mut ring = TxRing::open(&ifname).expect("TX ring");
            let n = ring
                .send_all(std::iter::repeat_n(s2.as_slice(), K as usize))
                .unwrap();
            assert_eq!(n, K);
            let s = PacketSocket::open(&ifname).unwrap();
            s.send_all(std::iter::repeat_n(b2.as_slice(), K as usize))
                .unwrap();
        });
        let snap = backend.collect(1).unwrap();
        let after = backend.kernel_counters().unwrap();
        let (dir, side_small, side_big) = if side_a {
            (Direction::In, (20100, Side::Local), (20101, Side::Local))
        } else {
            (Direction::Out, (30100, Side::Local), (30101, Side::Local))
        };
        let c = port(&snap, Transport::Udp, side_small.0, side_small.1, dir);
        assert_eq!(
            (c.packets, c.bytes),
            (K, K * small.len() as u64),
            "TX-ring frames, a={side_a}"
        );
        let c = port(&snap, Transport::Udp, side_big.0, side_big.1, dir);
        assert_eq!(
            (c.packets, c.bytes),
            (K, K * big.len() as u64),
            "big frames, a={side_a}"
        );
        assert!(
            delta(&after, &before, common::CNT_PULLED) >= 2 * K,
            "headers were pulled (a={side_a}): {}",
            delta(&after, &before, common::CNT_PULLED)
        );
        assert_eq!(delta(&after, &before, common::CNT_TRUNCATED), 0);
        assert_eq!(delta(&after, &before, common::CNT_PULL_FAILED), 0);
    }
}

/// A receiving AF_PACKET socket with `PACKET_AUXDATA`: shows each frame as the kernel's packet
/// taps see it (the same point as TC: after the receive path moved an outer VLAN tag into skb
/// metadata, before transmission on the way out), with the metadata tag if there is one.
struct Tap {
    fd: std::os::fd::OwnedFd,
}

/// One frame seen by a [`Tap`]: its bytes and the VLAN tag (TPID, TCI) carried in metadata.
struct Tapped {
    bytes: Vec<u8>,
    meta_tag: Option<(u16, u16)>,
}

impl Tap {
    /// Opens the tap on `ifname` of the calling thread's namespace.
    fn open(ifname: &str) -> std::io::Result<Self> {
        use std::os::fd::FromRawFd;
        let c = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: if_nametoindex with a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new fd that nothing else owns.
        let me = Self {
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
        };
        // SAFETY: sockaddr_ll is plain data.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = proto;
        sa.sll_ifindex = ifindex;
        let one: libc::c_int = 1;
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: bind/setsockopt on our fd with live, correctly sized arguments.
        let ok = unsafe {
            libc::bind(
                fd,
                (&raw const sa).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            ) == 0
                && libc::setsockopt(
                    fd,
                    libc::SOL_PACKET,
                    libc::PACKET_AUXDATA,
                    (&raw const one).cast(),
                    4,
                ) == 0
                && libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const tv).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                ) == 0
        };
        if !ok {
            return Err(std::io::Error::last_os_error());
        }
        Ok(me)
    }

    /// The next frame the interface sent (`outgoing`) or received.
    fn next(&self, outgoing: bool) -> std::io::Result<Tapped> {
        use std::os::fd::AsRawFd;
        loop {
            let mut buf = vec![0u8; 4096];
            let mut ctl = [0u64; 64];
            // SAFETY: sockaddr_ll and msghdr are plain data.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: as above.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&raw mut from).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = ctl.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&ctl);
            // SAFETY: recvmsg into the buffers above, which outlive the call.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &raw mut msg, 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if (from.sll_pkttype == libc::PACKET_OUTGOING) != outgoing {
                continue;
            }
            buf.truncate(n as usize);
            let mut meta_tag = None;
            // SAFETY: walking the control messages the kernel wrote into `ctl`.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA
                    {
                        let aux: libc::tpacket_auxdata =
                            std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                        if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                            let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                                aux.tp_vlan_tpid
                            } else {
                                0x8100
                            };
                            meta_tag = Some((tpid, aux.tp_vlan_tci));
                        }
                    }
                    c = libc::CMSG_NXTHDR(&raw const msg, c);
                }
            }
            return Ok(Tapped {
                bytes: buf,
                meta_tag,
            });
        }
    }
}

/// Where the VLAN tag is when the programs run, observed rather than assumed: on b's egress the
/// tags are in the packet bytes (as the AF_PACKET socket sent them), on a's ingress the kernel
/// has moved the outer tag into skb metadata (`vlan_present`) and only an inner tag is left in
/// the bytes. Both paths count every frame, with the bytes that were on the wire.
#[test]
fn vlan_tags_count_in_packet_bytes_and_in_skb_metadata() {
    if !require_root("vlan_tags_count_in_packet_bytes_and_in_skb_metadata") {
        return;
    }
    let (link, a, b, _pa, _pb) = rig(true, true);
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    let pl = [0x24u8; 30];
    let q = builder(&link, vec![(0x8100, 11)]).ipv4(
        link.b_v4,
        link.a_v4,
        &L4::Udp {
            sport: 30201,
            dport: 20201,
            payload: &pl,
        },
        &V4Opts::default(),
    );
    let qinq = builder(&link, vec![(0x88a8, 21), (0x8100, 31)]).ipv6(
        link.b_v6,
        link.a_v6,
        &[],
        &L4::Udp {
            sport: 30202,
            dport: 20202,
            payload: &pl,
        },
    );
    // The frames as a's receive path must present them: the outer tag (bytes 12..16) gone
    // from the bytes.
    let untag = |f: &[u8]| [&f[..12], &f[16..]].concat();
    let (a_if, b_if) = (link.a_if.clone(), link.b_if.clone());
    let tap_a = link.a.run(move || Tap::open(&a_if)).expect("tap a");
    let tap_b = link.b.run(move || Tap::open(&b_if)).expect("tap b");
    let (ca0, cb0) = (a.kernel_counters().unwrap(), b.kernel_counters().unwrap());
    send(&link, vec![q.clone(), qinq.clone()]);

    // What the taps saw: K of each, tag where expected.
    let (mut seen_a, mut seen_b) = ([0u64; 2], [0u64; 2]);
    while seen_a != [K, K] {
        let t = tap_a.next(false).expect("a's receive tap");
        if t.bytes == untag(&q) {
            assert_eq!(t.meta_tag, Some((0x8100, 11)), "802.1Q on a");
            seen_a[0] += 1;
        } else if t.bytes == untag(&qinq) {
            assert_eq!(t.meta_tag, Some((0x88a8, 21)), "802.1ad outer tag on a");
            assert_eq!(
                &t.bytes[12..14],
                &[0x81, 0x00],
                "inner tag left in the bytes"
            );
            seen_a[1] += 1;
        }
    }
    while seen_b != [K, K] {
        let t = tap_b.next(true).expect("b's transmit tap");
        if t.bytes == q {
            seen_b[0] += 1;
        } else if t.bytes == qinq {
            seen_b[1] += 1;
        } else {
            continue;
        }
        assert_eq!(t.meta_tag, None, "b sends the tags in the bytes");
    }

    let (sa, sb) = (a.collect(1).unwrap(), b.collect(1).unwrap());
    let (ca, cb) = (a.kernel_counters().unwrap(), b.kernel_counters().unwrap());
    for (dport, frame) in [(20201u16, &q), (20202, &qinq)] {
        let on_a = port(&sa, Transport::Udp, dport, Side::Local, Direction::In);
        assert_eq!(
            (on_a.packets, on_a.bytes),
            (K, K * frame.len() as u64),
            "port {dport} on a's ingress (outer tag in metadata, its 4 bytes added back)"
        );
        let on_b = port(&sb, Transport::Udp, dport, Side::Remote, Direction::Out);
        assert_eq!(
            (on_b.packets, on_b.bytes),
            (K, K * frame.len() as u64),
            "port {dport} on b's egress (tags in the bytes)"
        );
    }
    assert_eq!(
        delta(&ca, &ca0, common::CNT_VLAN),
        2 * K,
        "a: tagged frames"
    );
    assert_eq!(
        delta(&cb, &cb0, common::CNT_VLAN),
        2 * K,
        "b: tagged frames"
    );
}
