//! Classification and report benchmark: a synthetic window of many flows against the shipped
//! ThoughtSpot spec (101 entries, a 12,646-port dynamic range), timed for classify, report
//! build and each rendering. Prints figures and ratios; asserts nothing about time.
//!
//!     cargo bench -p portwatch --bench classify -- [FLOWS]     (or: cargo xtask bench classify)
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Instant;

use portwatch::classify::{ClassifyInput, NodeInfo, classify};
use portwatch::flow::{
    Counts, Direction, Endpoint, FlowKey, FlowRecord, FlowStats, PortCounts, PortTotal, Side,
    Snapshot, Transport,
};
use portwatch::host::{Listener, PortRange};
use portwatch::inventory::Inventory;
use portwatch::report::{Format, Report, ReportMeta, render};
use portwatch::spec::Spec;

/// xorshift64*: deterministic inputs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_767_225_600 * SEC;

fn window(n: usize, rng: &mut Rng) -> Snapshot {
    // Documented service ports of the ThoughtSpot spec, a few undocumented ones, and noise.
    let documented = [
        22u16, 80, 443, 2181, 2201, 4001, 5432, 8080, 8088, 12345, 25000, 30000,
    ];
    let undocumented = [3000u16, 6000, 9999, 11111];
    let local = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 11));
    let mut flows = Vec::with_capacity(n);
    let mut ports = std::collections::HashMap::new();
    for i in 0..n {
        let peer = IpAddr::V4(Ipv4Addr::new(
            10,
            (rng.below(4)) as u8,
            rng.below(256) as u8,
            rng.below(254) as u8 + 1,
        ));
        let eph = 32768 + rng.below(28000) as u16;
        let kind = rng.below(100);
        let (transport, lp, rp, syn_in, syn_out) = match kind {
            0..=69 => (Transport::Tcp, documented[i % documented.len()], eph, 1, 0),
            70..=84 => (Transport::Tcp, eph, documented[i % documented.len()], 0, 1),
            85..=92 => (
                Transport::Tcp,
                undocumented[i % undocumented.len()],
                eph,
                1,
                0,
            ),
            _ => (Transport::Udp, eph, 32768 + rng.below(28000) as u16, 0, 0),
        };
        let first = T0 + rng.below(300) * SEC;
        let stats = FlowStats {
            inbound: Counts {
                packets: 1 + rng.below(50),
                bytes: 60 + rng.below(60_000),
            },
            outbound: Counts {
                packets: 1 + rng.below(50),
                bytes: 60 + rng.below(600_000),
            },
            syn_in,
            syn_out,
            first_seen: first,
            last_seen: first + rng.below(60 * SEC),
            ..FlowStats::default()
        };
        for (side, port) in [(Side::Local, lp), (Side::Remote, rp)] {
            for (dir, c) in [
                (Direction::In, stats.inbound),
                (Direction::Out, stats.outbound),
            ] {
                let e: &mut PortCounts = ports.entry((transport, port, side, dir)).or_default();
                e.add(&PortCounts {
                    packets: c.packets,
                    segments: c.packets,
                    bytes: c.bytes,
                    ..PortCounts::default()
                });
            }
        }
        flows.push(FlowRecord {
            key: FlowKey {
                transport,
                local: Endpoint {
                    addr: local,
                    port: lp,
                },
                remote: Endpoint {
                    addr: peer,
                    port: rp,
                },
            },
            stats,
            vantage_known: true,
        });
    }
    Snapshot {
        start: T0,
        end: T0 + 600 * SEC,
        flows,
        ports: ports
            .into_iter()
            .map(|(key, counts)| PortTotal::from_key(key, counts))
            .collect(),
        ..Snapshot::default()
    }
}

/// CPU time of this thread in seconds (wall time where unavailable): the figures stay
/// meaningful on a loaded machine.
fn cpu_now() -> Option<f64> {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        (rc == 0).then(|| ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

fn time<T>(what: &str, per: usize, f: impl FnOnce() -> T) -> (T, f64) {
    let c0 = cpu_now();
    let t = Instant::now();
    let v = black_box(f());
    let wall = t.elapsed().as_secs_f64();
    let cpu = match (c0, cpu_now()) {
        (Some(a), Some(b)) => b - a,
        _ => wall,
    };
    println!(
        "{what:<20} cpu {:>9.1} ms  wall {:>9.1} ms  {:>12.0} flows/cpu-s",
        cpu * 1e3,
        wall * 1e3,
        per as f64 / cpu
    );
    (v, cpu)
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    let spec = Spec::load(root.join("thoughtspot.toml")).expect("shipped spec");
    let inv = Inventory::load(root.join("inventory.example.toml")).expect("example inventory");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let w = window(n, &mut rng);
    let listeners: Vec<Listener> = [22u16, 80, 443, 2181, 5432, 8080, 9999]
        .iter()
        .map(|&port| Listener {
            transport: Transport::Tcp,
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port,
            inode: u64::from(port),
            processes: vec![],
        })
        .collect();
    let node = NodeInfo {
        name: "node-1".into(),
        addrs: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 1, 11))],
    };
    let input = ClassifyInput {
        spec: &spec,
        inventory: Some(&inv),
        window: &w,
        listeners: Some(&listeners),
        connections: None,
        ephemeral: PortRange::LINUX_DEFAULT,
        node: &node,
    };
    println!(
        "classify bench: {n} flows, {} port totals, spec {} ({} entries)",
        w.ports.len(),
        spec.name,
        spec.entries.len()
    );
    let (findings, cls) = time("classify", n, || classify(&input));
    let (report, _) = time("report build", n, || {
        Report::build(
            &input,
            findings.clone(),
            ReportMeta {
                generated_at: T0 + 601 * SEC,
                ..ReportMeta::default()
            },
        )
    });
    let mut sizes = Vec::new();
    for f in [Format::Json, Format::Text, Format::Markdown] {
        let mut out = Vec::new();
        time(&format!("render {f}"), n, || {
            render(&report, f, &mut out).expect("render")
        });
        sizes.push((f, out.len()));
    }
    println!(
        "findings: {}  services: {}  unknown-direction flows: {}",
        report.findings.len(),
        report.services.len(),
        report.summary.flows.unknown_direction
    );
    for (f, len) in sizes {
        println!("{f:<9} output {:>10} bytes", len);
    }
    println!("classify cpu cost per flow: {:.0} ns", cls * 1e9 / n as f64);
    #[cfg(target_os = "linux")]
    if let Ok(s) = std::fs::read_to_string("/proc/self/status") {
        for l in s
            .lines()
            .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
        {
            println!("{l}");
        }
        let window_bytes = n * std::mem::size_of::<FlowRecord>();
        println!(
            "(the window itself holds {:.1} MB of flow records)",
            window_bytes as f64 / 1e6
        );
    }
}
