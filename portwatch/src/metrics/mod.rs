//! Prometheus metrics: counters of classified traffic per verdict, spec entry, transport, port
//! and role (label sets capped, overflow counted), the latest window's verdicts per entry, and
//! the agent's health; rendered in the text exposition format and served on loopback by
//! [`serve`]. It never classifies and never reads the clock: observations arrive ready-made.
mod server;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use server::{MetricsError, MetricsServer, serve};

use crate::agent::{IntervalReport, Sink};
use crate::capture::BackendKind;
use crate::classify::{Finding, FindingKind, Findings};
use crate::clock::UnixNanos;
use crate::flow::{Health, Snapshot};

/// Default cap on distinct label sets per metric family.
pub const DEFAULT_MAX_SERIES: usize = 2000;

/// Upper bounds (seconds) of the interval duration histogram.
const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The label value that collects traffic past the series cap.
pub const OVERFLOW: &str = "_overflow";

/// One interval, as the agent hands it to the metrics.
#[derive(Clone, Copy, Debug)]
pub struct IntervalObservation<'a> {
    pub node: &'a str,
    pub backend: BackendKind,
    /// This interval's observations (health counters are added as deltas).
    pub interval: &'a Snapshot,
    /// The findings of classifying this interval alone (traffic counters are added).
    pub interval_findings: &'a [Finding],
    /// The latest classification of the whole window (gauges are replaced).
    pub window: &'a Findings,
    pub window_start: UnixNanos,
    /// How long collecting and classifying the interval took.
    pub took: Duration,
    /// The interval's end.
    pub now: UnixNanos,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct TrafficKey {
    verdict: &'static str,
    entry: String,
    transport: String,
    port: String,
    role: &'static str,
}

#[derive(Clone, Copy, Debug, Default)]
struct TrafficCounts {
    flows: u64,
    packets: u64,
    bytes: u64,
}

#[derive(Clone, Debug, Default)]
struct EntryState {
    service: String,
    /// Latest traffic that counts as use, within the window.
    last_use: Option<UnixNanos>,
    unused: bool,
}

#[derive(Clone, Debug, Default)]
struct Histogram {
    counts: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (i, b) in DURATION_BUCKETS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }
}

#[derive(Debug, Default)]
struct State {
    node: String,
    backend: Option<BackendKind>,
    traffic: BTreeMap<TrafficKey, TrafficCounts>,
    traffic_capped: u64,
    health: Health,
    intervals: u64,
    interval_errors: u64,
    durations: Histogram,
    last_interval: Option<UnixNanos>,
    last_report: Option<UnixNanos>,
    window_start: Option<UnixNanos>,
    kinds: BTreeMap<String, u64>,
    entries: BTreeMap<String, EntryState>,
    entries_capped: u64,
    entry_summary: [(&'static str, u64); 4],
    flows_approximate: bool,
}

/// The agent's metrics. Cheap to share (`Arc<Metrics>`); every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    state: Mutex<State>,
    max_series: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Metrics with the default series cap.
    pub fn new() -> Self {
        Self::with_max_series(DEFAULT_MAX_SERIES)
    }

    /// Metrics keeping at most `max_series` label sets per family (traffic, entries).
    pub fn with_max_series(max_series: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            max_series,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counters half-updated in a way that
        // matters more than losing the metrics: keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one interval: traffic counters, health deltas, duration; replaces the window gauges.
    pub fn observe_interval(&self, o: &IntervalObservation<'_>) {
        let mut s = self.lock();
        s.node = o.node.to_owned();
        s.backend = Some(o.backend);
        s.intervals += 1;
        s.health.add(&o.interval.health);
        s.durations.observe(o.took.as_secs_f64());
        s.last_interval = Some(o.now);
        for f in o.interval_findings {
            let t = &f.traffic;
            // An outbound process mismatch's flows are documented traffic too, counted there:
            // counting them again would make the verdicts' sum exceed the traffic. The finding
            // itself shows in `portwatch_findings{kind="process_mismatch"}`.
            if (t.flows == 0 && t.packets() == 0)
                || matches!(f.kind, crate::classify::FindingKind::ProcessMismatch { .. })
            {
                continue;
            }
            let key = TrafficKey {
                verdict: f.kind.name(),
                entry: f.entry.as_ref().map(|e| e.id.clone()).unwrap_or_default(),
                transport: f.transport.map(|t| t.to_string()).unwrap_or_default(),
                port: f.port.map(|p| p.to_string()).unwrap_or_default(),
                role: f.role.map_or("", |r| match r {
                    crate::classify::Role::Server => "server",
                    crate::classify::Role::Client => "client",
                }),
            };
            let key = if s.traffic.contains_key(&key) || s.traffic.len() < self.max_series {
                key
            } else {
                s.traffic_capped += 1;
                TrafficKey {
                    verdict: key.verdict,
                    entry: OVERFLOW.to_owned(),
                    transport: String::new(),
                    port: String::new(),
                    role: "",
                }
            };
            let c = s.traffic.entry(key).or_default();
            c.flows = c.flows.saturating_add(t.flows);
            c.packets = c.packets.saturating_add(t.packets());
            c.bytes = c.bytes.saturating_add(t.bytes());
        }
        self.set_window(&mut s, o.window, o.window_start);
    }

    fn set_window(&self, s: &mut State, w: &Findings, start: UnixNanos) {
        s.window_start = Some(start);
        s.kinds = w.summary.kinds.clone();
        let e = &w.summary.entries;
        s.entry_summary = [
            ("used", e.used),
            ("unused", e.unused),
            ("usage_unknown", e.usage_unknown),
            ("not_observable", e.not_observable),
        ];
        s.flows_approximate = w.summary.flows_approximate;
        let mut entries: BTreeMap<String, EntryState> = BTreeMap::new();
        let mut capped = 0u64;
        for f in &w.findings {
            let Some(r) = &f.entry else { continue };
            let used = matches!(
                f.kind,
                FindingKind::Documented | FindingKind::PeerOutsideZone { .. }
            );
            let unused = matches!(f.kind, FindingKind::Unused { .. });
            if !used && !unused {
                continue;
            }
            if !entries.contains_key(&r.id) && entries.len() >= self.max_series {
                capped += 1;
                continue;
            }
            let st = entries.entry(r.id.clone()).or_default();
            st.service = r.service.clone();
            if used && f.traffic.last_seen > 0 {
                st.last_use = Some(st.last_use.unwrap_or(0).max(f.traffic.last_seen));
            }
            st.unused |= unused;
        }
        s.entries = entries;
        s.entries_capped = capped;
    }

    /// Counts an interval that failed before classification (the backend could not deliver).
    pub fn interval_failed(&self) {
        self.lock().interval_errors += 1;
    }

    /// Records that report files were written at `at`.
    pub fn report_written(&self, at: UnixNanos) {
        self.lock().last_report = Some(at);
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let s = self.lock();
        let mut out = String::with_capacity(4096 + s.traffic.len() * 400);
        let node = s.node.as_str();
        let w = &mut out;

        family(
            w,
            "portwatch_build_info",
            "gauge",
            "The portwatch version (value 1).",
        );
        sample(
            w,
            "portwatch_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1,
        );
        family(
            w,
            "portwatch_backend_info",
            "gauge",
            "The capture backend in use on the node (value 1).",
        );
        if let Some(b) = s.backend {
            sample(
                w,
                "portwatch_backend_info",
                &[("node", node), ("backend", &b.to_string())],
                1,
            );
        }

        for (name, help, pick) in TRAFFIC {
            family(w, name, "counter", help);
            for (k, c) in &s.traffic {
                sample(
                    w,
                    name,
                    &[
                        ("node", node),
                        ("verdict", k.verdict),
                        ("entry", &k.entry),
                        ("transport", &k.transport),
                        ("port", &k.port),
                        ("role", k.role),
                    ],
                    pick(c),
                );
            }
        }

        family(
            w,
            "portwatch_intervals_total",
            "counter",
            "Intervals collected and classified.",
        );
        sample(
            w,
            "portwatch_intervals_total",
            &[("node", node)],
            s.intervals,
        );
        family(
            w,
            "portwatch_interval_errors_total",
            "counter",
            "Intervals lost because the backend could not deliver them (e.g. map read errors).",
        );
        sample(
            w,
            "portwatch_interval_errors_total",
            &[("node", node)],
            s.interval_errors,
        );
        let h = &s.health;
        for (name, help, v) in [
            (
                "portwatch_packets_seen_total",
                "Packets the capture backend saw.",
                h.packets_seen,
            ),
            (
                "portwatch_flow_table_full_total",
                "Flows not recorded because the flow table was full (per-port totals stay exact).",
                h.flow_table_full,
            ),
            (
                "portwatch_flow_update_errors_total",
                "Kernel flow map update failures other than a full table (map errors).",
                h.flow_update_errors,
            ),
            (
                "portwatch_port_table_full_total",
                "Per-port total keys that could not be inserted (the totals map was full).",
                h.port_table_full,
            ),
            (
                "portwatch_malformed_packets_total",
                "Frames that could not be parsed.",
                h.malformed,
            ),
            (
                "portwatch_truncated_packets_total",
                "Frames shorter than their headers claim.",
                h.truncated,
            ),
            (
                "portwatch_non_ip_packets_total",
                "Frames that were not IP (counted, not classified).",
                h.non_ip,
            ),
            (
                "portwatch_capture_drops_total",
                "Packets the capture layer dropped (libpcap).",
                h.capture_drops,
            ),
        ] {
            family(w, name, "counter", help);
            sample(w, name, &[("node", node)], v);
        }
        family(
            w,
            "portwatch_metrics_capped_total",
            "counter",
            "Traffic observations folded into the overflow series (entry=\"_overflow\") because the family reached its label-set cap.",
        );
        sample(
            w,
            "portwatch_metrics_capped_total",
            &[("node", node), ("family", "traffic")],
            s.traffic_capped,
        );
        family(
            w,
            "portwatch_entries_capped",
            "gauge",
            "Spec entries left out of the entry gauges of the latest window because of the label-set cap.",
        );
        sample(
            w,
            "portwatch_entries_capped",
            &[("node", node)],
            s.entries_capped,
        );

        let name = "portwatch_interval_duration_seconds";
        family(
            w,
            name,
            "histogram",
            "Time to collect and classify one interval.",
        );
        let hist = &s.durations;
        for (i, b) in DURATION_BUCKETS.iter().enumerate() {
            let le = format_f64(*b);
            sample(
                w,
                &format!("{name}_bucket"),
                &[("node", node), ("le", &le)],
                hist.counts[i],
            );
        }
        sample(
            w,
            &format!("{name}_bucket"),
            &[("node", node), ("le", "+Inf")],
            hist.count,
        );
        sample_f(w, &format!("{name}_sum"), &[("node", node)], hist.sum);
        sample(w, &format!("{name}_count"), &[("node", node)], hist.count);

        for (name, help, v) in [
            (
                "portwatch_last_interval_timestamp_seconds",
                "End of the last interval collected and classified (Unix seconds).",
                s.last_interval,
            ),
            (
                "portwatch_last_report_timestamp_seconds",
                "When report files were last written (Unix seconds).",
                s.last_report,
            ),
            (
                "portwatch_window_start_timestamp_seconds",
                "Start of the observation window the entry verdicts cover (Unix seconds).",
                s.window_start,
            ),
        ] {
            family(w, name, "gauge", help);
            if let Some(t) = v {
                sample_f(w, name, &[("node", node)], seconds(t));
            }
        }

        family(
            w,
            "portwatch_findings",
            "gauge",
            "Findings of each kind in the latest window report.",
        );
        for (k, n) in &s.kinds {
            sample(w, "portwatch_findings", &[("node", node), ("kind", k)], *n);
        }
        family(
            w,
            "portwatch_entries",
            "gauge",
            "Spec entries by state in the latest window report.",
        );
        if s.window_start.is_some() {
            for (state, n) in s.entry_summary {
                sample(
                    w,
                    "portwatch_entries",
                    &[("node", node), ("state", state)],
                    n,
                );
            }
        }
        family(
            w,
            "portwatch_flows_approximate",
            "gauge",
            "1 when flow detail of the window is incomplete (flow counts are lower bounds).",
        );
        if s.window_start.is_some() {
            sample(
                w,
                "portwatch_flows_approximate",
                &[("node", node)],
                u64::from(s.flows_approximate),
            );
        }

        family(
            w,
            "portwatch_entry_unused",
            "gauge",
            "1 when the spec entry had no traffic in the window, 0 when it was used.",
        );
        for (id, e) in &s.entries {
            sample(
                w,
                "portwatch_entry_unused",
                &[("node", node), ("entry", id), ("service", &e.service)],
                u64::from(e.unused && e.last_use.is_none()),
            );
        }
        family(
            w,
            "portwatch_entry_last_seen_timestamp_seconds",
            "gauge",
            "Last traffic that used the spec entry, within the window (Unix seconds).",
        );
        for (id, e) in &s.entries {
            if let Some(t) = e.last_use {
                sample_f(
                    w,
                    "portwatch_entry_last_seen_timestamp_seconds",
                    &[("node", node), ("entry", id), ("service", &e.service)],
                    seconds(t),
                );
            }
        }
        family(
            w,
            "portwatch_entry_quiet_since_timestamp_seconds",
            "gauge",
            "Since when the spec entry has had no traffic on the node: its last use, or the window start when it was not used in the window (Unix seconds).",
        );
        let start = s.window_start.unwrap_or(0);
        for (id, e) in &s.entries {
            sample_f(
                w,
                "portwatch_entry_quiet_since_timestamp_seconds",
                &[("node", node), ("entry", id), ("service", &e.service)],
                seconds(e.last_use.unwrap_or(start)),
            );
        }
        out
    }
}

type Pick = fn(&TrafficCounts) -> u64;

const TRAFFIC: [(&str, &str, Pick); 3] = [
    (
        "portwatch_traffic_packets_total",
        "Packets (both directions) of classified traffic by verdict, spec entry, transport, service port and the node's role.",
        |c| c.packets,
    ),
    (
        "portwatch_traffic_bytes_total",
        "Bytes (both directions) of classified traffic by verdict, spec entry, transport, service port and the node's role.",
        |c| c.bytes,
    ),
    (
        "portwatch_traffic_flows_total",
        "Flows of classified traffic per interval (a flow spanning intervals counts in each) by verdict, spec entry, transport, service port and the node's role.",
        |c| c.flows,
    ),
];

fn seconds(ns: UnixNanos) -> f64 {
    ns as f64 / 1e9
}

fn format_f64(v: f64) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

fn family(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(w, "# TYPE {name} {kind}");
}

fn labels(w: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    w.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            w.push(',');
        }
        w.push_str(k);
        w.push_str("=\"");
        escape_label(w, v);
        w.push('"');
    }
    w.push('}');
}

fn sample(w: &mut String, name: &str, l: &[(&str, &str)], v: u64) {
    w.push_str(name);
    labels(w, l);
    let _ = writeln!(w, " {v}");
}

fn sample_f(w: &mut String, name: &str, l: &[(&str, &str)], v: f64) {
    w.push_str(name);
    labels(w, l);
    let _ = writeln!(w, " {}", format_f64(v));
}

/// Label values escape backslash, double quote and newline.
fn escape_label(w: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => w.push_str("\\\\"),
            '"' => w.push_str("\\\""),
            '\n' => w.push_str("\\n"),
            c => w.push(c),
        }
    }
}

/// Help text escapes backslash and newline.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The agent sink that feeds [`Metrics`] every interval.
#[derive(Debug, Clone)]
pub struct MetricsSink {
    metrics: Arc<Metrics>,
}

impl MetricsSink {
    /// A sink feeding `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl Sink for MetricsSink {
    fn name(&self) -> &str {
        "metrics"
    }

    fn interval(
        &mut self,
        r: &IntervalReport<'_>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.metrics.observe_interval(&IntervalObservation {
            node: &r.node.name,
            backend: r.backend,
            interval: r.interval,
            interval_findings: &r.interval_findings.findings,
            window: r.findings,
            window_start: r.window.start,
            took: r.took,
            now: r.now,
        });
        Ok(())
    }

    fn after_interval(&mut self, reports_written: Option<UnixNanos>) {
        if let Some(at) = reports_written {
            self.metrics.report_written(at);
        }
    }

    fn interval_failed(&mut self, _error: &(dyn std::error::Error + Send + Sync)) {
        self.metrics.interval_failed();
    }
}

#[cfg(test)]
mod tests;
