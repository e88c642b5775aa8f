//! Flood (issue 9): more than a million new UDP flows (distinct source address and port, ports
//! in a scrambled order) as raw frames through a veth into the agent (eBPF backend) running with
//! a small --flow-capacity. The per-port total equals what the sender put on the wire, the
//! agent's peak memory stays bounded, and the flows it could not keep are counted in the
//! report's health.
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use portwatch_tests::agent::{Agent, command, port_totals, udp_spec};
use portwatch_tests::{FrameBuilder, Link, PacketSocket, PinDir, portwatch_bin, require_root};
use serde_json::Value;

const FLOWS: u32 = 1_100_000;
const CAPACITY: &str = "4096";
const PORT: u16 = 7000;

/// veth drop counter of `ifname` inside `ns` (packets the veth could not hand to the peer).
fn tx_dropped(ns: &portwatch_tests::NetNs, ifname: &str) -> u64 {
    let out = ns
        .exec(
            "cat",
            &[&format!("/sys/class/net/{ifname}/statistics/tx_dropped")],
        )
        .expect("reading veth statistics");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn a_million_new_flows_are_counted_exactly_with_bounded_memory() {
    if !require_root("a_million_new_flows_are_counted_exactly_with_bounded_memory") {
        return;
    }
    let link = Link::new().expect("veth pair");
    let pins = PinDir::new("flood").expect("bpffs pin dir");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spec.toml"), udp_spec("flood", PORT)).unwrap();
    let p = |x: &str| dir.path().join(x).display().to_string();
    let args: Vec<String> = [
        "run",
        "--backend",
        "ebpf",
        "--spec",
        &p("spec.toml"),
        "--iface",
        &link.a_if,
        "--interval",
        "1h",
        "--node",
        "a",
        "--out",
        &p("out"),
        "--format",
        "json",
        "--pin-dir",
        &pins.path.display().to_string(),
        "--flow-capacity",
        CAPACITY,
        "--no-metrics",
        "-v",
    ]
    .map(String::from)
    .to_vec();
    let agent = Agent::start_ebpf(
        command(&link.a.path(), None, &portwatch_bin(), &args),
        Duration::from_secs(90),
    );
    let hwm_start = agent.vm_hwm_kib().expect("VmHWM");

    let frames = FrameBuilder {
        dst_mac: Link::mac(&link.a, &link.a_if).unwrap(),
        src_mac: Link::mac(&link.b, &link.b_if).unwrap(),
        vlans: Vec::new(),
    };
    let (b_if, a_v4) = (link.b_if.clone(), link.a_v4);
    let dropped_before = tx_dropped(&link.b, &link.b_if);
    let started = Instant::now();
    let sent = link
        .b
        .spawn_thread(move || {
            let sock = PacketSocket::open(&b_if).expect("packet socket");
            let payload = [0u8; 18];
            let mut n = 0u64;
            for i in 0..FLOWS {
                // Source 10.128.0.0/9 + a port scrambled by an odd multiplier: every (address,
                // port) pair distinct, so every frame is a new flow.
                let block = i >> 16;
                let sport = ((i & 0xffff).wrapping_mul(40_503) & 0xffff) as u16;
                let src = Ipv4Addr::from(0x0a80_0000u32 | (block << 8) | 1);
                let f = frames.udp4(src, a_v4, sport, PORT, &payload);
                n += sock.send_all([f.as_slice()]).expect("sending");
            }
            n
        })
        .join()
        .unwrap();
    let send_secs = started.elapsed().as_secs_f64();
    let veth_dropped = tx_dropped(&link.b, &link.b_if) - dropped_before;
    let hwm_flood = agent.vm_hwm_kib().expect("VmHWM");
    agent.signal(libc::SIGTERM);
    let (status, log) = agent.wait();
    assert!(status.success(), "agent exit {status}:\n{log}");

    let report: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("out/portwatch-a.json")).expect("report written"),
    )
    .expect("report is JSON");
    let health = &report["health"];
    let (packets, bytes) = port_totals(&report, "udp", PORT.into());
    eprintln!(
        "flood: sent {sent} frames ({FLOWS} new flows) in {send_secs:.1}s, veth dropped \
         {veth_dropped}; agent counted {packets} packets, {bytes} bytes on udp/{PORT}; \
         flow-capacity {CAPACITY}; health {health}; VmHWM {hwm_start} KiB after start, \
         {hwm_flood} KiB after the flood"
    );
    // What reached the agent's interface: the veth drops nothing it cannot hand over, and
    // counts what it could not.
    let delivered = sent - veth_dropped;
    assert_eq!(packets, delivered, "per-port packets");
    assert_eq!(bytes, delivered * (14 + 20 + 8 + 18), "per-port bytes");
    assert!(
        delivered as f64 >= 0.99 * f64::from(FLOWS),
        "veth dropped {veth_dropped}"
    );
    let full = health["flow_table_full"]
        .as_u64()
        .expect("health.flow_table_full");
    assert!(
        full >= u64::from(FLOWS) - 2 * CAPACITY.parse::<u64>().unwrap() - veth_dropped,
        "flows beyond the capacity are counted as dropped: {health}"
    );
    // Bounded: the flood may not grow the agent by more than 64 MiB (a million flows held in
    // userspace would take far more).
    assert!(
        hwm_flood - hwm_start < 64 * 1024,
        "VmHWM grew from {hwm_start} to {hwm_flood} KiB"
    );
}
