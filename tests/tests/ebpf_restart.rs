//! An agent killed with SIGKILL and restarted continues the per-port totals from the pinned
//! maps: what the kernel counted before the kill is reported once, after the restart, and
//! nothing handed out before the kill is reported again. The killed agent leaves nothing
//! attached (TCX links die with their process). Flow detail the kernel holds at the kill (in
//! the pinned flow cache) is reported once too.
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::Duration;

use portwatch::flow::{Direction, Side, Snapshot, Transport};
use portwatch_tests::{Link, PinDir, require_root};

struct Agent {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Agent {
    fn start(link: &Link, pins: &PinDir) -> Self {
        let mut child = link
            .a
            .command(env!("CARGO_BIN_EXE_pw_ebpf_driver"))
            .unwrap()
            .args(["--iface", &link.a_if])
            .arg("--pin-dir")
            .arg(&pins.path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the driver");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.starts_with("ready"), "driver did not start: {line:?}");
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn collect(&mut self) -> Snapshot {
        writeln!(self.stdin, "collect").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let snap =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad snapshot {line:?}: {e}"));
        // Wait for the baseline to be persisted: a kill before that point is a different case
        // (the interval was handed out but not committed), which this test does not stage.
        let mut done = String::new();
        self.stdout.read_line(&mut done).unwrap();
        assert_eq!(done.trim(), "committed", "driver did not commit");
        snap
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn udp_in(s: &Snapshot, port: u16) -> (u64, u64) {
    s.ports
        .iter()
        .filter(|p| {
            (p.transport, p.port, p.side, p.dir)
                == (Transport::Udp, port, Side::Local, Direction::In)
        })
        .fold((0, 0), |(n, b), p| {
            (n + p.counts.packets, b + p.counts.bytes)
        })
}

/// Inbound packets of the flows to a:7100 in flow detail.
fn flow_in(s: &Snapshot) -> u64 {
    s.flows
        .iter()
        .filter(|f| f.key.transport == Transport::Udp && f.key.local.port == 7100)
        .map(|f| f.stats.inbound.packets)
        .sum()
}

/// Sends `n` datagrams from b to a:7100 and waits until a received them (so the kernel counted
/// them before the function returns).
fn traffic(link: &Link, rx: &UdpSocket, n: u64) {
    let (src, dst): (SocketAddr, SocketAddr) =
        ((link.b_v4, 41000).into(), (link.a_v4, 7100).into());
    link.b.run(move || {
        let tx = UdpSocket::bind(src).unwrap();
        for _ in 0..n {
            tx.send_to(&[7u8; 32], dst).unwrap();
        }
    });
    let mut buf = [0u8; 64];
    for i in 0..n {
        rx.recv(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {i}/{n} lost: {e}"));
    }
}

#[test]
fn sigkill_and_restart_keep_the_totals() {
    if !require_root("sigkill_and_restart_keep_the_totals") {
        return;
    }
    let link = Link::new().unwrap();
    let pins = PinDir::new("restart").unwrap();
    let a4 = link.a_v4;
    let rx = link.a.run(move || UdpSocket::bind((a4, 7100)).unwrap());
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let per_packet = 14 + 20 + 8 + 32;

    let mut agent = Agent::start(&link, &pins);
    assert_eq!(
        portwatch_tests::tcx_programs(&link.a, &link.a_if)
            .unwrap()
            .len(),
        2,
        "ingress and egress attached"
    );
    traffic(&link, &rx, 100);
    let s1 = agent.collect();
    assert_eq!(udp_in(&s1, 7100), (100, 100 * per_packet));
    assert_eq!(flow_in(&s1), 100);

    // Counted by the kernel, never handed out: then the agent dies.
    traffic(&link, &rx, 40);
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    let shown = portwatch_tests::tcx_programs(&link.a, &link.a_if).unwrap();
    assert!(
        shown.is_empty(),
        "a killed agent left programs attached: {shown:?}"
    );
    drop(agent);
    // As if the agent had died while replacing its baseline: a half-made temporary pin.
    let tmp = pins.path.join("PW_BASELINE_TMP");
    portwatch_tests::run(
        std::process::Command::new("bpftool")
            .args(["map", "create"])
            .arg(&tmp)
            .args([
                "type", "array", "key", "4", "value", "8", "entries", "1", "name", "junk",
            ]),
    )
    .unwrap();

    let mut agent = Agent::start(&link, &pins);
    assert!(!tmp.exists(), "the stale temporary baseline was removed");
    let s2 = agent.collect();
    assert_eq!(
        udp_in(&s2, 7100),
        (40, 40 * per_packet),
        "the 40 counted before the kill, once"
    );
    assert_eq!(flow_in(&s2), 40, "flow detail left at the kill, once");
    assert_eq!(
        s2.start, s1.end,
        "the interval continues where the killed agent's last one ended"
    );
    traffic(&link, &rx, 25);
    let s3 = agent.collect();
    assert_eq!(udp_in(&s3, 7100), (25, 25 * per_packet));
    assert_eq!(flow_in(&s3), 25);

    // A clean exit, then a restart: nothing is repeated either.
    writeln!(agent.stdin, "quit").unwrap();
    agent.stdin.flush().unwrap();
    agent.child.wait().unwrap();
    drop(agent);
    let mut agent = Agent::start(&link, &pins);
    let s4 = agent.collect();
    assert_eq!(udp_in(&s4, 7100), (0, 0));
    assert_eq!(flow_in(&s4), 0);
}
