//! The report commands end to end through the binary: node reports built with the library
//! against the shipped Sisense spec, then `portwatch merge`, `portwatch spec suggest` and
//! `portwatch listeners` (on a fake /proc tree). No capture, no privileges, no real sockets.
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use portwatch::classify::{ClassifyInput, NodeInfo};
use portwatch::flow::{
    Counts, Direction, Endpoint, FlowKey, FlowRecord, FlowStats, PortCounts, PortTotal, Side,
    Snapshot, Transport,
};
use portwatch::host::PortRange;
use portwatch::inventory::Inventory;
use portwatch::report::{CaptureInfo, Format, Report, ReportMeta, render};
use portwatch::spec::Spec;

const T0: u64 = 1_767_225_600 * 1_000_000_000;
const SEC: u64 = 1_000_000_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ep(s: &str) -> Endpoint {
    let a: SocketAddr = s.parse().unwrap();
    Endpoint {
        addr: a.ip(),
        port: a.port(),
    }
}

/// A TCP flow: `syn_in` when the peer opened it, else the node did.
fn tcp(local: &str, remote: &str, peer_opened: bool) -> FlowRecord {
    FlowRecord {
        key: FlowKey {
            transport: Transport::Tcp,
            local: ep(local),
            remote: ep(remote),
        },
        stats: FlowStats {
            inbound: Counts {
                packets: 5,
                bytes: 700,
            },
            outbound: Counts {
                packets: 4,
                bytes: 3000,
            },
            syn_in: u32::from(peer_opened),
            syn_out: u32::from(!peer_opened),
            first_seen: T0 + 5 * SEC,
            last_seen: T0 + 9 * SEC,
            ..FlowStats::default()
        },
        vantage_known: true,
    }
}

fn window(flows: Vec<FlowRecord>) -> Snapshot {
    let mut ports = Vec::new();
    for f in &flows {
        for (side, port) in [
            (Side::Local, f.key.local.port),
            (Side::Remote, f.key.remote.port),
        ] {
            for (dir, c) in [
                (Direction::In, f.stats.inbound),
                (Direction::Out, f.stats.outbound),
            ] {
                ports.push(PortTotal {
                    transport: f.key.transport,
                    port,
                    side,
                    dir,
                    counts: PortCounts {
                        packets: c.packets,
                        segments: c.packets,
                        bytes: c.bytes,
                        ..PortCounts::default()
                    },
                });
            }
        }
    }
    Snapshot {
        start: T0,
        end: T0 + 300 * SEC,
        flows,
        ports,
        ..Snapshot::default()
    }
}

fn node_report(dir: &Path, name: &str, addr: &str, flows: Vec<FlowRecord>) -> PathBuf {
    let spec = Spec::load(root().join("specs/sisense-multinode.toml")).unwrap();
    let inv = Inventory::load(root().join("specs/inventory.example.toml")).unwrap();
    let w = window(flows);
    let node = NodeInfo {
        name: name.into(),
        addrs: vec![addr.parse().unwrap()],
    };
    let r = Report::analyze(
        &ClassifyInput {
            spec: &spec,
            inventory: Some(&inv),
            window: &w,
            listeners: None,
            connections: None,
            ephemeral: PortRange::LINUX_DEFAULT,
            node: &node,
        },
        ReportMeta {
            generated_at: T0 + 301 * SEC,
            capture: CaptureInfo::default(),
        },
    );
    let path = dir.join(format!("{name}.json"));
    let mut out = Vec::new();
    render(&r, Format::Json, &mut out).unwrap();
    fs::write(&path, out).unwrap();
    path
}

fn portwatch(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portwatch"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn two_nodes(dir: &Path) -> (PathBuf, PathBuf) {
    let a = node_report(
        dir,
        "node-1",
        "10.0.1.11",
        vec![
            // Oxygen licensing from the other node: documented.
            tcp("10.0.1.11:31112", "10.0.1.12:50000", true),
            // Something nobody documented.
            tcp("10.0.1.11:8080", "10.20.0.7:50001", true),
        ],
    );
    let b = node_report(
        dir,
        "node-2",
        "10.0.1.12",
        vec![
            // Discovery (ZooKeeper) served to node-1.
            tcp("10.0.1.12:2181", "10.0.1.11:50002", true),
            tcp("10.0.1.12:8080", "10.20.0.8:50003", true),
        ],
    );
    (a, b)
}

#[test]
fn merge_gives_the_cluster_view_against_the_shipped_sisense_spec() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_nodes(dir.path());
    let (code, out, err) = portwatch(&[
        "merge",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["schema"], "portwatch.cluster-report");
    let unused: Vec<&str> = v["unused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    // Used on one node only: not unused for the cluster.
    assert!(!unused.contains(&"oxygen-licensing-in"), "{unused:?}");
    assert!(!unused.contains(&"discovery"), "{unused:?}");
    assert!(unused.contains(&"repository"), "{unused:?}");
    let und: Vec<(&str, u64)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "undocumented")
        .map(|f| (f["node"].as_str().unwrap(), f["port"].as_u64().unwrap()))
        .collect();
    assert_eq!(und, [("node-1", 8080), ("node-2", 8080)]);

    // Text to a file, atomically.
    let out_path = dir.path().join("cluster.txt");
    let (code, _, err) = portwatch(&[
        "merge",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    let text = fs::read_to_string(&out_path).unwrap();
    assert!(
        text.starts_with("portwatch cluster report: 2 node(s)"),
        "{text}"
    );

    // A report that is not one is an error naming the file.
    let bad = dir.path().join("bad.json");
    fs::write(&bad, "{\"schema\": \"x\"}").unwrap();
    let (code, _, err) = portwatch(&["merge", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.json: expected schema \"portwatch.report\""),
        "{err}"
    );
}

#[test]
fn spec_suggest_drafts_entries_that_parse() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_nodes(dir.path());
    let draft = dir.path().join("draft.toml");
    let inv = root().join("specs/inventory.example.toml");
    let (code, _, err) = portwatch(&[
        "spec",
        "suggest",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--inventory",
        inv.to_str().unwrap(),
        "-o",
        draft.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("wrote 1 suggested entry"), "{err}");
    let spec = Spec::load(&draft).unwrap();
    assert_eq!(spec.entries.len(), 1);
    let e = &spec.entries[0];
    assert_eq!(e.id, "observed-tcp-8080-inbound");
    // Both peers are in the inventory's admin network.
    assert_eq!(
        e.sources
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["admin"]
    );
    let (code, _, _) = portwatch(&["spec", "check", draft.to_str().unwrap()]);
    assert!(code == 0 || code == 1, "draft must be a valid spec");
}

#[cfg(unix)]
#[test]
fn listeners_on_a_fake_proc_tree() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    fs::create_dir_all(p.join("net")).unwrap();
    fs::create_dir_all(p.join("sys/net/ipv4")).unwrap();
    fs::write(p.join("sys/net/ipv4/ip_local_port_range"), "32768 60999\n").unwrap();
    // 0.0.0.0:31112 and 0.0.0.0:9999 listening; hex words in this machine's byte order.
    let line = |sl: u32, port: u16, inode: u32| {
        format!(
            "  {sl}: 00000000:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0"
        )
    };
    fs::write(
        p.join("net/tcp"),
        format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n{}\n{}\n",
            line(0, 31112, 501),
            line(1, 9999, 502)
        ),
    )
    .unwrap();
    let proc_dir = p.join("42");
    fs::create_dir_all(proc_dir.join("fd")).unwrap();
    fs::write(proc_dir.join("comm"), "Sisense.Oxygen.\n").unwrap();
    fs::write(
        proc_dir.join("cmdline"),
        "C:\\Sisense\\Sisense.Oxygen.exe\0",
    )
    .unwrap();
    symlink("socket:[501]", proc_dir.join("fd/3")).unwrap();
    let spec = root().join("specs/sisense-multinode.toml");
    let (code, out, err) = portwatch(&[
        "listeners",
        "--spec",
        spec.to_str().unwrap(),
        "--proc-root",
        p.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ls = v["listeners"].as_array().unwrap();
    assert_eq!(ls.len(), 2);
    assert_eq!(ls[0]["listener"]["port"], 9999);
    assert_eq!(ls[0]["verdict"], "undocumented");
    assert_eq!(ls[1]["listener"]["port"], 31112);
    assert_eq!(ls[1]["verdict"], "documented", "{out}");
    assert_eq!(ls[1]["listener"]["processes"][0]["pid"], 42);
    let missing: Vec<&str> = v["not_listening"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["entry"]["id"].as_str().unwrap())
        .collect();
    assert!(missing.contains(&"repository") && !missing.contains(&"oxygen-licensing-in"));
}
