//! `portwatch run`: the agent. Resolves flags and the config file, opens the capture backend
//! (eBPF, else libpcap when `--backend auto`), and runs the periodic loop until a signal.
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::agent::{self, Agent, Loaded};
use crate::capture::Backend;
use crate::classify::NodeInfo;
use crate::clock::SystemClock;
use crate::config::{AgentConfig, BackendChoice, ConfigFile, Overrides};

/// Watch this node's traffic and report it against a port spec every interval.
///
/// Reports go to --out DIR (one file per format, replaced atomically every interval and at
/// exit). SIGHUP reloads the spec and inventory (a bad file keeps the old one); SIGINT or
/// SIGTERM writes a final report and detaches cleanly.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  portwatch run --spec specs/thoughtspot.toml --out /var/lib/portwatch/reports\n  portwatch run --config /etc/portwatch/portwatch.toml -v\n  portwatch run --spec s.toml --iface eth0 --iface lo --interval 10s --duration 1m --out out"
)]
pub struct RunArgs {
    /// Port spec (TOML) to hold the traffic against.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Inventory binding the spec's zones to this site's addresses.
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// Config file whose keys mirror these flags (flags win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Capture backend.
    #[arg(long, value_enum)]
    pub backend: Option<BackendChoice>,
    /// Interface to watch (repeatable; default: every interface that is up, except lo).
    #[arg(long = "iface", short = 'i', value_name = "NAME")]
    pub iface: Vec<String>,
    /// Report interval, e.g. 30s, 5m (default 60s).
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,
    /// Stop after this long (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,
    /// Directory for the reports.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Report formats to write (repeatable: json, text, markdown, html; default json and text).
    #[arg(long, value_name = "FORMAT")]
    pub format: Vec<String>,
    /// Capacity of the flow-detail table (flows past it are counted, totals stay exact).
    #[arg(long, value_name = "N")]
    pub flow_capacity: Option<u32>,
    /// eBPF: flow-cache slots per bank and CPU (rounded up to a power of two, 1 to 16,777,216;
    /// two banks of 104 bytes per slot and CPU). Default: sized for the possible CPUs within
    /// 32 MiB (16,384 on up to 8 CPUs, 2,048 on 64, at least 1,024); the log says which.
    /// The cache and the flow map together can drain more than flow-capacity flows in an
    /// interval; the agent keeps the flow-capacity seen first and counts the rest as dropped.
    #[arg(long, value_name = "N")]
    pub flow_cache_slots: Option<u32>,
    /// bpffs directory for the pinned maps (eBPF backend).
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (default 127.0.0.1:9187, loopback only).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Do not serve metrics even if the config file asks for it.
    #[arg(long)]
    pub no_metrics: bool,
    /// SQLite history database.
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// How long the history keeps intervals (e.g. 90d).
    #[arg(long, value_name = "DURATION")]
    pub retention: Option<String>,
    /// Node name in reports (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
}

impl RunArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            spec: self.spec.clone(),
            inventory: self.inventory.clone(),
            backend: self.backend,
            iface: self.iface.clone(),
            interval: self.interval.clone(),
            out: self.out.clone(),
            format: self.format.clone(),
            flow_capacity: self.flow_capacity,
            flow_cache_slots: self.flow_cache_slots,
            pin_dir: self.pin_dir.clone(),
            metrics: self.metrics.clone(),
            no_metrics: self.no_metrics,
            history: self.history.clone(),
            retention: self.retention.clone(),
            node: self.node.clone(),
            proc_root: None,
            duration: self.duration.clone(),
        }
    }
}

/// Gives allocations of 256 KiB and more mappings of their own, returned to the system when
/// freed. The agent's large allocations are per interval (the drained flows, the per-port
/// deltas, the window's merge, classification's groups: a few MB each under a flood of
/// distinct flows); glibc otherwise raises its mmap threshold after the first such free and
/// serves them from the main heap, where they fragment, so the resident size stays at its peak
/// between intervals and the peak itself grows by the fragments (figures in docs/benchmarks.md,
/// "Agent overhead").
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn large_allocations_in_own_mappings() {
    // SAFETY: mallopt only sets an allocator parameter; it is called before any other thread
    // exists.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024) };
    if ok != 1 {
        tracing::debug!("mallopt(M_MMAP_THRESHOLD) was refused; keeping glibc's default");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn large_allocations_in_own_mappings() {}

/// Runs `portwatch run`.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    large_allocations_in_own_mappings();
    let file = match &args.config {
        Some(p) => ConfigFile::load(p)?,
        None => ConfigFile::default(),
    };
    let cfg = AgentConfig::resolve(args.overrides(), file)?;
    let loaded = Loaded::load(&cfg.spec, cfg.inventory.as_deref())?;
    check_ifaces(&cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Catch SIGHUP/SIGTERM before loading programs: a signal during start-up must not kill the
    // agent halfway through attaching.
    let signals = {
        let _rt = rt.enter();
        agent::Signals::install().context("installing signal handlers")?
    };
    // The history first: its checkpoint tells the eBPF backend which interval it recorded last.
    let store = cfg
        .history
        .as_ref()
        .map(crate::store::Store::open)
        .transpose()?;
    let resume = match &store {
        Some(st) => st.checkpoint(crate::capture::BackendKind::Ebpf)?,
        None => None,
    };
    let backend = open_backend(&cfg, resume)?;
    tracing::info!(
        "capturing with {} on {}",
        backend.kind(),
        backend.interfaces().join(", ")
    );
    let host = crate::host::system();
    let node = NodeInfo {
        name: cfg
            .node
            .clone()
            .or_else(|| host.hostname())
            .unwrap_or_else(|| "node".to_owned()),
        addrs: crate::netif::local_addrs(),
    };
    let mut agent = Agent::new(&cfg, Arc::new(SystemClock), backend, host, loaded, node);
    if let Some(dir) = &cfg.out {
        let formats = cfg
            .formats
            .iter()
            .map(|f| {
                f.parse::<crate::report::Format>()
                    .map_err(anyhow::Error::msg)
            })
            .collect::<Result<Vec<_>>>()?;
        agent.add_sink(Box::new(agent::ReportFiles::new(dir, &formats)));
    }
    if let (Some(db), Some(store)) = (&cfg.history, store) {
        use crate::clock::Clock;
        let since = SystemClock
            .now()
            .saturating_sub(cfg.retention.as_nanos() as u64);
        let stored = store.window(since, cfg.flow_capacity as usize)?;
        if stored.intervals > 0 {
            // The window starts where the stored intervals start, not at the retention limit.
            let mut seed = stored.snapshot;
            if let Some(first) = stored.history_start {
                seed.start = seed.start.max(first);
            }
            tracing::info!(
                "history {}: {} stored intervals seed the window",
                db.display(),
                stored.intervals
            );
            agent.seed_window(&seed);
        }
        agent.add_sink(Box::new(crate::store::HistorySink::new(
            store,
            cfg.retention,
        )));
    }
    let metrics = cfg
        .metrics
        .map(|addr| (addr, Arc::new(crate::metrics::Metrics::new())));
    if let Some((_, m)) = &metrics {
        agent.add_sink(Box::new(crate::metrics::MetricsSink::new(m.clone())));
    }
    let stop = rt.block_on(async {
        let _server = match metrics {
            Some((addr, m)) => match crate::metrics::serve(addr, m).await {
                Ok(s) => {
                    tracing::info!("metrics on http://{}/metrics", s.addr);
                    Some(s)
                }
                Err(e) => {
                    tracing::error!("metrics endpoint not started: {e}");
                    eprintln!("portwatch: metrics endpoint not started: {e}");
                    None
                }
            },
            None => None,
        };
        agent::run(&mut agent, cfg.interval, cfg.duration, signals).await
    })?;
    tracing::info!("stopped ({stop:?})");
    Ok(ExitCode::SUCCESS)
}

/// An unknown interface name is an error that lists the ones that exist.
fn check_ifaces(cfg: &AgentConfig) -> Result<()> {
    let Some(wanted) = &cfg.ifaces else {
        return Ok(());
    };
    let have = crate::netif::interfaces().context("listing network interfaces")?;
    for w in wanted {
        if !have.iter().any(|i| &i.name == w) {
            let names: Vec<&str> = have.iter().map(|i| i.name.as_str()).collect();
            bail!(
                "no interface named {w:?}; this host has: {}",
                names.join(", ")
            );
        }
    }
    Ok(())
}

/// Opens the configured backend; `resume` is the history's eBPF checkpoint, if any.
fn open_backend(cfg: &AgentConfig, resume: Option<Vec<u8>>) -> Result<Box<dyn Backend>> {
    match cfg.backend {
        BackendChoice::Ebpf => open_ebpf(cfg, resume),
        BackendChoice::Pcap => open_pcap(cfg),
        BackendChoice::Auto => match open_ebpf(cfg, resume) {
            Ok(b) => Ok(b),
            Err(e) => {
                tracing::warn!("eBPF backend unavailable, falling back to libpcap: {e:#}");
                eprintln!("portwatch: eBPF backend unavailable ({e:#}); using libpcap instead");
                open_pcap(cfg)
            }
        },
    }
}

#[cfg(target_os = "linux")]
fn open_ebpf(cfg: &AgentConfig, resume: Option<Vec<u8>>) -> Result<Box<dyn Backend>> {
    use crate::capture::ebpf::{EbpfBackend, EbpfConfig};
    let b = EbpfBackend::open(EbpfConfig {
        ifaces: cfg.ifaces.clone(),
        flow_capacity: cfg.flow_capacity,
        flow_cache_slots: cfg.flow_cache_slots,
        pin_dir: cfg.pin_dir.clone(),
        resume,
        ..EbpfConfig::default()
    })?;
    Ok(Box::new(b))
}

#[cfg(not(target_os = "linux"))]
fn open_ebpf(_cfg: &AgentConfig, _resume: Option<Vec<u8>>) -> Result<Box<dyn Backend>> {
    bail!("eBPF is only available on Linux")
}

fn open_pcap(cfg: &AgentConfig) -> Result<Box<dyn Backend>> {
    use crate::capture::pcap::{PcapBackend, PcapConfig};
    use crate::clock::Clock;
    let b = PcapBackend::open(
        PcapConfig {
            ifaces: cfg.ifaces.clone().unwrap_or_default(),
            flow_capacity: cfg.flow_capacity as usize,
            ..PcapConfig::default()
        },
        SystemClock.now(),
    )?;
    Ok(Box::new(b))
}
