//! The scenario from start to finish, shared by the privileged test and `cargo xtask demo`:
//! network, captures, daemons, traffic, quiescence, oracle counts, teardown. It returns what
//! happened; the callers decide what to assert or print.
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::daemons::{self, Transport};
use super::error::{ClusterError, Result, io_err};
use super::lab::{Host, Lab, signal};
use super::oracle::{self, CaptureStats, Counts, PortKey};
use super::traffic::{self, Workload};

/// Every port the scenario's services use: the oracle counts each, both sides and directions,
/// on every node.
pub const PORTS: &[(Transport, u16)] = &[
    (Transport::Tcp, 22),
    (Transport::Tcp, 80),
    (Transport::Tcp, 443),
    (Transport::Tcp, 2181),
    (Transport::Tcp, 2888),
    (Transport::Tcp, 3888),
    (Transport::Tcp, 4369),
    (Transport::Tcp, 5432),
    (Transport::Tcp, 5672),
    (Transport::Tcp, 6379),
    (Transport::Tcp, 11211),
    (Transport::Tcp, 15672),
    (Transport::Tcp, 25672),
    (Transport::Udp, 11211),
];

/// Tools the scenario needs besides the daemons'.
pub const TOOLS: &[&str] = &[
    "ip",
    "nsenter",
    "timeout",
    "tcpdump",
    "tshark",
    "psql",
    "curl",
    "/usr/bin/python3",
    "ssh-keyscan",
    "redis-cli",
];

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Copy the captures here (the demo keeps them next to the reports).
    pub keep_pcaps: Option<PathBuf>,
    /// Run `portwatch analyze` on each node's capture (offline classification and per-port
    /// totals), writing the JSON reports here when set.
    pub analyze: bool,
    /// Run a portwatch agent (`portwatch run`, eBPF backend) on every node from before the
    /// daemons start until after the traffic.
    pub agents: bool,
    pub reports_dir: Option<PathBuf>,
}

/// What the agents reported.
#[derive(Debug)]
pub struct AgentRun {
    /// Per node: the JSON report written at SIGTERM.
    pub reports: BTreeMap<Host, serde_json::Value>,
    /// `portwatch merge` of them.
    pub cluster: serde_json::Value,
    /// Where the agents wrote (one directory per node) and the merged reports are.
    pub dir: PathBuf,
}

/// portwatch's offline view of the captures.
#[derive(Debug, Default)]
pub struct Analysis {
    /// Per node: the JSON report of `portwatch analyze`.
    pub reports: BTreeMap<Host, serde_json::Value>,
    /// Per node: portwatch's per-port totals (packets, bytes) of the same capture.
    pub totals: BTreeMap<Host, BTreeMap<PortKey, (u64, u64)>>,
    /// `portwatch merge` of the three node reports.
    pub cluster: serde_json::Value,
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    pub id: String,
    pub ready_after: Vec<(String, Host, Duration)>,
    pub zk_leader: Host,
    pub workload: Workload,
    /// Per node: tshark's counts for every key of [`PORTS`].
    pub oracle: BTreeMap<Host, BTreeMap<PortKey, Counts>>,
    pub captures: BTreeMap<Host, CaptureStats>,
    /// `portwatch analyze` of the captures, when asked for.
    pub analysis: Option<Analysis>,
    /// The agents' reports, when asked for.
    pub agents: Option<AgentRun>,
    /// Whether the network went idle after the daemons were frozen.
    pub quiet: bool,
    /// Named phases and how long each took.
    pub phases: Vec<(&'static str, Duration)>,
    /// What teardown could not remove (empty when clean).
    pub leftovers: Vec<String>,
}

struct Phases {
    t: Instant,
    list: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn mark(&mut self, name: &'static str) {
        let d = self.t.elapsed();
        eprintln!("cluster: {name}: {:.1} s", d.as_secs_f64());
        self.list.push((name, d));
        self.t = Instant::now();
    }
}

/// Runs the scenario. Everything it made is removed before it returns, also on error.
pub fn run(opts: &Options) -> Result<Outcome> {
    super::lab::require_tools(TOOLS)?;
    let mut ph = Phases {
        t: Instant::now(),
        list: Vec::new(),
    };
    // Build portwatch first: a compile error should not cost a cluster start.
    let bin = if opts.analyze || opts.agents {
        let b = super::portwatch::binary()?;
        ph.mark("portwatch built");
        Some(b)
    } else {
        None
    };
    let mut lab = Lab::new()?;
    let id = lab.id().to_owned();
    ph.mark("network");

    // Captures first: every packet the daemons and clients exchange is on the record.
    let mut caps = Vec::new();
    for h in Host::NODES {
        caps.push(oracle::start_capture(&lab, h)?);
    }
    ph.mark("captures listening");

    let reports_dir = match &opts.reports_dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(io_err("creating", d))?;
            d.clone()
        }
        None => lab.subdir("reports")?,
    };
    let agents = match (&bin, opts.agents) {
        (Some(bin), true) => {
            let a = super::agents::start(&mut lab, bin, &reports_dir.join("agents"))?;
            ph.mark("agents attached");
            a
        }
        _ => Vec::new(),
    };

    let d = daemons::start(&mut lab)?;
    for (name, h, t) in &d.ready_after {
        eprintln!(
            "cluster:   {name} on {h} ready after {:.1} s",
            t.as_secs_f64()
        );
    }
    ph.mark("daemons ready");

    let workload = traffic::run(&lab, &d)?;
    ph.mark("traffic");

    // Freeze every daemon and client left (not the captures): no heartbeat or tick can add
    // packets between the moment one observer stops and another does.
    let keep: BTreeSet<u32> = caps
        .iter()
        .map(|c| c.pid())
        .chain(agents.iter().map(|a| a.proc.pid))
        .collect();
    freeze(&lab, &keep)?;
    let quiet = oracle::wait_quiet(&caps, Duration::from_millis(700), Duration::from_secs(10))?;
    ph.mark("quiesced");

    // The agents stop first (their final report, taken while the frozen daemons still hold
    // their sockets), then the captures: the captures cover everything the agents saw.
    let agent_reports = if agents.is_empty() {
        None
    } else {
        let r = super::agents::stop(&lab, &agents)?;
        ph.mark("agents stopped (SIGTERM)");
        Some(r)
    };

    let mut captures = BTreeMap::new();
    for c in &caps {
        let stats = oracle::stop_capture(&lab, c)?;
        if stats.dropped_by_kernel > 0 {
            return Err(ClusterError::CaptureLoss {
                host: c.host,
                detail: format!("{} packets dropped by kernel", stats.dropped_by_kernel),
            });
        }
        captures.insert(c.host, stats);
    }
    ph.mark("captures stopped");

    let ports: BTreeSet<(Transport, u16)> = PORTS.iter().copied().collect();
    // One tshark per node, in parallel.
    let per_node: Vec<Result<_>> = std::thread::scope(|s| {
        let hs: Vec<_> = caps
            .iter()
            .map(|c| s.spawn(|| oracle::port_counts(&c.pcap, c.host, &ports)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut counts = BTreeMap::new();
    for (c, r) in caps.iter().zip(per_node) {
        counts.insert(c.host, r?);
    }
    if let Some(dest) = &opts.keep_pcaps {
        std::fs::create_dir_all(dest).map_err(io_err("creating", dest))?;
        for c in &caps {
            let to = dest.join(format!("{}.pcap", c.host.name()));
            std::fs::copy(&c.pcap, &to).map_err(io_err("copying capture to", &to))?;
        }
    }
    ph.mark("oracle (tshark)");

    let analysis = match &bin {
        Some(bin) => {
            let mut a = Analysis::default();
            let dir = reports_dir.join("analyze");
            std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
            let mut files = Vec::new();
            for c in &caps {
                let report = super::portwatch::analyze(bin, c.host, &c.pcap)?;
                let f = dir.join(format!("{}.json", c.host.name()));
                let text = serde_json::to_string_pretty(&report).unwrap_or_default();
                std::fs::write(&f, text).map_err(io_err("writing", &f))?;
                files.push(f);
                a.reports.insert(c.host, report);
                a.totals.insert(
                    c.host,
                    super::portwatch::observed_port_totals(bin, c.host, &c.pcap)?,
                );
            }
            a.cluster = super::portwatch::merge(bin, &files)?;
            let f = dir.join("cluster.json");
            let text = serde_json::to_string_pretty(&a.cluster).unwrap_or_default();
            std::fs::write(&f, text).map_err(io_err("writing", &f))?;
            ph.mark("portwatch analyze and merge");
            Some(a)
        }
        None => None,
    };
    let agents = match (&bin, agent_reports) {
        (Some(bin), Some(reports)) if opts.agents => {
            let dir = reports_dir.join("agents");
            let files: Vec<PathBuf> = Host::NODES
                .iter()
                .map(|h| {
                    dir.join(h.name())
                        .join(format!("portwatch-{}.json", h.name()))
                })
                .collect();
            let cluster = super::portwatch::merge(bin, &files)?;
            let f = dir.join("cluster.json");
            let text = serde_json::to_string_pretty(&cluster).unwrap_or_default();
            std::fs::write(&f, text).map_err(io_err("writing", &f))?;
            ph.mark("agents' reports merged");
            Some(AgentRun {
                reports,
                cluster,
                dir,
            })
        }
        _ => None,
    };

    let leftovers = lab.close();
    ph.mark("teardown");
    Ok(Outcome {
        id,
        ready_after: d.ready_after,
        zk_leader: d.zk_leader,
        workload,
        oracle: counts,
        captures,
        analysis,
        agents,
        quiet,
        phases: ph.list,
        leftovers,
    })
}

/// SIGSTOPs every process in the host namespaces except `keep`, and waits until all are stopped.
fn freeze(lab: &Lab, keep: &BTreeSet<u32>) -> Result<()> {
    let mut stopped = Vec::new();
    for h in Host::ALL {
        for pid in lab.pids(h) {
            if !keep.contains(&pid) {
                signal(pid, libc::SIGSTOP);
                stopped.push(pid);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let running: Vec<u32> = stopped
            .iter()
            .copied()
            .filter(|&p| state(p).is_some_and(|s| s != 'T' && s != 't' && s != 'Z'))
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::UnexpectedOutput {
                command: "SIGSTOP to the daemons".into(),
                expected: "every process stopped".into(),
                output: format!("still running: {running:?}"),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}
