//! Faults with the real agent binary (issue 9), eBPF backend in a namespace:
//! - SIGKILL mid-interval, then a restart on the same pin dir and history: the history's totals
//!   equal what was sent (nothing lost, nothing twice), `portwatch report` still reads it, and
//!   every report file visible in --out at any moment is complete JSON;
//! - the spec file deleted, then corrupted, each followed by SIGHUP: the old spec stays in force
//!   and the agent keeps reporting.
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use portwatch_tests::agent::{Agent, command, port_totals, udp_spec};
use portwatch_tests::{Link, PinDir, portwatch_bin, require_root};
use serde_json::Value;

const PORT: u16 = 7000;
const PAYLOAD: usize = 100;

fn agent_args(link: &Link, dir: &Path, pins: &PinDir, interval: &str) -> Vec<String> {
    let p = |x: &str| dir.join(x).display().to_string();
    [
        "run",
        "--backend",
        "ebpf",
        "-v",
        "--spec",
        &p("spec.toml"),
        "--iface",
        &link.a_if,
        "--interval",
        interval,
        "--node",
        "a",
        "--out",
        &p("out"),
        "--format",
        "json",
        "--pin-dir",
        &pins.path.display().to_string(),
        "--history",
        &p("history.db"),
        "--no-metrics",
    ]
    .map(String::from)
    .to_vec()
}

fn start(link: &Link, dir: &Path, pins: &PinDir, interval: &str) -> Agent {
    Agent::start_ebpf(
        command(
            &link.a.path(),
            None,
            &portwatch_bin(),
            &agent_args(link, dir, pins, interval),
        ),
        Duration::from_secs(90),
    )
}

fn send(link: &Link, n: u64) {
    let (a, b) = (link.a_v4, link.b_v4);
    link.b
        .spawn_thread(move || {
            let s = UdpSocket::bind((b, 0)).unwrap();
            for _ in 0..n {
                s.send_to(&[0x5a; PAYLOAD], SocketAddr::from((a, PORT)))
                    .unwrap();
            }
        })
        .join()
        .unwrap();
}

/// The latest report (`out/portwatch-a.json`, replaced every interval), if there is one.
fn latest(out: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(out.join("portwatch-a.json")).ok()?).ok()
}

/// What tells one interval's report from the next.
fn interval_key(r: &Value) -> String {
    format!("{} {}", r["generated"], r["window"])
}

/// Polls the latest report until `n` reports other than `seen` were written (or `timeout`);
/// returns them.
fn next_reports(out: &Path, seen: Option<String>, n: usize, timeout: Duration) -> Vec<Value> {
    let start = Instant::now();
    let mut keys: Vec<String> = seen.into_iter().collect();
    let mut reports = Vec::new();
    while reports.len() < n && start.elapsed() < timeout {
        if let Some(r) = latest(out) {
            let k = interval_key(&r);
            if !keys.contains(&k) {
                keys.push(k);
                reports.push(r);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    reports
}

/// Reads every visible (not dot-prefixed) .json file in `out` over and over until `stop`;
/// returns how many reads were made and the ones that were not complete JSON.
fn watch_out(out: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut reads, mut bad) = (0u64, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            for e in std::fs::read_dir(&out).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !name.ends_with(".json") {
                    continue;
                }
                let Ok(bytes) = std::fs::read(e.path()) else {
                    continue; // replaced between listing and opening
                };
                reads += 1;
                if serde_json::from_slice::<Value>(&bytes).is_err() {
                    bad.push(format!("{name} ({} bytes)", bytes.len()));
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (reads, bad)
    })
}

#[test]
fn sigkill_mid_interval_then_restart_loses_and_doubles_nothing() {
    if !require_root("sigkill_mid_interval_then_restart_loses_and_doubles_nothing") {
        return;
    }
    let link = Link::new().expect("veth pair");
    let pins = PinDir::new("kill").expect("bpffs pin dir");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spec.toml"), udp_spec("faults", PORT)).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_out(out.clone(), stop.clone());

    // Run 1: one full interval, then more traffic and SIGKILL in the middle of the next.
    let agent = start(&link, dir.path(), &pins, "2s");
    send(&link, 200);
    assert!(
        !next_reports(&out, None, 1, Duration::from_secs(20)).is_empty(),
        "no interval report:\n{}",
        agent.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    send(&link, 150);
    std::thread::sleep(Duration::from_millis(500));
    agent.signal(libc::SIGKILL);
    let (status, _) = agent.wait();
    assert!(!status.success());

    // Run 2 on the same pins and history.
    let agent = start(&link, dir.path(), &pins, "2s");
    send(&link, 100);
    std::thread::sleep(Duration::from_millis(2500));
    send(&link, 50);
    agent.signal(libc::SIGTERM);
    let (status, log) = agent.wait();
    assert!(status.success(), "agent exit {status}:\n{log}");
    stop.store(true, Ordering::Relaxed);
    let (reads, bad) = watcher.join().unwrap();
    eprintln!("report files read while the agents ran: {reads}");
    assert!(reads > 0);
    assert!(bad.is_empty(), "half-written reports were visible: {bad:?}");

    let hist = Command::new(portwatch_bin())
        .args(["report", "--since", "1d", "--format", "json", "--history"])
        .arg(dir.path().join("history.db"))
        .arg("--spec")
        .arg(dir.path().join("spec.toml"))
        .output()
        .unwrap();
    assert!(
        hist.status.success(),
        "portwatch report on the history: {}",
        String::from_utf8_lossy(&hist.stderr)
    );
    let report: Value = serde_json::from_slice(&hist.stdout).expect("JSON from history");
    let sent = 200 + 150 + 100 + 50;
    assert_eq!(
        port_totals(&report, "udp", PORT.into()),
        (sent, sent * (14 + 20 + 8 + PAYLOAD as u64)),
        "totals in the history across the kill and restart"
    );
}

#[test]
fn spec_deleted_or_corrupted_then_sighup_keeps_the_old_spec() {
    if !require_root("spec_deleted_or_corrupted_then_sighup_keeps_the_old_spec") {
        return;
    }
    let link = Link::new().expect("veth pair");
    let pins = PinDir::new("hup").expect("bpffs pin dir");
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, udp_spec("faults", PORT)).unwrap();
    let out = dir.path().join("out");
    let agent = start(&link, dir.path(), &pins, "1s");
    // The SIGHUP handler is installed when the interval loop starts, after "capturing with"
    // is logged: wait for the first report so the signal cannot arrive before it.
    assert!(
        !next_reports(&out, None, 1, Duration::from_secs(20)).is_empty(),
        "no first report:\n{}",
        agent.log()
    );

    let corrupt = "[spec]\nname = \"faults\"\n[[entry]\nid = 3\n";
    for (what, change) in [("deleted", None), ("corrupted", Some(corrupt))] {
        match change {
            None => std::fs::remove_file(&spec).unwrap(),
            Some(text) => std::fs::write(&spec, text).unwrap(),
        }
        let failures = agent.log().matches("reload failed").count();
        agent.signal(libc::SIGHUP);
        let start = Instant::now();
        while agent.log().matches("reload failed").count() == failures {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no reload failure logged after the spec was {what}:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Still reporting under the old spec: the window's count on its documented port grows
        // by what was sent, and that traffic is documented (reports cover the agent's window,
        // so counts accumulate from one report to the next).
        let prev = latest(&out);
        let before = prev
            .as_ref()
            .map_or(0, |r| port_totals(r, "udp", PORT.into()).0);
        send(&link, 40);
        let reports = next_reports(
            &out,
            prev.map(|r| interval_key(&r)),
            2,
            Duration::from_secs(20),
        );
        let last = reports
            .last()
            .unwrap_or_else(|| panic!("no reports after the spec was {what}:\n{}", agent.log()));
        assert_eq!(reports.len(), 2, "{what}: reports after the reload");
        assert_eq!(last["spec"]["name"], "faults");
        assert!(
            last["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["kind"] == "documented" && f["entry"]["id"] == "app-udp"),
            "{what}: traffic not documented by the old spec: {last}"
        );
        assert_eq!(
            port_totals(last, "udp", PORT.into()).0,
            before + 40,
            "{what}: datagrams counted after the reload"
        );
    }
    agent.signal(libc::SIGTERM);
    let (status, log) = agent.wait();
    assert!(status.success(), "agent exit {status}:\n{log}");
    eprintln!(
        "reload failures logged:\n{}",
        log.lines()
            .filter(|l| l.contains("reload failed"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
