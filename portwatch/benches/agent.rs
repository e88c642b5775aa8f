//! Agent interval benchmark without a kernel: the real [`Agent`] with the sinks an installed
//! agent has (report files in two formats, the SQLite history, metrics) fed by a backend that
//! hands out what the eBPF backend delivers under the 1M-distinct-flow load of
//! `cargo xtask bench overhead` (a full flow table of 65,536 flows per interval, one per
//! remote source port and address, plus a per-port total for every remote source port). Prints
//! each interval's phase times and the process's peak RSS; asserts nothing about time.
//!
//!     cargo bench -p portwatch --bench agent -- [INTERVALS] [FLOWS]
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portwatch::agent::{Agent, Loaded, ReportFiles};
use portwatch::capture::{Backend, BackendKind};
use portwatch::classify::NodeInfo;
use portwatch::clock::{FakeClock, UnixNanos};
use portwatch::config::{AgentConfig, Overrides};
use portwatch::flow::{
    Counts, Direction, Endpoint, FlowKey, FlowRecord, FlowStats, Health, PortCounts, PortTotal,
    Side, Snapshot, Transport,
};
use portwatch::host::FakeHost;
use portwatch::metrics::{Metrics, MetricsSink};
use portwatch::report::Format;
use portwatch::store::{HistorySink, Store};

const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_767_225_600 * SEC;

/// A flood of distinct UDP flows to udp/7000: 16 source addresses x 65,536 source ports,
/// scrambled, `flows` of them per interval (a different slice each time, as a full kernel
/// flow map refilled after each drain gives).
struct Flood {
    flows: usize,
    next: u64,
    last_end: UnixNanos,
}

fn scramble(i: u64) -> u64 {
    // An odd multiplier mod 2^20 is a bijection on the 1M flow space.
    (i.wrapping_mul(0x9E37_79B1)) & ((1 << 20) - 1)
}

impl Backend for Flood {
    fn kind(&self) -> BackendKind {
        BackendKind::Fake
    }

    fn collect(
        &mut self,
        now: UnixNanos,
    ) -> Result<Snapshot, Box<dyn std::error::Error + Send + Sync>> {
        let start = self.last_end.max(now.saturating_sub(60 * SEC));
        let local = Endpoint {
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            port: 7000,
        };
        let mut flows = Vec::with_capacity(self.flows);
        for _ in 0..self.flows {
            let x = scramble(self.next);
            self.next += 1;
            let addr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, (x >> 16) as u8 + 2));
            let t = start + (x % 50) * SEC;
            flows.push(FlowRecord {
                key: FlowKey {
                    transport: Transport::Udp,
                    local,
                    remote: Endpoint {
                        addr,
                        port: (x & 0xffff) as u16,
                    },
                },
                stats: FlowStats {
                    inbound: Counts {
                        packets: 1,
                        bytes: 64,
                    },
                    first_seen: t,
                    last_seen: t,
                    ..FlowStats::default()
                },
                vantage_known: true,
            });
        }
        flows.sort_by_key(|f| f.key);
        // Every remote source port carries packets in every interval (1M flows cycle ~28 times
        // a minute), and the kernel keys its per-port totals by port and side.
        let per_port = 28 * 16;
        let mut ports: Vec<PortTotal> = (0..=u16::MAX)
            .map(|p| PortTotal {
                transport: Transport::Udp,
                port: p,
                side: Side::Remote,
                dir: Direction::In,
                counts: PortCounts {
                    packets: per_port,
                    segments: per_port,
                    bytes: per_port * 64,
                    ..PortCounts::default()
                },
            })
            .collect();
        ports.push(PortTotal {
            transport: Transport::Udp,
            port: 7000,
            side: Side::Local,
            dir: Direction::In,
            counts: PortCounts {
                packets: per_port << 16,
                segments: per_port << 16,
                bytes: (per_port << 16) * 64,
                ..PortCounts::default()
            },
        });
        ports.sort_by_key(|p| (p.transport, p.port, p.side, p.dir));
        let packets = per_port << 16;
        self.last_end = now;
        Ok(Snapshot {
            start,
            end: now,
            flows,
            ports,
            health: Health {
                packets_seen: packets,
                flow_table_full: packets - self.flows as u64,
                ..Health::default()
            },
        })
    }

    fn interfaces(&self) -> Vec<String> {
        vec!["veth0".to_owned()]
    }
}

fn status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_owned())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "portwatch::agent=debug".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let intervals: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(6);
    let flows: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(65_536);
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/thoughtspot.toml");
    let dir = tempfile::tempdir().expect("scratch directory");
    let cfg = AgentConfig::resolve(
        Overrides {
            spec: Some(spec.clone()),
            ..Overrides::default()
        },
        Default::default(),
    )
    .expect("config");
    let clock = Arc::new(FakeClock::new(T0));
    let mut agent = Agent::new(
        &cfg,
        clock.clone(),
        Box::new(Flood {
            flows,
            next: 0,
            last_end: T0,
        }),
        Box::new(FakeHost::default()),
        Loaded::load(&spec, None).expect("spec"),
        NodeInfo {
            name: "bench".into(),
            addrs: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))],
        },
    );
    agent.add_sink(Box::new(ReportFiles::new(
        &dir.path().join("out"),
        &[Format::Json, Format::Text],
    )));
    let store = Store::open(dir.path().join("history.sqlite")).expect("history");
    agent.add_sink(Box::new(HistorySink::new(
        store,
        Duration::from_secs(90 * 86_400),
    )));
    agent.add_sink(Box::new(MetricsSink::new(Arc::new(Metrics::new()))));
    println!(
        "{intervals} intervals of {flows} flows; RSS before: {}",
        status("VmRSS")
    );
    let mut total = Duration::ZERO;
    for n in 0..intervals {
        clock.advance(60 * SEC);
        let t = Instant::now();
        agent.tick(n + 1 == intervals).expect("interval");
        let took = t.elapsed();
        total += took;
        println!(
            "interval {n}: {:.0} ms wall, VmRSS {}, VmHWM {}",
            took.as_secs_f64() * 1e3,
            status("VmRSS"),
            status("VmHWM")
        );
    }
    println!(
        "mean {:.0} ms per interval = {:.2}% of a core at a 60 s interval; VmHWM {}",
        total.as_secs_f64() * 1e3 / f64::from(intervals),
        total.as_secs_f64() / f64::from(intervals) / 60.0 * 100.0,
        status("VmHWM")
    );
}
