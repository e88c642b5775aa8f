//! Unit tests for the history store: window merges across reopen, `--since` selection, full
//! buckets, pruning, schema migration and refusal, checkpoint atomicity, large intervals and
//! a SIGKILL in the middle of a write.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rusqlite::OptionalExtension;

use super::*;
use crate::classify::findings::{EntryRef, FindingKind};
use crate::flow::{
    Counts, Endpoint, FlowRecord, FlowStats, Health, PortCounts, PortTotal, TcpFlags,
};

const S: u64 = 1_000_000_000;
const HOUR: u64 = 3600 * S;
/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600 * S;

fn ep(addr: IpAddr, port: u16) -> Endpoint {
    Endpoint { addr, port }
}

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn flow(remote: IpAddr, rport: u16, lport: u16, packets: u64, first: u64, last: u64) -> FlowRecord {
    FlowRecord {
        key: FlowKey {
            transport: Transport::Tcp,
            local: ep(v4(1), lport),
            remote: ep(remote, rport),
        },
        stats: FlowStats {
            inbound: Counts {
                packets,
                bytes: packets * 100,
            },
            outbound: Counts {
                packets: packets / 2,
                bytes: packets * 40,
            },
            flags_in: TcpFlags(TcpFlags::SYN),
            syn_in: 1,
            first_seen: first,
            last_seen: last,
            ..FlowStats::default()
        },
        vantage_known: true,
    }
}

fn port_total(port: u16, side: Side, dir: Direction, packets: u64) -> PortTotal {
    PortTotal {
        transport: Transport::Tcp,
        port,
        side,
        dir,
        counts: PortCounts {
            packets,
            segments: packets,
            bytes: packets * 100,
            syn: 1,
            ..PortCounts::default()
        },
    }
}

fn snapshot(start: u64, end: u64, flows: Vec<FlowRecord>) -> Snapshot {
    let packets: u64 = flows.iter().map(|f| f.stats.inbound.packets).sum();
    Snapshot {
        start,
        end,
        ports: vec![
            port_total(443, Side::Local, Direction::In, packets),
            port_total(50000, Side::Remote, Direction::In, packets),
        ],
        flows,
        health: Health {
            packets_seen: packets,
            malformed: 1,
            ..Health::default()
        },
    }
}

fn entry(id: &str) -> EntryRef {
    EntryRef {
        id: id.into(),
        service: format!("service {id}"),
        ports: "443".into(),
        transport: "tcp".into(),
        direction: "inbound".into(),
        file: "spec.toml".into(),
        line: 3,
    }
}

fn documented(id: &str, packets: u64, first: u64, last: u64) -> Finding {
    let mut f = Finding::new(FindingKind::Documented);
    f.entry = Some(entry(id));
    f.transport = Some(Transport::Tcp);
    f.port = Some(443);
    f.role = Some(Role::Server);
    f.traffic = Traffic {
        flows: 1,
        packets_in: packets,
        bytes_in: packets * 100,
        first_seen: first,
        last_seen: last,
        ..Traffic::default()
    };
    f
}

fn unused(id: &str) -> Finding {
    let mut f = Finding::new(FindingKind::Unused { note: None });
    f.entry = Some(entry(id));
    f
}

fn record(store: &mut Store, snap: &Snapshot, findings: &[Finding]) -> Recorded {
    store
        .record_interval(&IntervalRecord {
            node: "node-a",
            backend: BackendKind::Fake,
            snapshot: snap,
            findings,
            collect_errors: 0,
            checkpoint: None,
        })
        .unwrap()
}

fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    (dir, path)
}

#[test]
fn a_window_merges_intervals_and_survives_reopening() {
    let (_d, path) = temp_db();
    let a = snapshot(
        T0,
        T0 + 60 * S,
        vec![flow(v4(2), 50000, 443, 10, T0 + S, T0 + 59 * S)],
    );
    let b = snapshot(
        T0 + 60 * S,
        T0 + 120 * S,
        vec![
            flow(v4(2), 50000, 443, 4, T0 + 61 * S, T0 + 70 * S),
            flow(
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 7)),
                50001,
                443,
                2,
                T0 + 65 * S,
                T0 + 66 * S,
            ),
        ],
    );
    {
        let mut st = Store::open(&path).unwrap();
        assert_eq!(st.schema_version().unwrap(), schema::latest());
        record(
            &mut st,
            &a,
            &[documented("web", 10, T0 + S, T0 + 59 * S), unused("ssh")],
        );
        record(
            &mut st,
            &b,
            &[documented("web", 6, T0 + 61 * S, T0 + 70 * S)],
        );
    }
    // A restarted agent sees the same history.
    let st = Store::open(&path).unwrap();
    assert_eq!(st.interval_count().unwrap(), 2);
    let w = st.window(0, 1000).unwrap();
    assert_eq!((w.snapshot.start, w.snapshot.end), (T0, T0 + 120 * S));
    assert_eq!(w.intervals, 2);
    assert_eq!(w.nodes, vec!["node-a".to_owned()]);
    assert_eq!(w.backends, vec!["fake".to_owned()]);
    assert_eq!(w.snapshot.health.malformed, 2);
    assert_eq!(w.snapshot.health.packets_seen, 16);
    assert_eq!(w.history_start, Some(T0));

    let p443 = w
        .snapshot
        .ports
        .iter()
        .find(|p| p.port == 443 && p.side == Side::Local)
        .unwrap();
    assert_eq!(p443.counts.packets, 16);
    assert_eq!(p443.counts.syn, 2);

    assert_eq!(w.snapshot.flows.len(), 2, "one flow spans both intervals");
    let long = w
        .snapshot
        .flows
        .iter()
        .find(|f| f.key.remote.addr == v4(2))
        .unwrap();
    assert_eq!(long.stats.inbound.packets, 14);
    assert_eq!(
        (long.stats.first_seen, long.stats.last_seen),
        (T0 + S, T0 + 70 * S)
    );
    assert_eq!(long.stats.syn_in, 2);
    assert!(long.vantage_known);
    assert!(
        w.snapshot.flows.iter().any(|f| f.key.remote.addr.is_ipv6()),
        "IPv6 peers round-trip"
    );

    assert_eq!(w.entries.len(), 1, "unused findings carry no activity");
    let web = &w.entries[0];
    assert_eq!(
        (web.entry_id.as_str(), web.kind.as_str()),
        ("web", "documented")
    );
    assert_eq!(web.service, "service web");
    assert_eq!((web.first_seen, web.last_seen), (T0 + S, T0 + 70 * S));
    assert_eq!(web.window.packets_in, 16);
    assert_eq!(web.window_intervals, 2);
    assert!(web.is_use());
    assert_eq!(w.entry_last_use(), vec![("web", T0 + 70 * S)]);
}

#[test]
fn since_selects_whole_intervals_and_keeps_all_time_first_seen() {
    let (_d, path) = temp_db();
    let mut st = Store::open(&path).unwrap();
    for k in 0..3u64 {
        let s = snapshot(
            T0 + k * 60 * S,
            T0 + (k + 1) * 60 * S,
            vec![flow(
                v4(2),
                50000,
                443,
                10,
                T0 + k * 60 * S + S,
                T0 + k * 60 * S + 2 * S,
            )],
        );
        record(
            &mut st,
            &s,
            &[documented("web", 10, s.start + S, s.start + 2 * S)],
        );
    }
    let w = st.window(T0 + 60 * S, 1000).unwrap();
    assert_eq!(w.intervals, 2);
    assert_eq!(w.snapshot.start, T0 + 60 * S);
    let local: u64 = w
        .snapshot
        .ports
        .iter()
        .filter(|p| p.side == Side::Local)
        .map(|p| p.counts.packets)
        .sum();
    assert_eq!(local, 20, "only the two intervals ending after `since`");
    let web = &w.entries[0];
    assert_eq!(web.window.packets_in, 20);
    assert_eq!(web.window_intervals, 2);
    assert_eq!(web.first_seen, T0 + S, "first seen is all-time");
    // Nothing after the last interval: an empty window that still knows the entry.
    let later = st.window(T0 + 10 * HOUR, 1000).unwrap();
    assert_eq!(later.intervals, 0);
    assert!(later.snapshot.ports.is_empty());
    assert_eq!(later.entries[0].window, Traffic::default());
    assert_eq!(later.entries[0].last_seen, T0 + 122 * S);
}

#[test]
fn a_full_bucket_counts_new_flows_and_keeps_updating_old_ones() {
    let (_d, path) = temp_db();
    let opts = StoreOptions {
        flow_bucket: Duration::from_secs(3600),
        flows_per_bucket: 2,
    };
    let mut st = Store::open_with(&path, opts).unwrap();
    let flows: Vec<FlowRecord> = (0..5)
        .map(|k| flow(v4(2), 50000 + k, 443, 1, T0 + S, T0 + S))
        .collect();
    let r = record(&mut st, &snapshot(T0, T0 + 60 * S, flows.clone()), &[]);
    assert_eq!((r.flows_kept, r.flows_dropped), (2, 3));
    // Same bucket, next interval: the two kept flows still merge, the others are dropped.
    let r = record(&mut st, &snapshot(T0 + 60 * S, T0 + 120 * S, flows), &[]);
    assert_eq!((r.flows_kept, r.flows_dropped), (2, 3));
    // A new bucket has room again.
    let r = record(
        &mut st,
        &snapshot(
            T0 + HOUR,
            T0 + HOUR + 60 * S,
            vec![flow(v4(3), 40000, 443, 1, T0 + HOUR, T0 + HOUR)],
        ),
        &[],
    );
    assert_eq!((r.flows_kept, r.flows_dropped), (1, 0));

    let w = st.window(0, 1000).unwrap();
    assert_eq!(w.snapshot.flows.len(), 3);
    assert_eq!(w.flows_dropped_by_store, 6);
    assert_eq!(w.snapshot.health.flow_table_full, 6);
    assert!(w.snapshot.health.flows_approximate());
    let kept = w
        .snapshot
        .flows
        .iter()
        .find(|f| f.key.remote.port == 50000)
        .unwrap();
    assert_eq!(kept.stats.inbound.packets, 2);

    // The window's own bound counts too.
    let small = st.window(0, 1).unwrap();
    assert_eq!(small.snapshot.flows.len(), 1);
    assert_eq!(small.flows_over_capacity, 2);
    assert_eq!(small.snapshot.health.flow_table_full, 8);
}

#[test]
fn pruning_deletes_old_detail_but_keeps_first_and_last_seen() {
    let (_d, path) = temp_db();
    let mut st = Store::open(&path).unwrap();
    let old = snapshot(
        T0,
        T0 + 60 * S,
        vec![flow(v4(2), 50000, 443, 10, T0, T0 + S)],
    );
    record(&mut st, &old, &[documented("web", 10, T0, T0 + S)]);
    let day = 24 * HOUR;
    let new = snapshot(
        T0 + 2 * day,
        T0 + 2 * day + 60 * S,
        vec![flow(v4(3), 50000, 22, 5, T0 + 2 * day, T0 + 2 * day + S)],
    );
    record(&mut st, &new, &[]);

    let p = st
        .apply_retention(T0 + 2 * day + 60 * S, Duration::from_secs(86_400))
        .unwrap();
    assert_eq!(
        p,
        Pruned {
            intervals: 1,
            flow_buckets: 1
        }
    );
    assert_eq!(st.interval_count().unwrap(), 1);
    let w = st.window(0, 1000).unwrap();
    assert_eq!(w.intervals, 1);
    assert_eq!(w.snapshot.flows.len(), 1);
    assert_eq!(w.snapshot.flows[0].key.local.port, 22);
    // The entry was used two days ago: the summary remembers it after pruning.
    assert_eq!(w.entry_last_use(), vec![("web", T0 + S)]);
    assert_eq!(w.entries[0].window, Traffic::default());
    assert_eq!(w.history_start, Some(T0));
    let ports = st.ports_seen().unwrap();
    let p443 = ports
        .iter()
        .find(|p| p.port == 443 && p.side == Side::Local)
        .unwrap();
    // First seen comes from the pruned interval, last seen from the kept one.
    assert_eq!(
        (p443.first_seen, p443.last_seen),
        (T0, T0 + 2 * day + 60 * S)
    );
    assert_eq!(p443.packets, 15);
    // Pruning again deletes nothing.
    assert_eq!(st.prune(T0 + day).unwrap(), Pruned::default());
}

#[test]
fn a_version_1_database_is_migrated_on_open_and_keeps_its_data() {
    let (_d, path) = temp_db();
    {
        let st = Store::open_at(&path, StoreOptions::default(), 1).unwrap();
        assert_eq!(st.schema_version().unwrap(), 1);
        // What a version-1 agent wrote: an interval with per-port totals and a flow.
        st.conn
            .execute_batch(&format!(
                "INSERT INTO meta VALUES ('history_start', {T0});
                 INSERT INTO intervals (id, start_ns, end_ns, node, backend, packets_seen,
                     flow_table_full, flow_update_errors, port_table_full, malformed, truncated,
                     non_ip, capture_drops, collect_errors, port_rows, flows, flows_dropped)
                 VALUES (1, {T0}, {}, 'old-node', 'ebpf', 7, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0);
                 INSERT INTO port_totals VALUES (1, 17, 123, 'local', 'in', 7, 7, 700, 0, 0, 0, 0);
                 INSERT INTO flow_buckets VALUES ({T0}, {}, 1, 0);
                 INSERT INTO flows VALUES ({T0}, 17, '10.0.0.1', 123, '10.0.0.9', 123,
                     7, 700, 0, 0, 0, 0, 0, 0, {T0}, {T0}, 1);",
                T0 + 60 * S,
                T0 + HOUR
            ))
            .unwrap();
    }
    let mut st = Store::open(&path).unwrap();
    assert_eq!(st.schema_version().unwrap(), schema::latest());
    // The new summaries were filled from the old per-port totals.
    let ports = st.ports_seen().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(
        (ports[0].transport, ports[0].port, ports[0].packets),
        (Transport::Udp, 123, 7)
    );
    assert_eq!((ports[0].first_seen, ports[0].last_seen), (T0, T0 + 60 * S));
    // Old and new intervals read together.
    record(
        &mut st,
        &snapshot(T0 + 60 * S, T0 + 120 * S, vec![]),
        &[documented("web", 1, T0 + 61 * S, T0 + 61 * S)],
    );
    let w = st.window(0, 100).unwrap();
    assert_eq!(w.intervals, 2);
    assert_eq!(w.nodes, vec!["node-a".to_owned(), "old-node".to_owned()]);
    assert_eq!(w.backends, vec!["ebpf".to_owned(), "fake".to_owned()]);
    assert_eq!(w.snapshot.flows.len(), 1);
    assert_eq!(w.snapshot.flows[0].key.transport, Transport::Udp);
    assert_eq!(w.entries.len(), 1);
}

#[test]
fn a_newer_or_foreign_database_is_refused_by_name() {
    let (_d, path) = temp_db();
    {
        let st = Store::open(&path).unwrap();
        st.conn
            .execute(
                "INSERT INTO schema_version VALUES (99, 'from the future')",
                [],
            )
            .unwrap();
    }
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("history.db"), "{err}");

    let (_d2, other) = temp_db();
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE customers (id INTEGER)")
        .unwrap();
    let err = Store::open(&other).unwrap_err();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err}");

    let (_d3, junk) = temp_db();
    std::fs::write(
        &junk,
        b"this is not a database, just text that is long enough to be read",
    )
    .unwrap();
    let err = Store::open(&junk).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
}

#[test]
fn an_interval_that_ends_before_it_starts_is_rejected() {
    let (_d, path) = temp_db();
    let mut st = Store::open(&path).unwrap();
    let s = snapshot(T0 + 10, T0, vec![]);
    let err = st
        .record_interval(&IntervalRecord {
            node: "n",
            backend: BackendKind::Fake,
            snapshot: &s,
            findings: &[],
            collect_errors: 0,
            checkpoint: None,
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::BadInterval { .. }), "{err}");
    assert_eq!(st.interval_count().unwrap(), 0);
}

#[test]
fn the_capture_checkpoint_is_written_with_its_interval_or_not_at_all() {
    let (_d, path) = temp_db();
    let mut st = Store::open(&path).unwrap();
    assert_eq!(st.checkpoint(BackendKind::Ebpf).unwrap(), None);
    let rec = |st: &mut Store, s: &Snapshot, f: &[Finding], cp: &[u8]| {
        st.record_interval(&IntervalRecord {
            node: "n",
            backend: BackendKind::Ebpf,
            snapshot: s,
            findings: f,
            collect_errors: 0,
            checkpoint: Some(cp),
        })
    };
    rec(&mut st, &snapshot(T0, T0 + 60 * S, vec![]), &[], b"seq 1").unwrap();
    rec(
        &mut st,
        &snapshot(T0 + 60 * S, T0 + 120 * S, vec![]),
        &[],
        b"seq 2",
    )
    .unwrap();
    assert_eq!(
        st.checkpoint(BackendKind::Ebpf).unwrap().as_deref(),
        Some(&b"seq 2"[..])
    );
    assert_eq!(st.checkpoint(BackendKind::Pcap).unwrap(), None);

    // A write that fails half-way (a finding row is refused) leaves neither the interval nor
    // its checkpoint.
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON interval_findings
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
    let err = rec(
        &mut st,
        &snapshot(T0 + 120 * S, T0 + 180 * S, vec![]),
        &[documented("web", 1, T0 + 121 * S, T0 + 121 * S)],
        b"seq 3",
    )
    .unwrap_err();
    assert!(err.to_string().contains("writing a finding"), "{err}");
    assert_eq!(st.interval_count().unwrap(), 2);
    drop(st);
    let st = Store::open(&path).unwrap();
    assert_eq!(
        st.checkpoint(BackendKind::Ebpf).unwrap().as_deref(),
        Some(&b"seq 2"[..]),
        "the checkpoint of the interval that was not recorded is not kept"
    );
}

/// Checks that every interval in the database is whole: as many rows as it said it wrote.
fn assert_whole(path: &Path) -> u64 {
    let c = Connection::open(path).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let mut st = c
        .prepare(
            "SELECT i.id, i.port_rows, i.finding_rows,
                 (SELECT COUNT(*) FROM port_totals p WHERE p.interval_id = i.id),
                 (SELECT COUNT(*) FROM interval_findings f WHERE f.interval_id = i.id)
             FROM intervals i",
        )
        .unwrap();
    let mut rows: Vec<(i64, i64, i64, i64, i64)> = st
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    // Packed intervals: their blob holds the per-port totals.
    for row in &mut rows {
        let blob: Option<Vec<u8>> = c
            .query_row(
                "SELECT totals FROM port_blobs WHERE interval_id = ?1",
                [row.0],
                |r| r.get(0),
            )
            .optional()
            .unwrap();
        if let Some(b) = blob {
            row.3 += super::packed::decode(&b, |_| {}).unwrap() as i64;
        }
    }
    for (id, ports, findings, have_ports, have_findings) in &rows {
        assert_eq!(ports, have_ports, "interval {id}: port rows");
        assert_eq!(findings, have_findings, "interval {id}: finding rows");
    }
    rows.len() as u64
}

/// Writes large intervals: with `PORTWATCH_STORE_CRASH_DB` set (by the crash test below, which
/// runs this test in a child process) forever, announcing each commit on stdout; otherwise
/// five of them, checked whole.
#[test]
fn large_intervals_are_written_whole() {
    let target = std::env::var_os("PORTWATCH_STORE_CRASH_DB");
    let (_d, default_path) = temp_db();
    let path = target.clone().map_or(default_path, PathBuf::from);
    let mut st = Store::open(&path).unwrap();
    let rounds = if target.is_some() { u64::MAX } else { 5 };
    let mut k = 0u64;
    while k < rounds {
        let start = T0 + k * 60 * S;
        let flows: Vec<FlowRecord> = (0..4000u16)
            .map(|n| flow(v4((n % 200) as u8), 10_000 + n, 443, 3, start, start + S))
            .collect();
        let mut snap = snapshot(start, start + 60 * S, flows);
        snap.ports
            .extend((0..500u16).map(|n| port_total(20_000 + n, Side::Remote, Direction::Out, 1)));
        let findings: Vec<Finding> = (0..50)
            .map(|n| documented(&format!("e{n}"), 1, start, start + S))
            .collect();
        record(&mut st, &snap, &findings);
        k += 1;
        if target.is_some() {
            println!("committed {k}");
        }
    }
    drop(st);
    assert_eq!(assert_whole(&path), 5);
}

/// SIGKILL while an interval is being written: the history keeps every committed interval,
/// whole, and nothing of the interrupted one.
#[cfg(unix)]
#[test]
fn sigkill_mid_interval_leaves_the_history_intact() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let (_d, path) = temp_db();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::tests::large_intervals_are_written_whole",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PORTWATCH_STORE_CRASH_DB", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut committed = 0u64;
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("committed ") {
            committed = n.trim().parse().unwrap();
            if committed == 3 {
                // The child is already inside the next interval's transaction.
                child.kill().unwrap();
                break;
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the writer was killed");
    assert_eq!(committed, 3);
    let whole = assert_whole(&path);
    assert!(
        whole >= 3,
        "{whole} intervals: at least the 3 announced before the kill"
    );
    // And the store opens and reads after the crash.
    let st = Store::open(&path).unwrap();
    let w = st.window(0, 100_000).unwrap();
    assert_eq!(w.intervals, whole);
    assert_eq!(w.snapshot.flows.len(), 4000);
}

#[test]
fn a_version_3_database_is_migrated_and_its_port_summaries_are_not_counted_twice() {
    let (_d, path) = temp_db();
    {
        // A version-3 history: it upserted port_seen with every interval.
        let mut st = Store::open_at(&path, StoreOptions::default(), 3).unwrap();
        assert_eq!(st.schema_version().unwrap(), 3);
        st.conn
            .execute_batch(&format!(
                "INSERT INTO meta VALUES ('history_start', {T0});
                 INSERT INTO intervals (id, start_ns, end_ns, node, backend, packets_seen,
                     flow_table_full, flow_update_errors, port_table_full, malformed, truncated,
                     non_ip, capture_drops, collect_errors, port_rows, flows, flows_dropped,
                     finding_rows)
                 VALUES (1, {T0}, {}, 'old-node', 'ebpf', 7, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0);
                 INSERT INTO port_totals VALUES (1, 6, 443, 'local', 'in', 7, 7, 700, 1, 0, 0, 0);
                 INSERT INTO port_seen VALUES (6, 443, 'local', 'in', {T0}, {}, 7, 700);",
                T0 + 60 * S,
                T0 + 60 * S
            ))
            .unwrap();
        st.bucket_keys = None;
    }
    let mut st = Store::open(&path).unwrap();
    assert_eq!(st.schema_version().unwrap(), schema::latest());
    let folded: i64 = st
        .conn
        .query_row("SELECT seen_folded FROM intervals WHERE id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(folded, 1, "the old interval is already in port_seen");
    let p443 = |st: &Store| {
        st.ports_seen()
            .unwrap()
            .into_iter()
            .find(|p| p.port == 443 && p.side == Side::Local)
            .unwrap()
    };
    assert_eq!((p443(&st).packets, p443(&st).first_seen), (7, T0));
    // A new interval is summed in when read, without a port_seen row of its own.
    let day = 24 * HOUR;
    let new = snapshot(
        T0 + day,
        T0 + day + 60 * S,
        vec![flow(v4(2), 50000, 443, 5, T0 + day, T0 + day)],
    );
    record(&mut st, &new, &[]);
    let p = p443(&st);
    assert_eq!(
        (p.packets, p.first_seen, p.last_seen),
        (12, T0, T0 + day + 60 * S)
    );
    let rows: i64 = st
        .conn
        .query_row("SELECT COUNT(*) FROM port_seen", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        rows, 1,
        "the new interval's ports are not upserted per interval"
    );
    // The remote side of the new interval appears too.
    assert!(
        st.ports_seen()
            .unwrap()
            .iter()
            .any(|p| p.port == 50000 && p.side == Side::Remote && p.packets == 5)
    );
    // Pruning both folds the new one in exactly once; the summaries are unchanged.
    let before = st.ports_seen().unwrap();
    let pruned = st.prune(T0 + 2 * day).unwrap();
    assert_eq!(pruned.intervals, 2);
    assert_eq!(st.ports_seen().unwrap(), before);
    let rows: i64 = st
        .conn
        .query_row("SELECT COUNT(*) FROM port_seen", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2);
}

#[test]
fn the_bucket_keys_kept_in_memory_agree_with_the_database() {
    let (_d, path) = temp_db();
    let opts = StoreOptions {
        flow_bucket: Duration::from_secs(3600),
        flows_per_bucket: 4,
    };
    let mut st = Store::open_with(&path, opts).unwrap();
    let f = |port: u16, t: u64| flow(v4(2), port, 443, 1, t, t);
    let r = record(
        &mut st,
        &snapshot(T0, T0 + 60 * S, vec![f(50000, T0 + S)]),
        &[],
    );
    assert_eq!((r.flows_kept, r.flows_dropped), (1, 0));

    // A failed write (read-only database) must not leave keys it never committed behind.
    st.conn.execute_batch("PRAGMA query_only = ON").unwrap();
    let failed = st.record_interval(&IntervalRecord {
        node: "node-a",
        backend: BackendKind::Fake,
        snapshot: &snapshot(T0 + 60 * S, T0 + 120 * S, vec![f(50001, T0 + 61 * S)]),
        findings: &[],
        collect_errors: 0,
        checkpoint: None,
    });
    assert!(failed.is_err());
    st.conn.execute_batch("PRAGMA query_only = OFF").unwrap();

    // A row someone else wrote into the bucket meanwhile is merged, not an error.
    st.conn
        .execute(
            &format!(
                "INSERT INTO flows VALUES ({}, 6, '10.0.0.1', 443, '10.0.0.2', 50002,
                     4, 400, 0, 0, 0, 0, 0, 0, {T0}, {T0}, 1)",
                T0 - T0 % HOUR
            ),
            [],
        )
        .unwrap();
    st.conn
        .execute("UPDATE flow_buckets SET flows = flows + 1", [])
        .unwrap();
    let r = record(
        &mut st,
        &snapshot(
            T0 + 120 * S,
            T0 + 180 * S,
            vec![
                f(50000, T0 + 121 * S),
                f(50001, T0 + 122 * S),
                f(50002, T0 + 123 * S),
            ],
        ),
        &[],
    );
    assert_eq!((r.flows_kept, r.flows_dropped), (3, 0));
    // One more fits; then the bucket is full: a new flow is dropped, held ones still merge.
    let r = record(
        &mut st,
        &snapshot(
            T0 + 180 * S,
            T0 + 240 * S,
            vec![
                f(50001, T0 + 181 * S),
                f(50003, T0 + 182 * S),
                f(50004, T0 + 183 * S),
            ],
        ),
        &[],
    );
    assert_eq!((r.flows_kept, r.flows_dropped), (2, 1));
    let w = st.window(0, 100).unwrap();
    let packets: Vec<(u16, u64)> = w
        .snapshot
        .flows
        .iter()
        .map(|f| (f.key.remote.port, f.stats.inbound.packets))
        .collect();
    assert_eq!(
        packets,
        vec![(50000, 2), (50001, 2), (50002, 5), (50003, 1)]
    );
    assert_eq!(w.flows_dropped_by_store, 1);

    // Reopened, the store reads the bucket's keys back and goes on the same way.
    drop(st);
    let mut st = Store::open_with(&path, opts).unwrap();
    let r = record(
        &mut st,
        &snapshot(
            T0 + 240 * S,
            T0 + 300 * S,
            vec![f(50002, T0 + 241 * S), f(50005, T0 + 242 * S)],
        ),
        &[],
    );
    assert_eq!((r.flows_kept, r.flows_dropped), (1, 1));
}

#[test]
fn a_version_4_database_keeps_its_per_port_rows_readable_next_to_packed_intervals() {
    let (_d, path) = temp_db();
    {
        // A version-4 history: per-port rows, the interval not yet folded into port_seen.
        let st = Store::open_at(&path, StoreOptions::default(), 4).unwrap();
        st.conn
            .execute_batch(&format!(
                "INSERT INTO meta VALUES ('history_start', {T0});
                 INSERT INTO intervals (id, start_ns, end_ns, node, backend, packets_seen,
                     flow_table_full, flow_update_errors, port_table_full, malformed, truncated,
                     non_ip, capture_drops, collect_errors, port_rows, flows, flows_dropped,
                     finding_rows, seen_folded)
                 VALUES (1, {T0}, {}, 'old-node', 'ebpf', 7, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0,
                     0);
                 INSERT INTO port_totals VALUES (1, 6, 443, 'local', 'in', 7, 7, 700, 1, 0, 0, 0);
                 INSERT INTO port_totals VALUES (1, 6, 50000, 'remote', 'in', 7, 7, 700, 1, 0, 0,
                     0);",
                T0 + 60 * S,
            ))
            .unwrap();
    }
    let mut st = Store::open(&path).unwrap();
    assert_eq!(st.schema_version().unwrap(), schema::latest());
    // A packed interval next to it (same ports: 5 packets each side).
    record(
        &mut st,
        &snapshot(
            T0 + 60 * S,
            T0 + 120 * S,
            vec![flow(v4(2), 50000, 443, 5, T0 + 61 * S, T0 + 61 * S)],
        ),
        &[],
    );
    let blobs: i64 = st
        .conn
        .query_row("SELECT COUNT(*) FROM port_blobs", [], |r| r.get(0))
        .unwrap();
    let rows: i64 = st
        .conn
        .query_row("SELECT COUNT(*) FROM port_totals", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        (blobs, rows),
        (1, 2),
        "the new interval wrote one packed row"
    );
    assert_eq!(assert_whole(&path), 2);

    let w = st.window(0, 100).unwrap();
    let packets: Vec<(u16, Side, u64)> = w
        .snapshot
        .ports
        .iter()
        .map(|p| (p.port, p.side, p.counts.packets))
        .collect();
    assert_eq!(
        packets,
        vec![(443, Side::Local, 12), (50000, Side::Remote, 12)]
    );
    // Only the packed interval is inside a window starting after the old one.
    let later = st.window(T0 + 60 * S, 100).unwrap();
    assert_eq!(later.snapshot.ports[0].counts.packets, 5);
    assert_eq!(later.snapshot.ports[0].counts.bytes, 500);

    let seen = st.ports_seen().unwrap();
    let expect = |first, last, packets| {
        seen.iter()
            .filter(|p| p.packets == packets && p.first_seen == first && p.last_seen == last)
            .count()
    };
    assert_eq!(expect(T0, T0 + 120 * S, 12), 2, "{seen:?}");
    // Pruning both folds rows and blobs once each; the summaries read the same.
    assert_eq!(st.prune(T0 + HOUR).unwrap().intervals, 2);
    assert_eq!(st.ports_seen().unwrap(), seen);
    assert_eq!(st.window(0, 100).unwrap().snapshot.ports, vec![]);
    // A damaged blob is named, not misread.
    record(
        &mut st,
        &snapshot(T0 + HOUR, T0 + HOUR + 60 * S, vec![]),
        &[],
    );
    st.conn
        .execute("UPDATE port_blobs SET totals = x'0106bb01'", [])
        .unwrap();
    let e = st.window(0, 100).unwrap_err().to_string();
    assert!(
        e.contains("port_blobs.totals") && e.contains("truncated"),
        "{e}"
    );
}
