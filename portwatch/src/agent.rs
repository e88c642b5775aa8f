//! The periodic loop: poll the backend -> merge into the window -> classify -> hand the interval
//! to the sinks (report files, history, metrics). Owns reloads (SIGHUP) and the final report on
//! shutdown; knows nothing about how a backend captures or how a report is rendered.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::capture::{Backend, BackendKind};
use crate::classify::{self, ClassifyInput, Findings, NodeInfo};
use crate::clock::{Clock, UnixNanos};
use crate::config::AgentConfig;
use crate::flow::{Snapshot, Window};
use crate::host::{Host, PortRange, SocketScan};
use crate::inventory::Inventory;
use crate::report::{CaptureInfo, Format, Report, ReportMeta};
use crate::spec::Spec;

/// The spec and inventory in force.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub spec: Spec,
    pub inventory: Option<Inventory>,
}

/// Failures loading the spec or the inventory.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    Inventory(#[from] crate::inventory::InventoryError),
}

impl Loaded {
    /// Reads the spec and, when given, the inventory.
    pub fn load(spec: &Path, inventory: Option<&Path>) -> Result<Self, LoadError> {
        Ok(Self {
            spec: Spec::load(spec)?,
            inventory: inventory.map(Inventory::load).transpose()?,
        })
    }
}

/// Everything a sink sees at the end of an interval.
#[derive(Debug)]
pub struct IntervalReport<'a> {
    pub node: &'a NodeInfo,
    pub backend: BackendKind,
    pub interfaces: &'a [String],
    /// This interval alone.
    pub interval: &'a Snapshot,
    /// The whole window since the agent started.
    pub window: &'a Snapshot,
    pub findings: &'a Findings,
    /// This interval classified alone, with the same listeners and ephemeral range: what the
    /// history and the metrics count (window findings are cumulative, not deltas).
    pub interval_findings: &'a Findings,
    /// The report built from the window.
    pub report: &'a Report,
    pub loaded: &'a Loaded,
    /// The last interval before shutdown.
    pub last: bool,
    /// How long collecting and classifying took.
    pub took: Duration,
    pub now: UnixNanos,
    /// The backend's position after this interval ([`Backend::checkpoint`]): the history
    /// stores it in the transaction that records the interval. The backend commits it to its
    /// own store only after every sink had the interval.
    pub checkpoint: Option<&'a [u8]>,
}

/// Where finished intervals go (report files, history store, metrics).
pub trait Sink: Send {
    /// A short name for logs.
    fn name(&self) -> &str;
    /// Takes one finished interval. A failure is logged and the agent carries on counting; the
    /// sink retries on its next call.
    fn interval(
        &mut self,
        r: &IntervalReport<'_>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
    /// Whether a successful [`Sink::interval`] means report files were written.
    fn writes_reports(&self) -> bool {
        false
    }
    /// Told after every sink had the interval: `reports_written` is the interval's end when a
    /// sink that writes reports succeeded, `None` otherwise.
    fn after_interval(&mut self, _reports_written: Option<UnixNanos>) {}
    /// Told that an interval was lost before it reached the sinks (the backend could not
    /// deliver it).
    fn interval_failed(&mut self, _error: &(dyn std::error::Error + Send + Sync)) {}
}

/// The agent: one backend, one spec, any number of sinks.
pub struct Agent {
    clock: Arc<dyn Clock>,
    backend: Box<dyn Backend>,
    host: Box<dyn Host>,
    spec_path: PathBuf,
    inventory_path: Option<PathBuf>,
    loaded: Loaded,
    window: Window,
    node: NodeInfo,
    sinks: Vec<Box<dyn Sink>>,
    /// Interval failures so far (backend or sink), for health reporting.
    pub errors: u64,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("backend", &self.backend.kind())
            .field("spec", &self.spec_path)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent over an opened backend. `loaded` comes from [`Loaded::load`] on the paths in
    /// `cfg` (kept for reloads).
    pub fn new(
        cfg: &AgentConfig,
        clock: Arc<dyn Clock>,
        backend: Box<dyn Backend>,
        host: Box<dyn Host>,
        loaded: Loaded,
        node: NodeInfo,
    ) -> Self {
        Self {
            clock,
            backend,
            host,
            spec_path: cfg.spec.clone(),
            inventory_path: cfg.inventory.clone(),
            loaded,
            window: Window::new(cfg.flow_capacity.max(1) as usize),
            node,
            sinks: Vec::new(),
            errors: 0,
        }
    }

    /// Starts the window from stored history (so "unused" covers the retained window, not just
    /// this run).
    pub fn seed_window(&mut self, history: &Snapshot) {
        self.window.add(history);
    }

    /// Adds a sink.
    pub fn add_sink(&mut self, s: Box<dyn Sink>) {
        self.sinks.push(s);
    }

    /// The spec and inventory in force.
    pub fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    /// Re-reads the spec and inventory. On error the old ones stay in force and the error is
    /// returned for logging.
    pub fn reload(&mut self) -> Result<(), LoadError> {
        let new = Loaded::load(&self.spec_path, self.inventory_path.as_deref())?;
        self.loaded = new;
        Ok(())
    }

    /// The node's sockets now (`None`, logged, when they cannot be read) and its ephemeral
    /// range.
    fn sockets(&self) -> (Option<SocketScan>, PortRange) {
        let sockets = match self.host.sockets() {
            Ok(scan) => {
                if scan.connections_over_limit > 0 {
                    tracing::warn!(
                        "{} outbound connections beyond the first {} were not attributed to \
                         processes",
                        scan.connections_over_limit,
                        crate::host::MAX_CONNECTIONS
                    );
                }
                Some(scan)
            }
            Err(e) => {
                tracing::warn!("listening sockets unavailable: {e}");
                None
            }
        };
        let eph = self
            .host
            .ephemeral_range()
            .unwrap_or(PortRange::LINUX_DEFAULT);
        (sockets, eph)
    }

    /// Ends the current interval: collects, classifies the window, feeds the sinks.
    pub fn tick(
        &mut self,
        last: bool,
    ) -> Result<Findings, Box<dyn std::error::Error + Send + Sync>> {
        let t0 = self.clock.now();
        let mut heap = crate::alloc_stats::Phases::start();
        match self.backend.refresh_interfaces() {
            Ok(new) if !new.is_empty() => tracing::info!("now watching {}", new.join(", ")),
            Ok(_) => {}
            Err(e) => tracing::warn!("could not attach to new interfaces: {e}"),
        }
        let interval = match self.backend.collect(t0) {
            Ok(i) => i,
            Err(e) => {
                self.errors += 1;
                for s in &mut self.sinks {
                    s.interval_failed(&*e);
                }
                return Err(e);
            }
        };
        let t_collected = self.clock.now();
        heap.mark("collect");
        self.window.add(&interval);
        heap.mark("window merge");
        let window = self.window.view();
        let (sockets, ephemeral) = self.sockets();
        let input = ClassifyInput {
            spec: &self.loaded.spec,
            inventory: self.loaded.inventory.as_ref(),
            window,
            listeners: sockets.as_ref().map(|s| &s.listeners[..]),
            connections: sockets.as_ref().map(|s| &s.connections[..]),
            ephemeral,
            node: &self.node,
        };
        let findings = classify::classify(&input);
        heap.mark("classify window");
        let interval_findings = classify::classify(&ClassifyInput {
            window: &interval,
            ..input
        });
        heap.mark("classify interval");
        let now = self.clock.now();
        let ifaces = self.backend.interfaces();
        let report = Report::build(
            &input,
            findings.clone(),
            ReportMeta {
                generated_at: now,
                capture: CaptureInfo {
                    backend: Some(self.backend.kind().to_string()),
                    interfaces: ifaces.clone(),
                    listeners_unavailable: sockets
                        .is_none()
                        .then(|| "listening sockets could not be read".to_owned()),
                },
            },
        );
        heap.mark("report build");
        let report = IntervalReport {
            node: &self.node,
            backend: self.backend.kind(),
            interfaces: &ifaces,
            interval: &interval,
            window,
            findings: &findings,
            interval_findings: &interval_findings,
            report: &report,
            loaded: &self.loaded,
            last,
            took: Duration::from_nanos(now.saturating_sub(t0)),
            now,
            checkpoint: self.backend.checkpoint(),
        };
        let mut reports_written = None;
        let ms = |a: UnixNanos, b: UnixNanos| b.saturating_sub(a) as f64 / 1e6;
        let mut timings = format!(
            "collect {:.1} ms ({} flows), classify and build {:.1} ms",
            ms(t0, t_collected),
            interval.flows.len(),
            ms(t_collected, now)
        );
        for s in &mut self.sinks {
            let t = self.clock.now();
            let result = s.interval(&report);
            timings.push_str(&format!(", {} {:.1} ms", s.name(), ms(t, self.clock.now())));
            heap.mark(s.name());
            match result {
                Ok(()) if s.writes_reports() => reports_written = Some(now),
                Ok(()) => {}
                Err(e) => {
                    self.errors += 1;
                    tracing::error!("{}: {e} (will retry next interval)", s.name());
                }
            }
        }
        for s in &mut self.sinks {
            s.after_interval(reports_written);
        }
        // Only now may the backend forget how to report this interval again.
        if let Err(e) = self.backend.commit() {
            self.errors += 1;
            tracing::error!(
                "could not persist the capture position: {e} (after a crash the next agent \
                 would report this interval again, unless the history recorded it)"
            );
        }
        heap.mark("commit");
        if let Some(h) = heap.summary() {
            timings.push_str(&format!("; heap peak by phase: {h}"));
        }
        tracing::debug!("interval: {timings}");
        Ok(findings)
    }
}

/// Writes the report into a directory every interval (`portwatch-<node>.<ext>`, replaced
/// atomically) and, at shutdown, a timestamped copy that is never overwritten.
#[derive(Debug)]
pub struct ReportFiles {
    dir: PathBuf,
    formats: Vec<Format>,
}

impl ReportFiles {
    /// A sink writing `formats` into `dir`.
    pub fn new(dir: &Path, formats: &[Format]) -> Self {
        Self {
            dir: dir.to_owned(),
            formats: formats.to_vec(),
        }
    }
}

impl Sink for ReportFiles {
    fn name(&self) -> &str {
        "report files"
    }

    fn writes_reports(&self) -> bool {
        true
    }

    fn interval(
        &mut self,
        r: &IntervalReport<'_>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        use crate::report::sink::{latest_stem, timestamped_stem, write_atomic, write_report};
        let written = write_report(&self.dir, &latest_stem(r.report), r.report, &self.formats)?;
        if r.last {
            // The same bytes under a name that is never overwritten: copied, not rendered again
            // (rendering a large window twice doubled the time from SIGTERM to exit).
            let stem = timestamped_stem(r.report);
            for (f, path) in self.formats.iter().zip(&written) {
                write_atomic(&self.dir, &format!("{stem}.{}", f.extension()), |w| {
                    std::io::copy(&mut std::fs::File::open(path)?, w).map(|_| ())
                })?;
            }
        }
        Ok(())
    }
}

/// Why the loop stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT or SIGTERM.
    Signal,
    /// `--duration` elapsed.
    Duration,
}

/// Runs the agent until a signal or `duration`: a tick every `interval`, SIGHUP reloads, and a
/// final report before returning. `signals` should be installed before the backend is opened
/// (see [`Signals::install`]) so a signal that arrives while programs load is not fatal.
pub async fn run(
    agent: &mut Agent,
    interval: Duration,
    duration: Option<Duration>,
    signals: Signals,
) -> std::io::Result<Stop> {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut signals = signals;
    let stop = loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = agent.tick(false) {
                    tracing::error!("interval failed: {e}");
                }
            }
            s = signals.next() => match s {
                SignalEvent::Reload => match agent.reload() {
                    Ok(()) => tracing::info!("reloaded spec and inventory"),
                    Err(e) => tracing::error!("reload failed, keeping the spec in force: {e}"),
                },
                SignalEvent::Stop => break Stop::Signal,
            },
            _ = &mut deadline => break Stop::Duration,
        }
    };
    if let Err(e) = agent.tick(true) {
        tracing::error!("final interval failed: {e}");
    }
    Ok(stop)
}

enum SignalEvent {
    Reload,
    Stop,
}

/// SIGHUP, SIGINT and SIGTERM, caught from the moment they are installed.
#[cfg(unix)]
#[derive(Debug)]
pub struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    /// Installs the handlers; needs a tokio runtime context (`Runtime::enter`).
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
    async fn next(&mut self) -> SignalEvent {
        tokio::select! {
            _ = self.hup.recv() => SignalEvent::Reload,
            _ = self.term.recv() => SignalEvent::Stop,
            _ = self.int.recv() => SignalEvent::Stop,
        }
    }
}

/// Ctrl-C, caught from the moment it is installed.
#[cfg(not(unix))]
#[derive(Debug)]
pub struct Signals;

#[cfg(not(unix))]
impl Signals {
    /// Installs the handler (Ctrl-C is polled by the loop).
    pub fn install() -> std::io::Result<Self> {
        Ok(Self)
    }
    async fn next(&mut self) -> SignalEvent {
        let _ = tokio::signal::ctrl_c().await;
        SignalEvent::Stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::fake::FakeBackend;
    use crate::clock::FakeClock;
    use crate::flow::{Direction, Endpoint, FlowTable, PacketMeta, Transport};
    use crate::host::FakeHost;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Mutex;

    const SPEC: &str = r#"
[spec]
name = "t"
vendor = "v"
product = "p"
document = "d"

[zones]
all-nodes = "nodes"

[[entry]]
id = "dns"
service = "DNS"
ports = 53
transport = "udp"
direction = "inbound"
sources = ["all-nodes"]
destinations = ["all-nodes"]

[[entry]]
id = "ssh"
service = "SSH"
ports = 22
transport = "tcp"
direction = "inbound"
sources = ["all-nodes"]
destinations = ["all-nodes"]
"#;

    fn interval(dport: u16, n: u32, start: u64, end: u64) -> Snapshot {
        let mut t = FlowTable::new(64, start);
        for i in 0..n {
            t.ingest(&PacketMeta {
                ts: start + 1 + u64::from(i),
                transport: Transport::Udp,
                src: Endpoint {
                    addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                    port: 40000,
                },
                dst: Endpoint {
                    addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                    port: dport,
                },
                dir: Some(Direction::In),
                wire_len: 100,
                segments: 1,
                tcp_flags: 0,
            });
        }
        t.drain(end)
    }

    /// (last, packets in the window, finding kind:entry).
    type Seen = Arc<Mutex<Vec<(bool, u64, Vec<String>)>>>;

    struct Capture(Seen);

    impl Sink for Capture {
        fn name(&self) -> &str {
            "capture"
        }
        fn interval(
            &mut self,
            r: &IntervalReport<'_>,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let kinds = r
                .findings
                .findings
                .iter()
                .map(|f| {
                    format!(
                        "{}:{}",
                        f.kind.name(),
                        f.entry.as_ref().map_or("-", |e| e.id.as_str())
                    )
                })
                .collect();
            let packets = r.window.ports.iter().map(|p| p.counts.packets).sum();
            self.0.lock().unwrap().push((r.last, packets, kinds));
            Ok(())
        }
    }

    fn agent(script: Vec<Snapshot>, dir: &Path) -> (Agent, Seen) {
        let (a, seen, _) = agent_with(Box::new(FakeBackend::new(script)), dir);
        (a, seen)
    }

    fn agent_with(backend: Box<dyn Backend>, dir: &Path) -> (Agent, Seen, Arc<FakeClock>) {
        let spec_path = dir.join("spec.toml");
        std::fs::write(&spec_path, SPEC).unwrap();
        let cfg = AgentConfig::resolve(
            crate::config::Overrides {
                spec: Some(spec_path.clone()),
                ..Default::default()
            },
            Default::default(),
        )
        .unwrap();
        let loaded = Loaded::load(&spec_path, None).unwrap();
        let clock = Arc::new(FakeClock::new(1_000));
        let mut a = Agent::new(
            &cfg,
            clock.clone(),
            backend,
            Box::new(FakeHost::default()),
            loaded,
            NodeInfo {
                name: "n1".into(),
                addrs: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))],
            },
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        a.add_sink(Box::new(Capture(seen.clone())));
        (a, seen, clock)
    }

    /// Fails the collects scripted `true`; otherwise hands out empty intervals.
    struct Flaky(std::collections::VecDeque<bool>);

    impl Backend for Flaky {
        fn kind(&self) -> BackendKind {
            BackendKind::Fake
        }
        fn collect(
            &mut self,
            now: UnixNanos,
        ) -> Result<Snapshot, Box<dyn std::error::Error + Send + Sync>> {
            if self.0.pop_front() == Some(true) {
                return Err("PW_PORT_TOTALS: BPF_MAP_LOOKUP_BATCH failed".into());
            }
            Ok(Snapshot {
                start: now,
                end: now,
                ..Snapshot::default()
            })
        }
        fn interfaces(&self) -> Vec<String> {
            vec!["fake0".to_owned()]
        }
    }

    type Events = Arc<Mutex<Vec<String>>>;

    /// Logs collects and commits; its checkpoint names the interval.
    struct Journaled(Events, u32);

    impl Backend for Journaled {
        fn kind(&self) -> BackendKind {
            BackendKind::Fake
        }
        fn collect(
            &mut self,
            now: UnixNanos,
        ) -> Result<Snapshot, Box<dyn std::error::Error + Send + Sync>> {
            self.1 += 1;
            self.0.lock().unwrap().push(format!("collect {}", self.1));
            Ok(Snapshot {
                start: now,
                end: now,
                ..Snapshot::default()
            })
        }
        fn interfaces(&self) -> Vec<String> {
            Vec::new()
        }
        fn checkpoint(&self) -> Option<&[u8]> {
            Some(if self.1 % 2 == 1 { b"odd" } else { b"even" })
        }
        fn commit(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            self.0.lock().unwrap().push(format!("commit {}", self.1));
            Ok(())
        }
    }

    struct History(Events);

    impl Sink for History {
        fn name(&self) -> &str {
            "history"
        }
        fn interval(
            &mut self,
            r: &IntervalReport<'_>,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let cp = String::from_utf8_lossy(r.checkpoint.unwrap_or(b"none")).into_owned();
            self.0.lock().unwrap().push(format!("history with {cp}"));
            Err("disk full".into())
        }
    }

    #[test]
    fn the_backend_commits_only_after_the_sinks_had_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let events: Events = Arc::default();
        let (mut a, _, _) = agent_with(Box::new(Journaled(events.clone(), 0)), dir.path());
        a.add_sink(Box::new(History(events.clone())));
        a.tick(false).unwrap();
        a.tick(true).unwrap();
        assert_eq!(
            *events.lock().unwrap(),
            [
                "collect 1",
                "history with odd",
                "commit 1",
                "collect 2",
                "history with even",
                "commit 2"
            ],
            "a failing sink does not hold the backend back (the history keeps the interval)"
        );
        assert_eq!(a.errors, 2);
    }

    /// The value of the first sample of `family` in an exposition, if any.
    fn metric(text: &str, family: &str) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.starts_with(&format!("{family}{{")))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse().ok())
    }

    #[test]
    fn window_accumulates_and_entries_become_used() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, seen) = agent(
            vec![interval(53, 3, 0, 10), interval(5353, 2, 10, 20)],
            dir.path(),
        );
        a.tick(false).unwrap();
        a.tick(true).unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        // Each port's packets are counted on the local and the remote side.
        assert_eq!(seen[0].1, 6);
        assert_eq!(seen[1].1, 10, "the window holds both intervals");
        assert!(seen[1].0, "the last tick is marked last");
        let kinds = &seen[1].2;
        assert!(kinds.iter().any(|k| k == "documented:dns"), "{kinds:?}");
        assert!(kinds.iter().any(|k| k == "unused:ssh"), "{kinds:?}");
        assert!(
            kinds.iter().any(|k| k.starts_with("undocumented")),
            "{kinds:?}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_read_only_report_directory_is_retried_and_counting_goes_on() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o500)).unwrap();
        let probe = out.join("probe");
        if std::fs::write(&probe, b"x").is_ok() {
            // Root ignores directory permissions; a file in the way of the directory works for
            // everyone.
            std::fs::remove_file(&probe).unwrap();
            std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::fs::remove_dir(&out).unwrap();
            std::fs::write(&out, b"not a directory").unwrap();
        }
        let (mut a, seen) = agent(
            vec![interval(53, 2, 0, 10), interval(53, 3, 10, 20)],
            dir.path(),
        );
        a.add_sink(Box::new(ReportFiles::new(&out, &[Format::Json])));
        a.tick(false).unwrap();
        assert_eq!(a.errors, 1, "the failed write is counted");
        // The directory becomes writable again: the next interval's report has everything.
        if out.is_file() {
            std::fs::remove_file(&out).unwrap();
        } else {
            std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        a.tick(false).unwrap();
        assert_eq!(a.errors, 1);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("portwatch-n1.json")).unwrap()).unwrap();
        assert_eq!(json["node"]["name"], "n1");
        assert_eq!(seen.lock().unwrap()[1].1, 10, "both intervals were counted");
    }

    #[test]
    fn metrics_count_lost_intervals_and_when_reports_were_last_written() {
        use crate::metrics::{Metrics, MetricsSink};
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let backend = Flaky([true, false, false].into());
        let (mut a, _, clock) = agent_with(Box::new(backend), dir.path());
        let m = Arc::new(Metrics::new());
        a.add_sink(Box::new(ReportFiles::new(&out, &[Format::Json])));
        a.add_sink(Box::new(MetricsSink::new(m.clone())));

        // The backend fails: the interval is counted as lost, no report was written.
        clock.set(5_000_000_000);
        assert!(a.tick(false).is_err());
        let text = m.render();
        assert_eq!(metric(&text, "portwatch_interval_errors_total"), Some(1.0));
        assert_eq!(metric(&text, "portwatch_intervals_total"), Some(0.0));
        assert_eq!(
            metric(&text, "portwatch_last_report_timestamp_seconds"),
            None
        );

        // A good interval: reports written at its end.
        clock.set(10_000_000_000);
        a.tick(false).unwrap();
        let text = m.render();
        assert_eq!(metric(&text, "portwatch_interval_errors_total"), Some(1.0));
        assert_eq!(
            metric(&text, "portwatch_last_report_timestamp_seconds"),
            Some(10.0)
        );

        // The report directory becomes a file: the interval is classified and counted, but
        // the last report time stays where it was.
        std::fs::remove_dir_all(&out).unwrap();
        std::fs::write(&out, b"in the way").unwrap();
        clock.set(20_000_000_000);
        a.tick(false).unwrap();
        let text = m.render();
        assert_eq!(metric(&text, "portwatch_intervals_total"), Some(2.0));
        assert_eq!(
            metric(&text, "portwatch_last_interval_timestamp_seconds"),
            Some(20.0)
        );
        assert_eq!(
            metric(&text, "portwatch_last_report_timestamp_seconds"),
            Some(10.0)
        );
    }

    #[test]
    fn a_bad_spec_on_reload_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, _) = agent(vec![], dir.path());
        std::fs::write(dir.path().join("spec.toml"), "[[entry]\nid = ").unwrap();
        let err = a.reload().unwrap_err();
        assert!(err.to_string().contains("spec.toml"), "{err}");
        assert_eq!(a.loaded().spec.entries.len(), 2);
    }

    #[test]
    fn report_files_are_written_every_interval_and_stamped_at_exit() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let (mut a, _) = agent(vec![interval(53, 1, 0, 10)], dir.path());
        a.add_sink(Box::new(ReportFiles::new(
            &out,
            &[Format::Json, Format::Text],
        )));
        a.tick(false).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["portwatch-n1.json", "portwatch-n1.txt"]);
        a.tick(true).unwrap();
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 4);
        for ext in ["json", "txt"] {
            let latest = std::fs::read(out.join(format!("portwatch-n1.{ext}"))).unwrap();
            let stamped: Vec<_> = std::fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    name.starts_with("portwatch-n1-") && name.ends_with(ext)
                })
                .collect();
            assert_eq!(stamped.len(), 1, "{stamped:?}");
            assert_eq!(std::fs::read(&stamped[0]).unwrap(), latest, "{ext}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(out.join("portwatch-n1.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o007, 0, "reports are not world-readable: {mode:o}");
        }
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("portwatch-n1.json")).unwrap()).unwrap();
        assert_eq!(json["node"]["name"], "n1");
    }
}
