//! The first end-to-end path (issue 2): the agent binary on one end of a veth pair, eBPF
//! backend, a spec with documented UDP and TCP ports; known UDP datagrams and a TCP transfer to
//! documented and undocumented ports; the JSON report must carry exact UDP counts and the right
//! verdicts, and list the entry that saw no traffic.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use portwatch_tests::{Link, PinDir, portwatch_bin, require_root};
use serde_json::Value;

const SPEC: &str = r#"
[spec]
name = "first-path"
vendor = "test"
product = "test"
document = "issue 2"

[zones]
all-nodes = "the two ends of the veth"

[[entry]]
id = "app-udp"
service = "App datagrams"
ports = 7000
transport = "udp"
direction = "inbound"
sources = ["all-nodes"]
destinations = ["all-nodes"]

[[entry]]
id = "app-tcp"
service = "App stream"
ports = 7001
transport = "tcp"
direction = "inbound"
sources = ["all-nodes"]
destinations = ["all-nodes"]

[[entry]]
id = "never"
service = "Never used"
ports = 7999
transport = "tcp"
direction = "inbound"
sources = ["all-nodes"]
destinations = ["all-nodes"]
"#;

const UDP_N: u64 = 500;
const UDP_PAYLOAD: usize = 200;
const TCP_BYTES: usize = 256 * 1024;

/// The exact per-port totals a finding carries for its service port: (packets in, bytes in).
fn port_totals(report: &Value, transport: &str, port: u64) -> (u64, u64) {
    let f = report["findings"]
        .as_array()
        .expect("findings array")
        .iter()
        .find(|f| {
            f["transport"] == transport
                && f["port"] == port
                && (f["kind"] == "documented" || f["kind"] == "undocumented")
        })
        .unwrap_or_else(|| panic!("no traffic finding for {transport}/{port}"));
    let t = &f["port_totals"];
    (
        t["packets_in"].as_u64().unwrap_or(0),
        t["bytes_in"].as_u64().unwrap_or(0),
    )
}

fn findings<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .expect("findings array")
        .iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

#[test]
fn agent_reports_exact_udp_counts_and_verdicts() {
    if !require_root("agent_reports_exact_udp_counts_and_verdicts") {
        return;
    }
    let link = Link::new().expect("veth pair between two namespaces");
    let pins = PinDir::new("first").expect("bpffs pin dir");
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let out = dir.path().join("out");

    // Servers on the agent's side: UDP 7000 (documented) and 7100 (not), TCP 7001 and 7101.
    let a_v4 = link.a_v4;
    let servers = link.a.spawn_thread(move || {
        let u1 = UdpSocket::bind((a_v4, 7000)).unwrap();
        let u2 = UdpSocket::bind((a_v4, 7100)).unwrap();
        let t1 = TcpListener::bind((a_v4, 7001)).unwrap();
        let t2 = TcpListener::bind((a_v4, 7101)).unwrap();
        (u1, u2, t1, t2)
    });
    let (u1, u2, t1, t2) = servers.join().unwrap();

    let mut agent = Command::new(portwatch_bin())
        .args(["run", "--backend", "ebpf", "-v"])
        .arg("--spec")
        .arg(&spec)
        .args(["--iface", &link.a_if, "--interval", "1h", "--node", "a"])
        .arg("--out")
        .arg(&out)
        .arg("--pin-dir")
        .arg(&pins.path)
        .args(["--format", "json"])
        .arg("--history")
        .arg(dir.path().join("history.db"))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .pre_exec_netns(&link.a.path())
        .spawn()
        .expect("starting the agent");
    // Wait until the programs are attached.
    let mut lines = BufReader::new(agent.stderr.take().unwrap()).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("capturing with ebpf") {
            break;
        }
    }
    assert!(
        log.contains("capturing with ebpf"),
        "agent did not start:\n{log}"
    );
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    // Traffic from the other namespace.
    let to = move |port| SocketAddr::from((a_v4, port));
    let b_v4 = link.b_v4;
    let client = link.b.spawn_thread(move || {
        let s = UdpSocket::bind((b_v4, 0)).unwrap();
        let payload = [0x5au8; UDP_PAYLOAD];
        for _ in 0..UDP_N {
            s.send_to(&payload, to(7000)).unwrap();
            s.send_to(&payload, to(7100)).unwrap();
        }
        for port in [7001, 7101] {
            let mut c = TcpStream::connect(to(port)).unwrap();
            c.write_all(&vec![7u8; TCP_BYTES]).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            c.read_to_end(&mut rest).unwrap();
        }
    });
    // Drain the datagrams (the counts are taken at the TC hook, before any socket buffer, so
    // datagrams a full socket buffer drops still count; draining keeps the test honest anyway).
    let drains: Vec<_> = [u1, u2]
        .into_iter()
        .map(|s| {
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = [0u8; 2048];
                let mut n = 0u64;
                while s.recv_from(&mut buf).is_ok() {
                    n += 1;
                }
                n
            })
        })
        .collect();
    for l in [&t1, &t2] {
        let (mut c, _) = l.accept().unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), TCP_BYTES);
    }
    client.join().expect("the client finished");
    for d in drains {
        assert!(d.join().unwrap() > 0, "datagrams reached the servers");
    }

    // SIGTERM: final report, clean detach.
    // SAFETY: kill on the pid of a child we own.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().unwrap();
    let log = drain.join().unwrap().join("\n");
    assert!(status.success(), "agent exit {status}:\n{log}");

    // The history holds the interval: `portwatch report` rebuilds the same verdicts from it.
    let from_history = Command::new(portwatch_bin())
        .args(["report", "--since", "1d", "--format", "json"])
        .arg("--history")
        .arg(dir.path().join("history.db"))
        .arg("--spec")
        .arg(&spec)
        .output()
        .unwrap();
    assert!(
        from_history.status.success(),
        "{}",
        String::from_utf8_lossy(&from_history.stderr)
    );
    let rebuilt: Value =
        serde_json::from_slice(&from_history.stdout).expect("report --format json");
    assert_eq!(port_totals(&rebuilt, "udp", 7000).0, UDP_N);

    let report: Value = serde_json::from_slice(
        &std::fs::read(out.join("portwatch-a.json")).expect("report written"),
    )
    .expect("report is JSON");

    // Exact UDP: 500 datagrams of 200 bytes payload each; on the wire 14 + 20 + 8 + 200 bytes.
    let wire = (14 + 20 + 8 + UDP_PAYLOAD) as u64;
    assert_eq!(port_totals(&report, "udp", 7000), (UDP_N, UDP_N * wire));
    assert_eq!(port_totals(&report, "udp", 7100), (UDP_N, UDP_N * wire));
    // TCP: at least the payload went by (retransmissions may add more).
    let (_, tcp_bytes) = port_totals(&report, "tcp", 7001);
    assert!(tcp_bytes >= TCP_BYTES as u64, "tcp 7001 bytes {tcp_bytes}");

    let documented: Vec<&str> = findings(&report, "documented")
        .iter()
        .filter_map(|f| f["entry"]["id"].as_str())
        .collect();
    assert!(documented.contains(&"app-udp"), "{documented:?}");
    assert!(documented.contains(&"app-tcp"), "{documented:?}");
    let undocumented: Vec<(String, u64)> = findings(&report, "undocumented")
        .iter()
        .map(|f| {
            (
                f["transport"].as_str().unwrap_or("").to_owned(),
                f["port"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(
        undocumented.contains(&("udp".into(), 7100)),
        "{undocumented:?}"
    );
    assert!(
        undocumented.contains(&("tcp".into(), 7101)),
        "{undocumented:?}"
    );
    assert!(
        !undocumented.iter().any(|(_, p)| *p == 7000 || *p == 7001),
        "documented ports flagged undocumented: {undocumented:?}"
    );
    let unused: Vec<&str> = findings(&report, "unused")
        .iter()
        .filter_map(|f| f["entry"]["id"].as_str())
        .collect();
    assert_eq!(unused, ["never"]);
}

/// Runs the child inside a network namespace.
trait PreExecNetns {
    fn pre_exec_netns(&mut self, ns: &std::path::Path) -> &mut Self;
}

impl PreExecNetns for Command {
    fn pre_exec_netns(&mut self, ns: &std::path::Path) -> &mut Self {
        use std::os::unix::process::CommandExt;
        let ns = ns.to_owned();
        // SAFETY: between fork and exec we only call setns via the helper (async-signal-safe
        // syscalls: open and setns).
        unsafe {
            self.pre_exec(move || portwatch_tests::enter(&ns));
        }
        self
    }
}
