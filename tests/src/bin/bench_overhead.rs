//! Agent overhead benchmark (run by `cargo xtask bench overhead`, needs root): the real
//! `portwatch run` agent (eBPF backend, reports, history and metrics on) watches one end of a
//! veth pair while a paced AF_PACKET sender in the other namespace puts a steady packet rate
//! on the wire; the agent's CPU time (utime + stime from /proc/PID/stat) and memory (VmRSS,
//! VmHWM) are read over a steady window. Scenarios: 1,024 flows, and one million
//! distinct flows cycled through every interval. The same load is then watched by a peer
//! (`tcpdump -w /dev/null`) for a ratio. Prints figures and the goal; asserts nothing about
//! speed.
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use portwatch_tests::agent::{Agent, command};
use portwatch_tests::{FrameBuilder, Link, NetNs, PinDir, TxRing, portwatch_bin, require_root};

/// Frame length of every generated frame: Ethernet + IPv4 + UDP + 18 bytes of payload (64
/// bytes on the wire with the FCS).
const FRAME_LEN: usize = 14 + 20 + 8 + 18;
/// The destination port of every frame (documented nowhere: undocumented traffic).
const DPORT: u16 = 7000;

struct Args {
    rate: f64,
    warmup: f64,
    seconds: f64,
    interval: String,
    many: u32,
    few: u32,
    flow_capacity: Option<String>,
    peers: bool,
    spec: PathBuf,
    only: Option<String>,
    timings: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        rate: 500_000.0,
        warmup: 15.0,
        seconds: 120.0,
        interval: "60s".into(),
        many: 1 << 20,
        few: 1024,
        flow_capacity: None,
        peers: true,
        spec: PathBuf::from("specs/thoughtspot.toml"),
        only: None,
        timings: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_default();
        match arg.as_str() {
            "--rate" => a.rate = val().parse().expect("--rate PPS"),
            "--warmup" => a.warmup = val().parse().expect("--warmup SECONDS"),
            "--seconds" => a.seconds = val().parse().expect("--seconds SECONDS"),
            "--interval" => a.interval = val(),
            "--many" => a.many = val().parse().expect("--many FLOWS"),
            "--few" => a.few = val().parse().expect("--few FLOWS"),
            "--flow-capacity" => a.flow_capacity = Some(val()),
            "--no-peers" => a.peers = false,
            "--spec" => a.spec = PathBuf::from(val()),
            "--only" => a.only = Some(val()),
            "--timings" => a.timings = true,
            other => panic!(
                "unknown argument {other}; use --rate PPS --warmup S --seconds S --interval D \
                 --many N --few N --flow-capacity N --no-peers --spec FILE --only steady|many --timings"
            ),
        }
    }
    a
}

/// `flows` frames of FRAME_LEN bytes in one buffer: UDP from 10.128.B.1:P to `dst`:DPORT, every
/// (address, port) pair distinct (65,536 scrambled source ports per address block). Frames go
/// to a MAC address nobody has, so the receiving stack drops them right after TC ingress: the
/// load is the eBPF hook and the agent, not a socket.
fn frame_pool(flows: u32, src_mac: [u8; 6], dst: Ipv4Addr) -> Vec<u8> {
    let fb = FrameBuilder {
        dst_mac: [0x02, 0x70, 0x77, 0, 0, 0x01],
        src_mac,
        vlans: Vec::new(),
    };
    let template = fb.udp4(Ipv4Addr::new(10, 128, 0, 1), dst, 1, DPORT, &[0u8; 18]);
    assert_eq!(template.len(), FRAME_LEN);
    let mut pool = Vec::with_capacity(flows as usize * FRAME_LEN);
    for i in 0..flows {
        let block = i >> 16;
        let sport = ((i & 0xffff).wrapping_mul(40_503) & 0xffff) as u16;
        let src = Ipv4Addr::from(0x0a80_0000u32 | ((block & 0xffff) << 8) | 1);
        let mut f = template.clone();
        f[26..30].copy_from_slice(&src.octets());
        f[24..26].copy_from_slice(&[0, 0]);
        let c = ip_checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        // UDP over IPv4 may go without a checksum.
        f[40..42].copy_from_slice(&[0, 0]);
        pool.extend_from_slice(&f);
    }
    pool
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Makes `cmd`'s process run on `cpu` only (the sender and its softirq work keep CPU 0).
fn pin_child(cmd: &mut std::process::Command, cpu: usize) {
    use std::os::unix::process::CommandExt;
    // SAFETY: sched_setaffinity is async-signal-safe; it runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            pin_cpu(cpu);
            Ok(())
        });
    }
}

fn pin_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity on the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// A paced sender running in namespace b until stopped.
struct Sender {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    /// Sends the pool round-robin at `rate` frames/s: every millisecond or so, as many frames
    /// as the schedule asks for (at most 4,096 per burst), through an AF_PACKET TX ring.
    fn start(link: &Link, pool: Arc<Vec<u8>>, rate: f64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s, n, ifname) = (stop.clone(), sent.clone(), link.b_if.clone());
        let thread = link.b.spawn_thread(move || {
            pin_cpu(0);
            let mut ring = TxRing::open(&ifname).expect("TX ring");
            let count = pool.len() / FRAME_LEN;
            let t0 = Instant::now();
            let mut done = 0u64;
            let mut at = 0usize;
            while !s.load(Ordering::Relaxed) {
                let due = (t0.elapsed().as_secs_f64() * rate) as u64;
                if due <= done {
                    std::thread::sleep(Duration::from_micros(500));
                    continue;
                }
                let burst = (due - done).min(4096) as usize;
                let frames = (0..burst).map(|j| {
                    let k = (at + j) % count;
                    &pool[k * FRAME_LEN..(k + 1) * FRAME_LEN]
                });
                done += ring.send_all(frames).expect("sending");
                at = (at + burst) % count;
                n.store(done, Ordering::Relaxed);
            }
        });
        Self {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// CPU time of a process (all its threads, dead ones included) in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// (VmRSS, VmHWM) in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn rx_packets(ns: &NetNs, ifname: &str) -> u64 {
    ns.exec(
        "cat",
        &[&format!("/sys/class/net/{ifname}/statistics/rx_packets")],
    )
    .map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    })
    .unwrap_or(0)
}

/// What one process cost over the steady window.
struct Figures {
    scenario: &'static str,
    process: String,
    sent_pps: f64,
    received_pps: f64,
    cpu_pct: f64,
    rss_kib: u64,
    hwm_kib: u64,
    note: String,
}

/// Waits `warmup`, then reads the process's CPU time, the sender's count and the receiving
/// interface's counter over `seconds`.
fn measure(
    link: &Link,
    sender: &Sender,
    pid: u32,
    warmup: f64,
    seconds: f64,
) -> (f64, f64, f64, u64, u64) {
    std::thread::sleep(Duration::from_secs_f64(warmup));
    let (c0, s0, r0, t0) = (
        cpu_seconds(pid),
        sender.sent(),
        rx_packets(&link.a, &link.a_if),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (c1, s1, r1) = (
        cpu_seconds(pid),
        sender.sent(),
        rx_packets(&link.a, &link.a_if),
    );
    let dt = t0.elapsed().as_secs_f64();
    let (rss, hwm) = memory_kib(pid);
    (
        (s1 - s0) as f64 / dt,
        (r1 - r0) as f64 / dt,
        100.0 * (c1 - c0) / dt,
        rss,
        hwm,
    )
}

fn agent_run(
    link: &Link,
    a: &Args,
    scenario: &'static str,
    pool: Arc<Vec<u8>>,
    pins: &Path,
) -> Figures {
    let dir = tempfile::tempdir().expect("scratch directory");
    let p = |x: &str| dir.path().join(x).display().to_string();
    let mut args: Vec<String> = [
        "run",
        "--backend",
        "ebpf",
        "--spec",
        &a.spec.display().to_string(),
        "--iface",
        &link.a_if,
        "--interval",
        &a.interval,
        "--node",
        "bench",
        "--out",
        &p("out"),
        "--history",
        &p("history.sqlite"),
        "--metrics",
        "127.0.0.1:9187",
        "--pin-dir",
        &pins.display().to_string(),
        "-v",
    ]
    .map(String::from)
    .to_vec();
    if let Some(c) = &a.flow_capacity {
        args.extend(["--flow-capacity".to_owned(), c.clone()]);
    }
    let mut cmd = command(&link.a.path(), None, &portwatch_bin(), &args);
    if a.timings {
        // The agent's per-interval phase timings are logged at debug level.
        cmd.env("RUST_LOG", "info,portwatch::agent=debug");
    }
    pin_child(&mut cmd, 1);
    let mut agent = Agent::spawn(cmd).expect("starting the agent");
    assert!(
        agent.wait_for("capturing with ebpf", Duration::from_secs(90)),
        "the agent did not start:\n{}",
        agent.log()
    );
    let sender = Sender::start(link, pool, a.rate);
    let pid = agent.child.id();
    let (sent_pps, received_pps, cpu_pct, rss_kib, hwm_kib) =
        measure(link, &sender, pid, a.warmup, a.seconds);
    drop(sender);
    let stop = Instant::now();
    agent.signal(libc::SIGTERM);
    let (status, log) = agent.wait();
    let stop_secs = stop.elapsed().as_secs_f64();
    assert!(status.success(), "agent exit {status}:\n{log}");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("out/portwatch-bench.json")).expect("report written"),
    )
    .expect("report is JSON");
    let h = &report["health"];
    eprintln!("{scenario}: agent log tail:\n{}", tail(&log, 6));
    for l in log.lines().filter(|l| l.contains("interval: collect")) {
        eprintln!(
            "{scenario}: {}",
            l.rsplit_once("interval: ").map_or(l, |(_, t)| t)
        );
    }
    Figures {
        scenario,
        process: "portwatch run".into(),
        sent_pps,
        received_pps,
        cpu_pct,
        rss_kib,
        hwm_kib,
        note: format!(
            "packets seen {}, flows past the flow table {}; stopped {stop_secs:.1} s after SIGTERM",
            h["packets_seen"], h["flow_table_full"]
        ),
    }
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn peer_run(
    link: &Link,
    a: &Args,
    scenario: &'static str,
    pool: Arc<Vec<u8>>,
    name: &str,
    argv: &[&str],
) -> Figures {
    let mut cmd = link.a.command(argv[0]).expect("namespace command");
    cmd.args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    pin_child(&mut cmd, 1);
    let child: Child = cmd.spawn().expect("starting the peer");
    let pid = child.id();
    // Give it a moment to open its capture.
    std::thread::sleep(Duration::from_secs(2));
    let sender = Sender::start(link, pool, a.rate);
    let (sent_pps, received_pps, cpu_pct, rss_kib, hwm_kib) =
        measure(link, &sender, pid, a.warmup.min(5.0), a.seconds.min(30.0));
    drop(sender);
    // SAFETY: kill on the pid of a child we own and have not reaped.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let out = child.wait_with_output().expect("waiting for the peer");
    let err = String::from_utf8_lossy(&out.stderr);
    Figures {
        scenario,
        process: name.to_owned(),
        sent_pps,
        received_pps,
        cpu_pct,
        rss_kib,
        hwm_kib,
        note: err
            .lines()
            .filter(|l| l.contains("packets"))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

fn main() {
    if !require_root("bench_overhead") {
        std::process::exit(0);
    }
    let a = parse_args();
    let link = Link::new().expect("namespaces and veth");
    let pins = PinDir::new("overhead").expect("bpffs pin dir");
    let src_mac = Link::mac(&link.b, &link.b_if).expect("MAC of b");
    let mut scenarios: Vec<(&'static str, u32)> = Vec::new();
    if a.only.as_deref().is_none_or(|o| o == "steady") {
        scenarios.push(("steady", a.few));
    }
    if a.only.as_deref().is_none_or(|o| o == "many") {
        scenarios.push(("1M flows", a.many));
    }
    let mut rows = Vec::new();
    for (name, flows) in scenarios {
        let pool = &Arc::new(frame_pool(flows, src_mac, link.a_v4));
        eprintln!(
            "bench_overhead: {name}: {flows} flows at {} packets/s",
            a.rate
        );
        rows.push(agent_run(&link, &a, name, (*pool).clone(), &pins.path));
        if a.peers && have("tcpdump") {
            let ifname = link.a_if.clone();
            rows.push(peer_run(
                &link,
                &a,
                name,
                (*pool).clone(),
                "tcpdump -w /dev/null",
                &["tcpdump", "-i", &ifname, "-n", "-w", "/dev/null"],
            ));
        }
    }
    println!(
        "## Agent overhead: {} packets/s, agent interval {}; window {} s after {} s of load \
         (peers: {} s after 5 s)",
        a.rate,
        a.interval,
        a.seconds,
        a.warmup,
        a.seconds.min(30.0)
    );
    println!();
    println!(
        "| scenario | process | sent pkt/s | received pkt/s | CPU % of one core | VmRSS MiB | VmHWM MiB | notes |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.1} | {:.1} | {} |",
            r.scenario,
            r.process,
            r.sent_pps,
            r.received_pps,
            r.cpu_pct,
            r.rss_kib as f64 / 1024.0,
            r.hwm_kib as f64 / 1024.0,
            r.note
        );
    }
    println!();
    for r in rows.iter().filter(|r| r.process == "portwatch run") {
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        println!(
            "- {}: CPU {:.2}% of a core (goal <= 1%: {}), VmHWM {:.1} MiB (goal <= 64 MiB: {})",
            r.scenario,
            r.cpu_pct,
            verdict(r.cpu_pct <= 1.0),
            r.hwm_kib as f64 / 1024.0,
            verdict(r.hwm_kib <= 64 * 1024)
        );
        if let Some(p) = rows
            .iter()
            .find(|p| p.scenario == r.scenario && p.process != "portwatch run")
        {
            println!(
                "  {}: CPU {:.2}% ({:.2}x portwatch), VmHWM {:.1} MiB",
                p.process,
                p.cpu_pct,
                p.cpu_pct / r.cpu_pct.max(1e-9),
                p.hwm_kib as f64 / 1024.0
            );
        }
    }
}
