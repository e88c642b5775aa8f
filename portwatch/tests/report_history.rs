//! `portwatch report` end to end through the binary: a history database written through the
//! library (as the agent writes it: each interval classified alone, then recorded), reports
//! over different `--since` windows, and the time injected with `--now`.
use std::path::Path;
use std::process::Command;

use portwatch::capture::BackendKind;
use portwatch::classify::{self, ClassifyInput, NodeInfo};
use portwatch::flow::{Direction, Endpoint, FlowTable, PacketMeta, Snapshot, Transport};
use portwatch::host::PortRange;
use portwatch::spec::Spec;
use portwatch::store::{IntervalRecord, Store};

const S: u64 = 1_000_000_000;
const DAY: u64 = 86_400 * S;
/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600 * S;

const SPEC: &str = r#"
[spec]
name = "history-test"
vendor = "v"
product = "p"
document = "d"

[[entry]]
id = "dns"
service = "DNS"
ports = 53
transport = "udp"
direction = "inbound"
sources = ["any"]
destinations = ["any"]

[[entry]]
id = "ssh"
service = "SSH"
ports = 22
transport = "tcp"
direction = "inbound"
sources = ["any"]
destinations = ["any"]

[[entry]]
id = "web"
service = "Web"
ports = 443
transport = "tcp"
direction = "inbound"
sources = ["any"]
destinations = ["any"]
"#;

fn packet(ts: u64, t: Transport, sport: u16, dport: u16, flags: u8) -> PacketMeta {
    PacketMeta {
        ts,
        transport: t,
        src: Endpoint {
            addr: "10.0.0.2".parse().unwrap(),
            port: sport,
        },
        dst: Endpoint {
            addr: "10.0.0.1".parse().unwrap(),
            port: dport,
        },
        dir: Some(Direction::In),
        wire_len: 90,
        segments: 1,
        tcp_flags: flags,
    }
}

/// One minute starting at `start` with `(transport, service port)` conversations.
fn minute(start: u64, services: &[(Transport, u16)]) -> Snapshot {
    let mut t = FlowTable::new(1024, start);
    for (k, (tr, port)) in services.iter().enumerate() {
        let flags = if *tr == Transport::Tcp { 0x02 } else { 0 };
        t.ingest(&packet(start + S, *tr, 40_000 + k as u16, *port, flags));
    }
    t.drain(start + 60 * S)
}

fn record(store: &mut Store, spec: &Spec, snap: &Snapshot) {
    let node = NodeInfo {
        name: "node-1".into(),
        addrs: vec!["10.0.0.1".parse().unwrap()],
    };
    let findings = classify::classify(&ClassifyInput {
        spec,
        inventory: None,
        window: snap,
        listeners: None,
        connections: None,
        ephemeral: PortRange::LINUX_DEFAULT,
        node: &node,
    });
    store
        .record_interval(&IntervalRecord {
            node: "node-1",
            backend: BackendKind::Ebpf,
            snapshot: snap,
            findings: &findings.findings,
            collect_errors: 0,
            checkpoint: None,
        })
        .unwrap();
}

fn report(dir: &Path, since: &str, now: u64) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_portwatch"))
        .args(["report", "--format", "json", "--since", since])
        .arg("--history")
        .arg(dir.join("history.db"))
        .arg("--spec")
        .arg(dir.join("spec.toml"))
        .args(["--now", &(now / S).to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `kind:entry` of every finding.
fn kinds(r: &serde_json::Value) -> Vec<String> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}:{}",
                f["kind"].as_str().unwrap(),
                f["entry"]["id"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

#[test]
fn reports_from_history_cover_the_whole_window_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spec.toml"), SPEC).unwrap();
    let spec = Spec::load(dir.path().join("spec.toml")).unwrap();
    let db = dir.path().join("history.db");
    // Three agent runs (a restart between each), days apart.
    for (start, services) in [
        (T0, vec![(Transport::Udp, 53), (Transport::Tcp, 22)]),
        (T0 + 2 * DAY, vec![(Transport::Udp, 53)]),
        (T0 + 3 * DAY, vec![(Transport::Tcp, 8080)]),
    ] {
        let mut store = Store::open(&db).unwrap();
        record(&mut store, &spec, &minute(start, &services));
    }
    let now = T0 + 3 * DAY + 3600 * S;

    let month = report(dir.path(), "30d", now);
    let k = kinds(&month);
    for want in [
        "documented:dns",
        "documented:ssh",
        "unused:web",
        "undocumented:-",
    ] {
        assert!(k.contains(&want.to_owned()), "{want} in {k:?}");
    }
    assert_eq!(month["window"]["start"]["unix_ns"], T0);
    assert_eq!(month["generated"]["unix_ns"], now);
    assert_eq!(month["capture"]["backend"], "ebpf");
    assert_eq!(month["node"]["name"], "node-1");
    assert_eq!(month["summary"]["entries"]["unused"], 1);

    // Two days back: SSH was last used on day 0, so within this window it is unused.
    let recent = report(dir.path(), "2d", now);
    let k = kinds(&recent);
    assert!(k.contains(&"unused:ssh".to_owned()), "{k:?}");
    assert!(k.contains(&"documented:dns".to_owned()), "{k:?}");
    assert_eq!(recent["window"]["start"]["unix_ns"], T0 + 2 * DAY);
}

#[test]
fn entry_records_win_over_missing_flow_detail() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spec.toml"), SPEC).unwrap();
    let spec = Spec::load(dir.path().join("spec.toml")).unwrap();
    let mut store = Store::open(dir.path().join("history.db")).unwrap();
    // The live agent judged web used (its findings say so) but the interval's flow detail
    // holds none of it (as when the detail was lost): the entry records decide.
    let snap = minute(T0, &[(Transport::Udp, 53)]);
    let mut findings = classify::classify(&ClassifyInput {
        spec: &spec,
        inventory: None,
        window: &minute(T0, &[(Transport::Udp, 53), (Transport::Tcp, 443)]),
        listeners: None,
        connections: None,
        ephemeral: PortRange::LINUX_DEFAULT,
        node: &NodeInfo {
            name: "node-1".into(),
            addrs: vec!["10.0.0.1".parse().unwrap()],
        },
    })
    .findings;
    findings.retain(|f| f.entry.as_ref().is_some_and(|e| e.id == "web"));
    assert_eq!(findings.len(), 1);
    store
        .record_interval(&IntervalRecord {
            node: "node-1",
            backend: BackendKind::Pcap,
            snapshot: &snap,
            findings: &findings,
            collect_errors: 0,
            checkpoint: None,
        })
        .unwrap();
    drop(store);
    let r = report(dir.path(), "1d", T0 + 3600 * S);
    let k = kinds(&r);
    assert!(k.contains(&"documented:web".to_owned()), "{k:?}");
    assert!(!k.contains(&"unused:web".to_owned()), "{k:?}");
}

#[test]
fn a_missing_or_empty_history_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spec.toml"), SPEC).unwrap();
    let run = |db: &str| {
        Command::new(env!("CARGO_BIN_EXE_portwatch"))
            .args(["report", "--since", "1d"])
            .arg("--history")
            .arg(dir.path().join(db))
            .arg("--spec")
            .arg(dir.path().join("spec.toml"))
            .output()
            .unwrap()
    };
    let out = run("nope.db");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nope.db") && err.contains("does not exist"),
        "{err}"
    );
    assert!(
        !dir.path().join("nope.db").exists(),
        "report never creates a history"
    );

    Store::open(dir.path().join("empty.db")).unwrap();
    let out = run("empty.db");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no interval since"), "{err}");
}
