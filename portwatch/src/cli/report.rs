//! `portwatch report`: a report over a stretch of the agent's history database. A thin
//! adapter: the store rebuilds the window, classify judges it, the entry records fix what
//! bounded flow detail could not show, and the report renderers print it.
use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use crate::classify::{self, ClassifyInput, NodeInfo};
use crate::clock::{Clock, SystemClock, UnixNanos};
use crate::config::parse_duration;
use crate::inventory::Inventory;
use crate::report::model::rfc3339;
use crate::report::{self, CaptureInfo, Format, Report, ReportMeta};
use crate::spec::Spec;
use crate::store::{Store, apply_history};

/// Where `portwatch run` keeps its history under the shipped systemd unit and DaemonSet.
pub const DEFAULT_HISTORY: &str = "/var/lib/portwatch/history.db";

/// At most this many of the node's own addresses are taken from the history's flows.
const MAX_NODE_ADDRS: usize = 64;

/// Build a report from the agent's history database over the last `--since`.
///
/// Documented entries count as unused only when no interval of the whole window used them, so
/// the verdict survives agent restarts. Listening sockets are not recorded in the history:
/// listener findings need a live node (`portwatch listeners`).
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The port spec (TOML) to hold the traffic against.
    #[arg(long, value_name = "SPEC")]
    pub spec: PathBuf,
    /// The site inventory binding the spec's zones to networks (and naming the nodes).
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// The history database the agent writes (`portwatch run --history`).
    #[arg(long, value_name = "DB", default_value = DEFAULT_HISTORY)]
    pub history: PathBuf,
    /// How far back the report looks: 30d, 12h, 90m, ...
    #[arg(long, default_value = "30d", value_name = "DURATION")]
    pub since: String,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The node's name in the inventory (its addresses are the node's own). Default: the node
    /// names recorded in the history, with the local addresses its flows show.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The node's ephemeral port range, used to tell clients from servers.
    #[arg(long, default_value = "32768-60999", value_name = "START-END")]
    pub ephemeral: String,
    /// At most this many distinct flows are rebuilt from the history (per-port totals and
    /// entry records stay exact beyond it).
    #[arg(long, default_value_t = 1 << 20, value_name = "N")]
    pub max_flows: usize,
    /// Exit with status 1 when the report has violations or warnings.
    #[arg(long)]
    pub exit_code: bool,
    /// "Now", in Unix seconds, instead of the system clock (reproducible reports).
    #[arg(long, value_name = "UNIX_SECONDS", hide = true)]
    pub now: Option<u64>,
}

/// Runs `portwatch report`.
pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let now: UnixNanos = match args.now {
        Some(s) => s.saturating_mul(1_000_000_000),
        None => SystemClock.now(),
    };
    let back = parse_duration("--since", &args.since)?;
    let since = now.saturating_sub(u64::try_from(back.as_nanos()).unwrap_or(u64::MAX));
    if !args.history.exists() {
        bail!(
            "history database {} does not exist: the agent writes it with `portwatch run --history FILE` (default {DEFAULT_HISTORY})",
            args.history.display()
        );
    }
    let spec = Spec::load(&args.spec)?;
    let inventory = args.inventory.as_ref().map(Inventory::load).transpose()?;
    let store = Store::open(&args.history)?;
    let w = store.window(since, args.max_flows)?;
    if w.intervals == 0 {
        let held = store.interval_count()?;
        bail!(
            "history database {} has no interval since {} ({held} intervals held{}): try a longer --since",
            args.history.display(),
            rfc3339(since),
            match store.history_start()? {
                Some(t) => format!(", history since {}", rfc3339(t)),
                None => String::new(),
            }
        );
    }

    let mut node = NodeInfo {
        name: args.node.clone().unwrap_or_else(|| w.nodes.join(",")),
        addrs: Vec::new(),
    };
    match (&args.node, &inventory) {
        (Some(name), Some(inv)) => {
            let n = inv.node(name).with_context(|| {
                format!(
                    "--node {name:?}: not a node of inventory {}",
                    inv.path.display()
                )
            })?;
            node.addrs = n.addresses.clone();
        }
        _ => {
            let local: BTreeSet<IpAddr> = w
                .snapshot
                .flows
                .iter()
                .filter(|f| f.vantage_known)
                .map(|f| f.key.local.addr)
                .collect();
            node.addrs = local.into_iter().take(MAX_NODE_ADDRS).collect();
        }
    }

    let input = ClassifyInput {
        spec: &spec,
        inventory: inventory.as_ref(),
        window: &w.snapshot,
        listeners: None,
        connections: None,
        ephemeral: super::analyze::ephemeral(&args.ephemeral)?,
        node: &node,
    };
    let mut findings = classify::classify(&input);
    let fixed = apply_history(&mut findings, &w);
    if fixed > 0 {
        tracing::info!(
            "{fixed} entries shown as used from the interval records (their flows were beyond the stored detail)"
        );
    }
    let meta = ReportMeta {
        generated_at: now,
        capture: CaptureInfo {
            backend: Some(w.backends.join(",")),
            interfaces: Vec::new(),
            listeners_unavailable: Some(format!(
                "report from history {} ({} intervals): listening sockets are not recorded",
                args.history.display(),
                w.intervals
            )),
        },
    };
    let report = Report::build(&input, findings, meta);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    report::render(&report, args.format, &mut out)?;
    out.flush()?;
    Ok(ExitCode::from(if args.exit_code && report.has_problems() {
        super::exit::FINDINGS
    } else {
        super::exit::OK
    }))
}
