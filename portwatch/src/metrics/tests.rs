//! Unit tests for the Prometheus metrics: interval deltas and window gauges, the label-set cap,
//! and the exposition checked by `promtool check metrics` (fails when promtool is missing).
use std::io::Write;
use std::process::{Command, Stdio};

use super::*;
use crate::classify::{EntryRef, Role, Summary, Traffic};
use crate::flow::Transport;

const S: u64 = 1_000_000_000;
const T0: u64 = 1_767_225_600 * S;

fn entry(id: &str, service: &str) -> EntryRef {
    EntryRef {
        id: id.into(),
        service: service.into(),
        ports: "443".into(),
        transport: "tcp".into(),
        direction: "inbound".into(),
        file: "spec.toml".into(),
        line: 1,
    }
}

fn traffic_finding(
    kind: FindingKind,
    e: Option<EntryRef>,
    port: u16,
    packets: u64,
    last: u64,
) -> Finding {
    let mut f = Finding::new(kind);
    f.entry = e;
    f.transport = Some(Transport::Tcp);
    f.port = Some(port);
    f.role = Some(Role::Server);
    f.traffic = Traffic {
        flows: 2,
        packets_in: packets,
        bytes_in: packets * 100,
        packets_out: packets,
        bytes_out: packets * 50,
        first_seen: last.saturating_sub(S),
        last_seen: last,
    };
    f
}

fn unused(e: EntryRef) -> Finding {
    let mut f = Finding::new(FindingKind::Unused { note: None });
    f.entry = Some(e);
    f
}

fn findings(v: Vec<Finding>) -> Findings {
    let mut kinds: BTreeMap<String, u64> = FindingKind::NAMES
        .iter()
        .map(|n| ((*n).to_owned(), 0))
        .collect();
    for f in &v {
        *kinds.entry(f.kind.name().to_owned()).or_default() += 1;
    }
    Findings {
        findings: v,
        summary: Summary {
            kinds,
            ..Summary::default()
        },
        services: Vec::new(),
    }
}

fn observe(m: &Metrics, interval: &Findings, window: &Findings, now: u64, took_ms: u64) {
    let snap = Snapshot {
        start: now - 60 * S,
        end: now,
        health: Health {
            packets_seen: 100,
            malformed: 2,
            flow_table_full: 1,
            ..Health::default()
        },
        ..Snapshot::default()
    };
    m.observe_interval(&IntervalObservation {
        node: "node-a",
        backend: BackendKind::Ebpf,
        interval: &snap,
        interval_findings: &interval.findings,
        window,
        window_start: T0,
        took: Duration::from_millis(took_ms),
        now,
    });
}

/// The value of the one sample whose line starts with `prefix`.
fn value(text: &str, prefix: &str) -> f64 {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(lines.len(), 1, "{prefix}: {lines:?}");
    lines[0].rsplit(' ').next().unwrap().parse().unwrap()
}

fn sample_metrics() -> Metrics {
    let m = Metrics::new();
    let web = entry("web", "Web \"UI\" \\ console\nsecond line");
    let i1 = findings(vec![
        traffic_finding(
            FindingKind::Documented,
            Some(web.clone()),
            443,
            10,
            T0 + 30 * S,
        ),
        traffic_finding(FindingKind::Undocumented, None, 8080, 3, T0 + 40 * S),
    ]);
    let w1 = findings(vec![
        traffic_finding(
            FindingKind::Documented,
            Some(web.clone()),
            443,
            10,
            T0 + 30 * S,
        ),
        traffic_finding(FindingKind::Undocumented, None, 8080, 3, T0 + 40 * S),
        unused(entry("ssh", "SSH")),
    ]);
    observe(&m, &i1, &w1, T0 + 60 * S, 3);
    let i2 = findings(vec![traffic_finding(
        FindingKind::Documented,
        Some(web.clone()),
        443,
        5,
        T0 + 100 * S,
    )]);
    let w2 = findings(vec![
        traffic_finding(FindingKind::Documented, Some(web), 443, 15, T0 + 100 * S),
        traffic_finding(FindingKind::Undocumented, None, 8080, 3, T0 + 40 * S),
        unused(entry("ssh", "SSH")),
    ]);
    observe(&m, &i2, &w2, T0 + 120 * S, 700);
    m.report_written(T0 + 121 * S);
    m
}

#[test]
fn counters_add_interval_deltas_and_gauges_follow_the_window() {
    let text = sample_metrics().render();
    let web = r#"portwatch_traffic_packets_total{node="node-a",verdict="documented",entry="web",transport="tcp",port="443",role="server"}"#;
    assert_eq!(
        value(&text, web),
        30.0,
        "10*2 + 5*2 packets, not the window's"
    );
    let undoc = r#"portwatch_traffic_bytes_total{node="node-a",verdict="undocumented",entry="",transport="tcp",port="8080",role="server"}"#;
    assert_eq!(value(&text, undoc), 450.0);
    assert_eq!(
        value(&text, r#"portwatch_packets_seen_total{node="node-a"}"#),
        200.0
    );
    assert_eq!(
        value(&text, r#"portwatch_flow_table_full_total{node="node-a"}"#),
        2.0
    );
    assert_eq!(
        value(&text, r#"portwatch_intervals_total{node="node-a"}"#),
        2.0
    );
    assert_eq!(
        value(
            &text,
            r#"portwatch_interval_duration_seconds_bucket{node="node-a",le="0.005"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"portwatch_interval_duration_seconds_bucket{node="node-a",le="1.0"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            r#"portwatch_interval_duration_seconds_count{node="node-a"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            r#"portwatch_backend_info{node="node-a",backend="ebpf"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"portwatch_last_report_timestamp_seconds{node="node-a"}"#
        ),
        (T0 / S + 121) as f64
    );
    assert_eq!(
        value(
            &text,
            r#"portwatch_findings{node="node-a",kind="undocumented"}"#
        ),
        1.0
    );
    // Entries: web used (quiet since its last use), ssh unused (quiet since the window start).
    let ssh = r#"{node="node-a",entry="ssh",service="SSH"}"#;
    assert_eq!(value(&text, &format!("portwatch_entry_unused{ssh}")), 1.0);
    assert_eq!(
        value(
            &text,
            &format!("portwatch_entry_quiet_since_timestamp_seconds{ssh}")
        ),
        (T0 / S) as f64
    );
    assert!(!text.contains(&format!("portwatch_entry_last_seen_timestamp_seconds{ssh}")));
    let web_labels = r#"{node="node-a",entry="web",service="Web \"UI\" \\ console\nsecond line"}"#;
    assert_eq!(
        value(&text, &format!("portwatch_entry_unused{web_labels}")),
        0.0
    );
    assert_eq!(
        value(
            &text,
            &format!("portwatch_entry_last_seen_timestamp_seconds{web_labels}")
        ),
        (T0 / S + 100) as f64
    );
}

#[test]
fn outbound_process_mismatch_traffic_is_counted_once_under_documented() {
    let m = Metrics::new();
    let mut doc = traffic_finding(
        FindingKind::Documented,
        Some(entry("push", "Push")),
        7201,
        4,
        T0 + S,
    );
    doc.role = Some(Role::Client);
    let mut pm = traffic_finding(
        FindingKind::ProcessMismatch {
            expected: vec!["pusher".into()],
            found: vec!["curl".into()],
        },
        Some(entry("push", "Push")),
        7201,
        4,
        T0 + S,
    );
    pm.role = Some(Role::Client);
    let f = findings(vec![doc, pm]);
    observe(&m, &f, &f, T0 + 60 * S, 5);
    let text = m.render();
    let doc = r#"portwatch_traffic_packets_total{node="node-a",verdict="documented",entry="push",transport="tcp",port="7201",role="client"}"#;
    assert_eq!(value(&text, doc), 8.0);
    assert!(
        !text.contains(r#"verdict="process_mismatch""#),
        "mismatch traffic counted twice:\n{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"portwatch_findings{node="node-a",kind="process_mismatch"}"#
        ),
        1.0
    );
}

#[test]
fn label_sets_past_the_cap_fold_into_an_overflow_series_and_are_counted() {
    let m = Metrics::with_max_series(2);
    let v: Vec<Finding> = (0..5)
        .map(|k| traffic_finding(FindingKind::Undocumented, None, 9000 + k, 1, T0 + S))
        .collect();
    let f = findings(v);
    observe(&m, &f, &f, T0 + 60 * S, 1);
    observe(&m, &f, &f, T0 + 120 * S, 1);
    let text = m.render();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("portwatch_traffic_packets_total{"))
        .collect();
    assert_eq!(
        series.len(),
        3,
        "two real series and the overflow: {series:?}"
    );
    let total: f64 = series
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(
        total, 20.0,
        "5 findings x 2 packets x 2 intervals: nothing lost"
    );
    assert_eq!(
        value(
            &text,
            r#"portwatch_metrics_capped_total{node="node-a",family="traffic"}"#
        ),
        6.0
    );
    assert!(text.contains(r#"entry="_overflow""#));
}

/// The exposition is what Prometheus accepts: `promtool check metrics` (Debian package
/// prometheus, installed by `cargo xtask setup`) parses and lints it.
#[test]
fn the_exposition_passes_promtool_check_metrics() {
    let text = sample_metrics().render();
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!(
            "promtool could not be run ({e}): install it with `cargo xtask setup` (Debian package prometheus)"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\n--- exposition ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // An empty agent (before its first interval) is valid too.
    let empty = Metrics::new().render();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(empty.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn get(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn the_endpoint_serves_the_exposition_on_loopback() {
    let m = Arc::new(sample_metrics());
    let server = serve("127.0.0.1:0".parse().unwrap(), m.clone())
        .await
        .unwrap();
    assert!(server.addr.ip().is_loopback());
    let resp = get(
        server.addr,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    assert_eq!(body, m.render());

    let resp = get(server.addr, "HEAD /metrics HTTP/1.1\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200 OK") && resp.ends_with("\r\n\r\n"));
    let resp = get(server.addr, "GET /secrets HTTP/1.1\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    let resp = get(server.addr, "DELETE /metrics HTTP/1.1\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 405") && resp.contains("Allow: GET, HEAD"));
    let resp = get(
        server.addr,
        &format!("GET /{} HTTP/1.1\r\n", "a".repeat(20_000)),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");

    // A second agent on the same address gets a clear error.
    let err = serve(server.addr, m).await.unwrap_err();
    assert!(err.to_string().contains(&server.addr.to_string()), "{err}");
    server.handle.abort();
}
