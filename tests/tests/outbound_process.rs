//! Outbound traffic and the process behind it: the agent (eBPF backend) on one end of a veth,
//! this test process holding two TCP connections it opened from the agent's namespace to two
//! documented outbound ports, one entry naming this process and one naming another. The final
//! report must name this process on both, and call the second a process mismatch.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use portwatch_tests::agent::{Agent, command};
use portwatch_tests::{Link, PinDir, portwatch_bin, require_root};
use serde_json::Value;

fn spec(own: &str) -> String {
    format!(
        r#"
[spec]
name = "outbound-process"
vendor = "test"
product = "test"
document = "outbound processes"

[zones]
all-nodes = "the two ends of the veth"

[[entry]]
id = "upload"
service = "Report upload"
ports = 7200
transport = "tcp"
direction = "outbound"
destinations = ["all-nodes"]
processes = ["uploader-daemon"]

[[entry]]
id = "push"
service = "Metrics push"
ports = 7201
transport = "tcp"
direction = "outbound"
destinations = ["all-nodes"]
processes = ["{own}"]
"#
    )
}

fn finding<'a>(report: &'a Value, kind: &str, entry: &str) -> Option<&'a Value> {
    report["findings"]
        .as_array()
        .expect("findings array")
        .iter()
        .find(|f| f["kind"] == kind && f["entry"]["id"] == entry)
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn outbound_flows_name_their_process_and_a_wrong_one_is_flagged() {
    if !require_root("outbound_flows_name_their_process_and_a_wrong_one_is_flagged") {
        return;
    }
    // The name /proc gives this process (the thread group's `comm`), which the agent will read.
    let own = std::fs::read_to_string("/proc/self/comm").expect("/proc/self/comm");
    let own = own.trim_end().to_owned();
    let link = Link::new().expect("veth pair between two namespaces");
    let pins = PinDir::new("outproc").expect("bpffs pin dir");
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("spec.toml");
    std::fs::write(&spec_path, spec(&own)).unwrap();
    let out = dir.path().join("out");

    // Servers on the far side.
    let b_v4 = link.b_v4;
    let (l1, l2) = link
        .b
        .spawn_thread(move || {
            (
                TcpListener::bind((b_v4, 7200)).unwrap(),
                TcpListener::bind((b_v4, 7201)).unwrap(),
            )
        })
        .join()
        .unwrap();

    let args: Vec<String> = [
        "run",
        "--backend",
        "ebpf",
        "-v",
        "--iface",
        &link.a_if,
        "--interval",
        "1h",
        "--node",
        "a",
        "--format",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["--spec".into(), spec_path.display().to_string()])
    .chain(["--out".into(), out.display().to_string()])
    .chain(["--pin-dir".into(), pins.path.display().to_string()])
    .collect();
    let agent = Agent::start_ebpf(
        command(&link.a.path(), None, &portwatch_bin(), &args),
        Duration::from_secs(30),
    );

    // Connections opened from the agent's namespace by this process, kept open until the
    // agent has written its final report (its socket scan runs at the interval's end).
    let conns: Vec<TcpStream> = link
        .a
        .spawn_thread(move || {
            [7200, 7201]
                .into_iter()
                .map(|port| {
                    let mut c = TcpStream::connect((b_v4, port)).unwrap();
                    c.write_all(&[9u8; 4096]).unwrap();
                    c
                })
                .collect()
        })
        .join()
        .unwrap();
    // The server ends stay open with the client ends.
    let served: Vec<TcpStream> = [&l1, &l2]
        .into_iter()
        .map(|l| {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            s.read_exact(&mut buf).unwrap();
            s.write_all(b"ok").unwrap();
            s
        })
        .collect();
    for mut c in conns.iter() {
        let mut ok = [0u8; 2];
        c.read_exact(&mut ok).unwrap();
    }

    agent.signal(libc::SIGTERM);
    let (status, log) = agent.wait();
    assert!(status.success(), "agent exit {status}:\n{log}");
    drop((conns, served));

    let report: Value = serde_json::from_slice(
        &std::fs::read(out.join("portwatch-a.json")).expect("report written"),
    )
    .expect("report is JSON");

    let push = finding(&report, "documented", "push").expect("push documented");
    assert_eq!(strings(&push["processes"]), [own.as_str()], "{push}");
    assert!(
        finding(&report, "process_mismatch", "push").is_none(),
        "the process the entry names is no mismatch"
    );

    let upload = finding(&report, "documented", "upload").expect("upload documented");
    assert_eq!(strings(&upload["processes"]), [own.as_str()], "{upload}");
    let pm = finding(&report, "process_mismatch", "upload").expect("upload process_mismatch");
    assert_eq!(strings(&pm["expected"]), ["uploader-daemon"]);
    assert_eq!(strings(&pm["found"]), [own.as_str()]);
    assert_eq!(pm["role"], "client");
    assert_eq!(pm["traffic"]["flows"], 1);
    assert!(
        pm["traffic"]["bytes_out"].as_u64().unwrap_or(0) >= 4096,
        "{pm}"
    );
    assert_eq!(pm["peers"][0]["addr"], b_v4.to_string());
}
