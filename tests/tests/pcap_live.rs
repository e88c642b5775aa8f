//! Live libpcap capture in a throw-away network namespace: loopback traffic is counted exactly
//! (packets, bytes, direction) and an idle interface neither blocks `collect` nor the shutdown.
//! Needs root (network namespaces, raw capture); says so and skips otherwise.
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use portwatch::capture::Backend;
use portwatch::capture::pcap::{PcapBackend, PcapConfig};
use portwatch::flow::{Direction, Side, Snapshot, Transport};

/// A network namespace that is deleted when dropped.
struct NetNs(String);

impl NetNs {
    fn new(tag: &str) -> Self {
        let name = format!("pw-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Self(name)
    }

    /// Runs `f` on a thread that has entered the namespace (threads it starts stay there).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a namespace file we hold open, for this thread only.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {args:?} failed");
}

fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIPPED: live pcap tests need root (network namespaces and raw capture)");
    }
    root
}

/// Collects until `done(snapshot so far)` or the deadline; returns the merged observations.
fn collect_until(b: &mut PcapBackend, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut all = Snapshot::default();
    let mut t = 1u64;
    loop {
        t += 1;
        let s = b.collect(t).unwrap();
        all.health.add(&s.health);
        all.flows.extend(s.flows);
        all.ports.extend(s.ports);
        if done(&all) || Instant::now() > deadline {
            return all;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn loopback_udp_is_counted_exactly_with_direction_and_wire_bytes() {
    if !privileged() {
        return;
    }
    let ns = NetNs::new("pcaplo");
    let snap = ns.run(|| {
        let mut b = PcapBackend::open(
            PcapConfig {
                ifaces: vec!["lo".into()],
                ..PcapConfig::default()
            },
            0,
        )
        .unwrap();
        assert_eq!(b.interfaces(), vec!["lo".to_string()]);
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rx.local_addr().unwrap().port();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // The capture thread is running once open() returns; the handle is active.
        for i in 0..200u32 {
            tx.send_to(&[0u8; 100], ("127.0.0.1", port)).unwrap();
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let s = collect_until(&mut b, |s| {
            s.ports
                .iter()
                .filter(|p| p.port == port && p.side == Side::Remote)
                .map(|p| p.counts.packets)
                .sum::<u64>()
                >= 200
        });
        (s, port)
    });
    let (s, port) = snap;
    let to_port: Vec<_> = s
        .ports
        .iter()
        .filter(|p| p.transport == Transport::Udp && p.port == port && p.side == Side::Remote)
        .collect();
    assert_eq!(to_port.len(), 1, "{to_port:?}");
    // From 127.0.0.1, a local address: outbound.
    assert_eq!(to_port[0].dir, Direction::Out);
    assert_eq!(to_port[0].counts.packets, 200);
    // Ethernet header (lo has one) + IPv4 20 + UDP 8 + 100 bytes of payload.
    assert_eq!(to_port[0].counts.bytes, 200 * (14 + 20 + 8 + 100));
    assert_eq!(s.health.capture_drops, 0);
}

#[test]
fn an_idle_interface_neither_blocks_collect_nor_shutdown() {
    if !privileged() {
        return;
    }
    let ns = NetNs::new("pcapidle");
    // A veth pair inside the namespace: nothing sends on it.
    ip(&[
        "-n", &ns.0, "link", "add", "pwidle0", "type", "veth", "peer", "name", "pwidle1",
    ]);
    ip(&["-n", &ns.0, "link", "set", "pwidle0", "up"]);
    ip(&["-n", &ns.0, "link", "set", "pwidle1", "up"]);
    let (collect_took, drop_took, ifaces) = ns.run(|| {
        // Every up non-loopback interface: the veth pair here.
        let mut b = PcapBackend::open(PcapConfig::default(), 0).unwrap();
        let ifaces = b.interfaces();
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        // The link is idle but for IPv6 neighbour discovery when it came up.
        let s = b.collect(1).unwrap();
        assert!(s.health.packets_seen < 20, "{:?}", s.health);
        let collect_took = t.elapsed();
        let t = Instant::now();
        drop(b);
        (collect_took, t.elapsed(), ifaces)
    });
    assert_eq!(ifaces, vec!["pwidle0".to_string(), "pwidle1".to_string()]);
    assert!(
        collect_took < Duration::from_secs(1),
        "collect took {collect_took:?}"
    );
    assert!(
        drop_took < Duration::from_secs(2),
        "shutdown took {drop_took:?}"
    );
}
