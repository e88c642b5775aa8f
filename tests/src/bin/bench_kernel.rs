//! Kernel benchmark (run by `cargo xtask bench kernel`, needs root): the TC program's cost per
//! packet measured by the kernel (`BPF_PROG_TEST_RUN`) for IPv4/IPv6 UDP/TCP frames, and the
//! small-packet UDP rate between two namespaces with and without the programs attached
//! (interleaved runs, medians). Prints figures and ratios; asserts nothing about speed.
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use portwatch::capture::ebpf::{EbpfBackend, EbpfConfig};
use portwatch_common::{PROG_EGRESS, PROG_INGRESS};
use portwatch_tests::{FrameBuilder, L4, Link, PinDir, V4Opts, require_root};

struct Args {
    repeat: u32,
    rounds: usize,
    seconds: f64,
    payload: usize,
    skip_rate: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        repeat: 2_000_000,
        rounds: 7,
        seconds: 2.0,
        payload: 18,
        skip_rate: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_default();
        match arg.as_str() {
            "--repeat" => a.repeat = val().parse().expect("--repeat N"),
            "--rounds" => a.rounds = val().parse().expect("--rounds N"),
            "--seconds" => a.seconds = val().parse().expect("--seconds S"),
            "--payload" => a.payload = val().parse().expect("--payload BYTES"),
            "--no-rate" => a.skip_rate = true,
            other => panic!(
                "unknown argument {other}; use --repeat N --rounds N --seconds S --payload B --no-rate"
            ),
        }
    }
    a
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if !require_root("bench_kernel") {
        std::process::exit(0);
    }
    let args = parse_args();
    per_packet_cost(&args);
    if !args.skip_rate {
        udp_rate(&args);
    }
}

/// BPF_PROG_TEST_RUN over representative frames; the program is loaded but not attached.
fn per_packet_cost(args: &Args) {
    let pins = PinDir::new("bench").expect("pin dir");
    let mut b = EbpfBackend::open(EbpfConfig {
        ifaces: Some(Vec::new()),
        flow_capacity: 65_536,
        pin_dir: pins.path.clone(),
        ..EbpfConfig::default()
    })
    .expect("load the eBPF programs");
    let fb = FrameBuilder {
        dst_mac: [2, 0, 0, 0, 0, 1],
        src_mac: [2, 0, 0, 0, 0, 2],
        vlans: Vec::new(),
    };
    let (s4, d4) = (Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 1));
    let (s6, d6): (Ipv6Addr, Ipv6Addr) = ("fd00::2".parse().unwrap(), "fd00::1".parse().unwrap());
    let pl = [0u8; 64];
    let udp = L4::Udp {
        sport: 40000,
        dport: 53,
        payload: &pl,
    };
    let tcp = L4::Tcp {
        sport: 40000,
        dport: 443,
        flags: 0x18,
        payload: &pl,
    };
    let frames = [
        ("IPv4 UDP", fb.ipv4(s4, d4, &udp, &V4Opts::default())),
        ("IPv4 TCP", fb.ipv4(s4, d4, &tcp, &V4Opts::default())),
        ("IPv6 UDP", fb.ipv6(s6, d6, &[], &udp)),
        ("IPv6 TCP", fb.ipv6(s6, d6, &[], &tcp)),
        ("ARP (parse only, no map update)", {
            let mut f = fb.l2(0x0806);
            f.extend_from_slice(&[0u8; 28]);
            f
        }),
    ];
    println!(
        "## Per-packet cost (BPF_PROG_TEST_RUN, repeat {}, median of {} runs)",
        args.repeat, args.rounds
    );
    println!();
    println!("| frame | ingress ns/pkt | egress ns/pkt | ingress min | egress min |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, frame) in &frames {
        let mut cols = Vec::new();
        let mut mins = Vec::new();
        for prog in [PROG_INGRESS, PROG_EGRESS] {
            let runs: Vec<f64> = (0..args.rounds)
                .map(|_| {
                    let r = b
                        .test_run(prog, frame, args.repeat)
                        .expect("BPF_PROG_TEST_RUN");
                    assert_eq!(
                        r.retval, -1,
                        "the program passes packets on (TC_ACT_UNSPEC)"
                    );
                    f64::from(r.duration_ns)
                })
                .collect();
            mins.push(runs.iter().copied().fold(f64::INFINITY, f64::min));
            cols.push(median(runs));
        }
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} |",
            cols[0], cols[1], mins[0], mins[1]
        );
    }
    println!();
}

/// Small UDP datagrams from namespace b to a for `seconds`; returns (sent/s, received/s).
fn blast(link: &Link, rx: &Arc<UdpSocket>, seconds: f64, payload: usize) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let r = {
        let (rx, stop, received) = (rx.clone(), stop.clone(), received.clone());
        std::thread::spawn(move || {
            pin_cpu(1);
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if rx.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let dst: SocketAddr = (link.a_v4, 9999).into();
    let src = link.b_v4;
    let start_rx = received.load(Ordering::Relaxed);
    let (sent, elapsed) = link.b.run(move || {
        pin_cpu(0);
        let tx = UdpSocket::bind((src, 0)).expect("bind");
        tx.connect(dst).expect("connect");
        let buf = vec![0u8; payload];
        let t0 = Instant::now();
        let mut n = 0u64;
        let end = Duration::from_secs_f64(seconds);
        while t0.elapsed() < end {
            for _ in 0..64 {
                if tx.send(&buf).is_ok() {
                    n += 1;
                }
            }
        }
        (n, t0.elapsed().as_secs_f64())
    });
    // Let the receiver drain what is queued, then stop it.
    std::thread::sleep(Duration::from_millis(200));
    let got = received.load(Ordering::Relaxed) - start_rx;
    stop.store(true, Ordering::Relaxed);
    let _ = r.join();
    (sent as f64 / elapsed, got as f64 / elapsed)
}

fn pin_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity on the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Interleaved runs without and with the programs attached to a's veth (ingress and egress).
fn udp_rate(args: &Args) {
    let link = Link::new().expect("namespaces");
    let a4 = link.a_v4;
    let rx = Arc::new(link.a.run(move || {
        let s = UdpSocket::bind((a4, 9999)).expect("bind receiver");
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        s
    }));
    let pins = PinDir::new("benchrate").expect("pin dir");
    // Warm-up (ARP, caches).
    blast(&link, &rx, 0.3, args.payload);
    let (mut off_tx, mut off_rx, mut on_tx, mut on_rx) = (vec![], vec![], vec![], vec![]);
    for round in 0..args.rounds {
        let (t, r) = blast(&link, &rx, args.seconds, args.payload);
        off_tx.push(t);
        off_rx.push(r);
        let cfg = EbpfConfig {
            ifaces: Some(vec![link.a_if.clone()]),
            flow_capacity: 65_536,
            pin_dir: pins.path.clone(),
            ..EbpfConfig::default()
        };
        let b = link.a.run(move || EbpfBackend::open(cfg).expect("attach"));
        let (t2, r2) = blast(&link, &rx, args.seconds, args.payload);
        b.close().expect("detach");
        on_tx.push(t2);
        on_rx.push(r2);
        eprintln!(
            "round {round}: without {:.0} sent/s {:.0} received/s; with {:.0} sent/s {:.0} received/s",
            t, r, t2, r2
        );
    }
    let (ot, or, nt, nr) = (median(off_tx), median(off_rx), median(on_tx), median(on_rx));
    println!(
        "## UDP rate, {}-byte payloads, namespace b -> a over veth ({} interleaved rounds of {} s, medians)",
        args.payload, args.rounds, args.seconds
    );
    println!();
    println!("| | without program | with program | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    println!("| sent packets/s | {ot:.0} | {nt:.0} | {:.3} |", nt / ot);
    println!(
        "| received packets/s | {or:.0} | {nr:.0} | {:.3} |",
        nr / or
    );
}
