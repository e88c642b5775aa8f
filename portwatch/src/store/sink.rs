//! The agent sink that records every interval in the history and applies the retention
//! setting. A failed write keeps the interval (bounded) and retries it on the next call.
use std::collections::VecDeque;
use std::time::Duration;

use crate::agent::{IntervalReport, Sink};
use crate::capture::BackendKind;
use crate::classify::Finding;
use crate::clock::UnixNanos;
use crate::flow::Snapshot;

use super::{IntervalRecord, Store};

/// At most this many intervals wait for a retry after failed writes; older ones are dropped
/// (and counted).
pub const MAX_PENDING: usize = 60;
/// Retention is applied at most this often.
const PRUNE_EVERY: u64 = 3600 * 1_000_000_000;

#[derive(Debug)]
struct Pending {
    node: String,
    backend: BackendKind,
    snapshot: Snapshot,
    findings: Vec<Finding>,
    checkpoint: Option<Vec<u8>>,
}

/// Records intervals into a [`Store`].
#[derive(Debug)]
pub struct HistorySink {
    store: Store,
    retention: Duration,
    last_prune: Option<UnixNanos>,
    pending: VecDeque<Pending>,
    /// Intervals given up after failed writes (the pending queue was full).
    pub dropped: u64,
}

impl HistorySink {
    /// A sink writing into `store`, deleting what is older than `retention`.
    pub fn new(store: Store, retention: Duration) -> Self {
        Self {
            store,
            retention,
            last_prune: None,
            pending: VecDeque::new(),
            dropped: 0,
        }
    }

    /// The store (e.g. to read the history window at startup).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Intervals waiting for a retry.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn flush(&mut self) -> Result<(), super::StoreError> {
        while let Some(p) = self.pending.front() {
            self.store.record_interval(&IntervalRecord {
                node: &p.node,
                backend: p.backend,
                snapshot: &p.snapshot,
                findings: &p.findings,
                collect_errors: 0,
                checkpoint: p.checkpoint.as_deref(),
            })?;
            self.pending.pop_front();
        }
        Ok(())
    }
}

impl Sink for HistorySink {
    fn name(&self) -> &str {
        "history"
    }

    fn interval(
        &mut self,
        r: &IntervalReport<'_>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // Older intervals first; this one is written from the borrowed report when nothing
        // waits (no copy of a large interval), and kept for a retry only when it fails.
        let direct = self.flush().and_then(|()| {
            self.store
                .record_interval(&IntervalRecord {
                    node: &r.node.name,
                    backend: r.backend,
                    snapshot: r.interval,
                    findings: &r.interval_findings.findings,
                    collect_errors: 0,
                    checkpoint: r.checkpoint,
                })
                .map(|_| ())
        });
        if let Err(e) = direct {
            if self.pending.len() >= MAX_PENDING {
                self.pending.pop_front();
                self.dropped += 1;
            }
            self.pending.push_back(Pending {
                node: r.node.name.clone(),
                backend: r.backend,
                snapshot: r.interval.clone(),
                findings: r.interval_findings.findings.clone(),
                checkpoint: r.checkpoint.map(<[u8]>::to_vec),
            });
            return Err(e.into());
        }
        if self
            .last_prune
            .is_none_or(|t| r.now.saturating_sub(t) >= PRUNE_EVERY)
        {
            let p = self.store.apply_retention(r.now, self.retention)?;
            self.last_prune = Some(r.now);
            if p.intervals > 0 || p.flow_buckets > 0 {
                tracing::info!(
                    "history: retention deleted {} intervals and {} flow buckets",
                    p.intervals,
                    p.flow_buckets
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::agent::{Agent, Loaded};
    use crate::capture::fake::FakeBackend;
    use crate::classify::NodeInfo;
    use crate::clock::FakeClock;
    use crate::config::{AgentConfig, Overrides};
    use crate::flow::{Direction, Endpoint, FlowTable, PacketMeta, Transport};
    use crate::host::FakeHost;
    use crate::metrics::{Metrics, MetricsSink};

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_767_225_600 * S;

    const SPEC: &str = r#"
[spec]
name = "t"
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
"#;

    fn dns_queries(n: u32, start: u64) -> Snapshot {
        let mut t = FlowTable::new(64, start);
        for i in 0..n {
            t.ingest(&PacketMeta {
                ts: start + 1 + u64::from(i),
                transport: Transport::Udp,
                src: Endpoint {
                    addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                    port: 40000 + i as u16,
                },
                dst: Endpoint {
                    addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                    port: 53,
                },
                dir: Some(Direction::In),
                wire_len: 80,
                segments: 1,
                tcp_flags: 0,
            });
        }
        t.drain(start + 60 * S)
    }

    /// Lets the test reach the sink inside the agent.
    struct Shared(Arc<Mutex<HistorySink>>);

    impl Sink for Shared {
        fn name(&self) -> &str {
            "history"
        }
        fn interval(
            &mut self,
            r: &IntervalReport<'_>,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            self.0.lock().unwrap().interval(r)
        }
    }

    #[test]
    fn the_agent_feeds_history_and_metrics_and_a_failed_write_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("spec.toml");
        std::fs::write(&spec, SPEC).unwrap();
        let cfg = AgentConfig::resolve(
            Overrides {
                spec: Some(spec.clone()),
                ..Overrides::default()
            },
            Default::default(),
        )
        .unwrap();
        let clock = Arc::new(FakeClock::new(T0));
        let mut agent = Agent::new(
            &cfg,
            clock.clone(),
            Box::new(FakeBackend::new(vec![
                dns_queries(3, T0),
                dns_queries(2, T0 + 60 * S),
            ])),
            Box::new(FakeHost::default()),
            Loaded::load(&spec, None).unwrap(),
            NodeInfo {
                name: "n1".into(),
                addrs: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))],
            },
        );
        let db = dir.path().join("history.db");
        let history = Arc::new(Mutex::new(HistorySink::new(
            Store::open(&db).unwrap(),
            Duration::from_secs(90 * 86_400),
        )));
        let metrics = Arc::new(Metrics::new());
        agent.add_sink(Box::new(Shared(history.clone())));
        agent.add_sink(Box::new(MetricsSink::new(metrics.clone())));

        // The database refuses writes (as on a full disk): the interval waits.
        history
            .lock()
            .unwrap()
            .store
            .conn
            .execute_batch("PRAGMA query_only = ON")
            .unwrap();
        clock.set(T0 + 60 * S);
        agent.tick(false).unwrap();
        assert_eq!(agent.errors, 1);
        assert_eq!(history.lock().unwrap().pending(), 1);

        history
            .lock()
            .unwrap()
            .store
            .conn
            .execute_batch("PRAGMA query_only = OFF")
            .unwrap();
        clock.set(T0 + 120 * S);
        agent.tick(true).unwrap();
        assert_eq!(agent.errors, 1, "the retry succeeded");
        assert_eq!(history.lock().unwrap().pending(), 0);
        drop(agent);

        // A restarted agent (or `portwatch report`) finds both intervals.
        let store = Store::open(&db).unwrap();
        let w = store.window(0, 1000).unwrap();
        assert_eq!(w.intervals, 2);
        assert_eq!(w.nodes, vec!["n1".to_owned()]);
        assert_eq!(
            w.snapshot.flows.len(),
            3,
            "ports 40000-40002, two of them again"
        );
        let dns: Vec<_> = w.entries.iter().filter(|e| e.entry_id == "dns").collect();
        assert_eq!(dns.len(), 1);
        assert_eq!(dns[0].kind, "documented");
        assert_eq!(
            dns[0].window.packets_in, 5,
            "per-interval counts, not the window's"
        );
        assert_eq!(dns[0].window_intervals, 2);
        assert!(!w.entries.iter().any(|e| e.entry_id == "ssh"));

        // Metrics counted each interval once.
        let text = metrics.render();
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("portwatch_traffic_packets_total{") && l.contains(r#"entry="dns""#)
            })
            .unwrap();
        assert!(line.ends_with(" 5"), "{line}");
        assert!(text.contains(r#"portwatch_entry_unused{node="n1",entry="ssh",service="SSH"} 1"#));
    }
}
