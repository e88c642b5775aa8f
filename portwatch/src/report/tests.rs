//! Report tests: snapshot tests of every rendering (volatile fields redacted), the JSON round
//! trip and schema checks, the cluster merge, and atomic file writes.
use std::fs;
use std::path::Path;

use super::merge::MergeError;
use super::*;
use crate::classify::tests::{flow, inventory, listener, node, spec, tcp_in, tcp_out, window};
use crate::classify::{ClassifyInput, FindingKind, NodeInfo};
use crate::flow::{FlowRecord, Transport};
use crate::host::{Listener, PortRange};

/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600 * 1_000_000_000;
const SEC: u64 = 1_000_000_000;

fn at(mut f: FlowRecord, start_s: u64, dur_s: u64) -> FlowRecord {
    f.stats.first_seen = T0 + start_s * SEC;
    f.stats.last_seen = T0 + (start_s + dur_s) * SEC;
    f
}

fn node_flows(name: &str) -> Vec<FlowRecord> {
    let mut v = vec![
        at(tcp_in("10.0.0.1:31112", "10.0.0.2:50000"), 10, 2),
        at(tcp_in("10.0.0.1:31112", "10.0.0.2:50001"), 20, 30),
        at(tcp_in("10.0.0.1:8080", "10.0.0.9:40000"), 30, 1),
        // A host outside the inventory's nodes: the inbound-only entry does not cover it.
        at(tcp_out("10.0.0.1:45000", "10.0.0.7:31112"), 40, 1),
        at(tcp_in("10.0.0.1:22", "10.9.9.9:50000"), 50, 100),
        at(
            flow(Transport::Udp, "10.0.0.1:40000", "10.0.0.2:41000"),
            60,
            5,
        ),
    ];
    if name == "node-b" {
        v.push(at(tcp_out("10.0.0.2:45001", "203.0.113.5:587"), 70, 3));
    }
    v
}

fn listeners() -> Vec<Listener> {
    vec![
        listener(Transport::Tcp, "0.0.0.0", 31112, Some("java")),
        listener(Transport::Tcp, "0.0.0.0", 8080, Some("python3")),
        listener(Transport::Tcp, "0.0.0.0", 22, Some("sshd")),
    ]
}

pub(super) fn build(name: &str) -> Report {
    let spec = spec();
    let inv = inventory();
    let mut w = window(node_flows(name));
    w.start = T0;
    w.end = T0 + 600 * SEC;
    w.health.packets_seen = 1234;
    let ls = listeners();
    let n = NodeInfo {
        name: name.to_owned(),
        ..node()
    };
    Report::analyze(
        &ClassifyInput {
            spec: &spec,
            inventory: Some(&inv),
            window: &w,
            listeners: Some(&ls),
            connections: None,
            ephemeral: PortRange::LINUX_DEFAULT,
            node: &n,
        },
        ReportMeta {
            generated_at: T0 + 601 * SEC,
            capture: CaptureInfo {
                backend: Some("fake".into()),
                interfaces: vec!["fake0".into()],
                listeners_unavailable: None,
            },
        },
    )
}

fn rendered(r: &Report, f: Format) -> String {
    let mut v = Vec::new();
    render(r, f, &mut v).unwrap();
    String::from_utf8(v).unwrap()
}

fn rendered_cluster(r: &ClusterReport, f: Format) -> String {
    let mut v = Vec::new();
    render_cluster(r, f, &mut v).unwrap();
    String::from_utf8(v).unwrap()
}

/// Replaces volatile JSON fields: the generator version, the generation time, and the
/// serialised histograms (opaque bytes whose encoding belongs to hdrhistogram).
fn redact_json(s: &str) -> String {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    match k.as_str() {
                        "version" if x.is_string() => *x = "[version]".into(),
                        "generated" => *x = "[generated]".into(),
                        "hdr" if x.as_str().is_some_and(|s| !s.is_empty()) => *x = "[hdr]".into(),
                        _ => walk(x),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v: serde_json::Value = serde_json::from_str(s).unwrap();
    walk(&mut v);
    serde_json::to_string_pretty(&v).unwrap() + "\n"
}

/// Compares with the checked-in snapshot; `PORTWATCH_BLESS=1` rewrites it instead.
pub(super) fn snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/report/snapshots")
        .join(name);
    if std::env::var_os("PORTWATCH_BLESS").is_some() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "snapshot {} unreadable ({e}); create it with PORTWATCH_BLESS=1",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "snapshot {name} differs (rerun with PORTWATCH_BLESS=1 and review the diff if intended)\n--- expected\n{expected}\n--- actual\n{actual}"
        );
    }
}

#[test]
fn node_report_snapshots() {
    let r = build("node-a");
    snapshot("node.json", &redact_json(&rendered(&r, Format::Json)));
    snapshot("node.txt", &rendered(&r, Format::Text));
    snapshot("node.md", &rendered(&r, Format::Markdown));
}

#[test]
fn cluster_report_snapshots() {
    let c = merge(&[build("node-b"), build("node-a")]).unwrap();
    snapshot(
        "cluster.json",
        &redact_json(&rendered_cluster(&c, Format::Json)),
    );
    snapshot("cluster.txt", &rendered_cluster(&c, Format::Text));
    snapshot("cluster.md", &rendered_cluster(&c, Format::Markdown));
}

#[test]
fn rendering_is_deterministic() {
    let (a, b) = (build("node-a"), build("node-a"));
    for f in [Format::Json, Format::Text, Format::Markdown] {
        assert_eq!(rendered(&a, f), rendered(&b, f));
    }
}

#[test]
fn json_round_trips_and_checks_its_schema() {
    let r = build("node-a");
    let json = rendered(&r, Format::Json);
    let back = Report::from_json(json.as_bytes(), "r.json").unwrap();
    assert_eq!(back, r);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["schema"], SCHEMA);
    assert_eq!(v["schema_version"], SCHEMA_VERSION);
    assert_eq!(v["generated"]["utc"], "2026-01-01T00:10:01Z");
    // Finding kinds are a flat "kind" tag beside the common fields.
    let wd = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "wrong_direction")
        .unwrap();
    assert_eq!(wd["expected"], "inbound");
    assert_eq!(wd["observed"], "client");
    assert_eq!(wd["entry"]["id"], "oxygen-in");

    let newer = json.replace(
        &format!("\"schema_version\": {SCHEMA_VERSION}"),
        "\"schema_version\": 99",
    );
    let e = Report::from_json(newer.as_bytes(), "new.json").unwrap_err();
    assert!(matches!(e, ReportError::Version { found: 99, .. }), "{e}");
    assert!(e.to_string().contains("new.json: schema version 99"), "{e}");
    let other = json.replace("\"portwatch.report\"", "\"something.else\"");
    let e = Report::from_json(other.as_bytes(), "o.json").unwrap_err();
    assert!(
        e.to_string()
            .contains("expected schema \"portwatch.report\""),
        "{e}"
    );
    let e = Report::from_json(&b"{"[..], "bad.json").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("bad.json: not a portwatch report"),
        "{e}"
    );
}

#[test]
fn merge_calls_an_entry_unused_only_when_every_node_does() {
    let a = build("node-a");
    let b = build("node-b");
    let unused_on = |r: &Report, id: &str| {
        r.findings.iter().any(|f| {
            matches!(f.kind, FindingKind::Unused { .. })
                && f.entry.as_ref().is_some_and(|e| e.id == id)
        })
    };
    // smtp: unused on node-a, used on node-b.
    assert!(unused_on(&a, "smtp") && !unused_on(&b, "smtp"));
    assert!(unused_on(&a, "ntp") && unused_on(&b, "ntp"));
    let c = merge(&[a.clone(), b.clone()]).unwrap();
    let ids: Vec<&str> = c.unused.iter().map(|e| e.id.as_str()).collect();
    assert!(ids.contains(&"ntp"), "{ids:?}");
    assert!(!ids.contains(&"smtp"), "{ids:?}");
    let smtp = c.entries.iter().find(|e| e.entry.id == "smtp").unwrap();
    assert_eq!(smtp.used_on, ["node-b"]);
    assert_eq!(smtp.unused_on, ["node-a"]);
    // Undocumented traffic stays per node.
    let und: Vec<&str> = c
        .findings
        .iter()
        .filter(|f| f.finding.kind == FindingKind::Undocumented)
        .map(|f| f.node.as_str())
        .collect();
    assert_eq!(und, ["node-a", "node-b"]);
    assert_eq!(c.kinds["undocumented"], 2);
    // ssh (inbound) has a listener on both nodes; smb has none anywhere.
    let nla: Vec<&str> = c
        .not_listening_anywhere
        .iter()
        .map(|e| e.id.as_str())
        .collect();
    assert!(nla.contains(&"smb") && !nla.contains(&"ssh"), "{nla:?}");
    // Distributions add up.
    let ox = c.services.iter().find(|s| s.service == "Oxygen").unwrap();
    assert_eq!(ox.duration_us.count, 4);
    assert!(ox.duration_us.max >= 29_000_000);
    // Node order does not matter.
    assert_eq!(merge(&[b, a]).unwrap(), c);
}

#[test]
fn merge_lists_ports_unused_on_every_node_that_used_the_entry() {
    let a = build("node-a");
    let b = build("node-b");
    // node-b used smtp on 587 only; node-a did not use smtp at all.
    let smtp_ports = |r: &Report| -> Option<Vec<String>> {
        r.findings.iter().find_map(|f| match &f.kind {
            FindingKind::UnusedPorts { ports } if f.entry.as_ref().unwrap().id == "smtp" => {
                Some(ports.clone())
            }
            _ => None,
        })
    };
    assert_eq!(smtp_ports(&b), Some(vec!["25".to_owned()]));
    assert_eq!(smtp_ports(&a), None);
    let entry = |c: &ClusterReport, id: &str| -> Vec<String> {
        c.entries
            .iter()
            .find(|e| e.entry.id == id)
            .unwrap()
            .unused_ports
            .clone()
    };
    let c = merge(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(entry(&c, "smtp"), ["25"]);
    // A third node that used smtp on 25 as well (no unused_ports finding): nothing is unused
    // everywhere any more.
    let mut n3 = b.clone();
    n3.node.name = "node-c".into();
    n3.findings
        .retain(|f| !matches!(f.kind, FindingKind::UnusedPorts { .. }));
    let c = merge(&[a, b, n3]).unwrap();
    assert!(entry(&c, "smtp").is_empty());
}

#[test]
fn merge_refuses_mixed_specs_and_duplicate_nodes() {
    let a = build("node-a");
    let mut other = build("node-b");
    other.spec.name = "other".into();
    assert!(matches!(
        merge(&[a.clone(), other]),
        Err(MergeError::SpecMismatch { .. })
    ));
    let e = merge(&[a.clone(), a]).unwrap_err();
    assert!(
        e.to_string().contains("two reports for node \"node-a\""),
        "{e}"
    );
    assert!(matches!(merge(&[]), Err(MergeError::Empty)));
}

#[test]
fn atomic_writes_replace_whole_files_and_leave_no_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let r = build("node-a");
    let paths = write_report(
        &out,
        &sink::latest_stem(&r),
        &r,
        &[Format::Json, Format::Text],
    )
    .unwrap();
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["portwatch-node-a.json", "portwatch-node-a.txt"]);
    let back = Report::load(&paths[0]).unwrap();
    assert_eq!(back, r);
    // A failing writer leaves the previous file as it was.
    let before = fs::read(&paths[1]).unwrap();
    let err = write_atomic(&out, "portwatch-node-a.txt", |w| {
        w.write_all(b"half a rep")?;
        Err(std::io::Error::other("disk full"))
    })
    .unwrap_err();
    assert!(err.to_string().contains("portwatch-node-a.txt"), "{err}");
    assert_eq!(fs::read(&paths[1]).unwrap(), before);
    let mut left: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["portwatch-node-a.json", "portwatch-node-a.txt"]);
    assert!(matches!(
        write_atomic(&out, "../x", |_| Ok(())),
        Err(SinkError::BadName { .. })
    ));
    assert_eq!(
        sink::timestamped_stem(&r),
        "portwatch-node-a-20260101T001000Z"
    );
}

#[test]
fn suggested_entries_parse_as_a_spec_and_cover_the_undocumented_traffic() {
    let reports = [build("node-a"), build("node-b")];
    let inv = inventory();
    let sg = suggest::suggest(&reports);
    let subjects: Vec<String> = sg
        .iter()
        .map(|s| format!("{}/{:?} {}", s.transport, s.port, s.role))
        .collect();
    assert_eq!(subjects, ["tcp/Some(8080) inbound"]);
    assert_eq!(sg[0].nodes.len(), 2);
    assert_eq!(sg[0].traffic.flows, 2);
    let toml = suggest::to_toml(&sg, &reports, Some(&inv), "observed");
    let spec =
        crate::spec::Spec::parse(&toml, "draft.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(spec.entries.len(), 1);
    let e = &spec.entries[0];
    assert_eq!(e.id, "observed-tcp-8080-inbound");
    assert_eq!(e.processes, ["python3"]);
    assert_eq!(
        e.sources
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.0.0.9"]
    );
    assert!(
        toml.contains("# Seen on node-a, node-b: 2 flow(s)"),
        "{toml}"
    );
}
