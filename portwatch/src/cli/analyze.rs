//! `portwatch analyze`: offline analysis of pcap/pcapng files. A thin adapter: arguments to
//! [`capture::file::read_captures`](crate::capture::file::read_captures), a progress bar on
//! a terminal, and the rendering of what was observed. No decoding or product logic here.
use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::capture::BackendKind;
use crate::capture::file::{self, Analysis, FileConfig, Orienter};
use crate::classify::{ClassifyInput, NodeInfo};
use crate::flow::{Direction, Side};
use crate::host::PortRange;
use crate::inventory::Inventory;
use crate::report::{self, CaptureInfo, Format, Report, ReportMeta};
use crate::spec::Spec;

/// Files at least this large get a progress bar (reading them takes more than a moment).
const PROGRESS_MIN_BYTES: u64 = 64 << 20;

/// Analyse capture files (pcap or pcapng; several interfaces per pcapng) against a spec, or
/// with `--observations` just show what they contain.
///
/// Link types: Ethernet (802.1Q/802.1ad tags), Linux cooked SLL/SLL2, raw IP, BSD loopback.
/// Frames cut by snaplen count with their wire length. A damaged file is read up to the damage,
/// whose byte offset is reported. Listener findings need a live node and are skipped.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// The port spec (TOML) to hold the traffic against. Required for a report; not read with
    /// `--observations`.
    #[arg(long, value_name = "SPEC", required_unless_present = "observations")]
    pub spec: Option<PathBuf>,
    /// The site inventory binding the spec's zones to networks (and naming the nodes).
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// The node the capture was taken on, by its inventory name: its addresses decide
    /// direction (traffic from them is outbound, to them inbound).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The node's own addresses or networks (repeatable), in addition to or instead of
    /// `--node`. Without either, direction comes from the capture (pcapng flags, cooked
    /// headers) or, failing that, from the first packet of each flow.
    #[arg(long = "local", value_name = "ADDR|CIDR")]
    pub local: Vec<String>,
    /// The capturing node's ephemeral port range, used to tell clients from servers.
    #[arg(long, default_value = "32768-60999", value_name = "START-END")]
    pub ephemeral: String,
    /// Capture files, read in order into one observation window.
    #[arg(required = true, value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
    /// At most this many distinct flows are kept (per-port totals stay exact beyond it).
    #[arg(long, default_value_t = 1 << 21, value_name = "N")]
    pub max_flows: usize,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Print what was observed (files, health, per-port totals) instead of a report; needs no
    /// spec (one given is ignored) and does no classification.
    #[arg(long)]
    pub observations: bool,
    /// Exit with status 1 when the report has violations or warnings.
    #[arg(long)]
    pub exit_code: bool,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Parses `--local` values: plain addresses or CIDR networks.
fn orienter(values: &[String]) -> anyhow::Result<Orienter> {
    let mut addrs = Vec::new();
    let mut nets = Vec::new();
    for v in values {
        if let Ok(a) = v.parse::<IpAddr>() {
            addrs.push(a);
        } else {
            nets.push(v.parse::<ipnet::IpNet>().with_context(|| {
                format!("--local {v:?}: expected an IP address or a CIDR network")
            })?);
        }
    }
    Ok(Orienter::new(addrs, nets))
}

pub(crate) fn ephemeral(v: &str) -> anyhow::Result<PortRange> {
    let parse = |p: &str| p.trim().parse::<u16>().ok();
    match v.split_once('-').map(|(a, b)| (parse(a), parse(b))) {
        Some((Some(a), Some(b))) => Ok(PortRange::new(a, b)),
        _ => anyhow::bail!("--ephemeral {v:?}: expected START-END, e.g. 32768-60999"),
    }
}

/// Runs `portwatch analyze`.
pub fn run(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    // The spec is only needed for a report: `--observations` neither requires nor reads it.
    let spec = match (&args.spec, args.observations) {
        (_, true) => None,
        (Some(path), false) => Some(Spec::load(path)?),
        (None, false) => {
            anyhow::bail!("--spec SPEC is needed for a report (or use --observations)")
        }
    };
    let inventory = args.inventory.as_ref().map(Inventory::load).transpose()?;
    let mut orient = orienter(&args.local)?;
    let mut node = NodeInfo {
        name: args.node.clone().unwrap_or_else(|| {
            args.captures
                .first()
                .and_then(|p| p.file_stem())
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "capture".into())
        }),
        addrs: orient.addrs().to_vec(),
    };
    if let Some(name) = &args.node {
        let inv = inventory
            .as_ref()
            .with_context(|| format!("--node {name:?} needs --inventory to find its addresses"))?;
        let n = inv.node(name).with_context(|| {
            format!(
                "--node {name:?}: not a node of inventory {} (nodes: {})",
                inv.path.display(),
                inv.nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        node.addrs.extend(n.addresses.iter().copied());
        orient = Orienter::new(node.addrs.clone(), orient.nets().to_vec());
    }
    let cfg = FileConfig {
        flow_capacity: args.max_flows,
        orienter: orient,
    };
    let analysis = read_with_progress(&args.captures, &cfg, args.no_progress)?;
    let damaged = warn_damage(&analysis);

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    if args.observations {
        match args.format {
            Format::Json => {
                serde_json::to_writer_pretty(&mut out, &json_view(&analysis))?;
                writeln!(out)?;
            }
            _ => write_text(&mut out, &analysis)?,
        }
        out.flush()?;
        return Ok(ExitCode::from(super::exit::OK));
    }
    let Some(spec) = spec else {
        anyhow::bail!("--spec SPEC is needed for a report (or use --observations)");
    };
    let input = ClassifyInput {
        spec: &spec,
        inventory: inventory.as_ref(),
        window: &analysis.snapshot,
        listeners: None,
        connections: None,
        ephemeral: ephemeral(&args.ephemeral)?,
        node: &node,
    };
    let meta = ReportMeta {
        // An offline report is stamped with the end of what it saw, so the same captures
        // always give the same report.
        generated_at: analysis.snapshot.end,
        capture: CaptureInfo {
            backend: Some(BackendKind::File.to_string()),
            interfaces: args
                .captures
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            listeners_unavailable: Some(format!(
                "offline capture analysis{}",
                if damaged {
                    " (damaged capture: results up to the damage)"
                } else {
                    ""
                }
            )),
        },
    };
    let report = Report::analyze(&input, meta);
    report::render(&report, args.format, &mut out)?;
    out.flush()?;
    Ok(ExitCode::from(if args.exit_code && report.has_problems() {
        super::exit::FINDINGS
    } else {
        super::exit::OK
    }))
}

fn read_with_progress(
    captures: &[PathBuf],
    cfg: &FileConfig,
    no_progress: bool,
) -> anyhow::Result<Analysis> {
    let total = file::total_size(captures);
    let bar = (!no_progress && std::io::stderr().is_terminal() && total >= PROGRESS_MIN_BYTES)
        .then(|| {
            let b = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} reading captures {bar:30} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta} left)",
            ) {
                b.set_style(style);
            }
            b
        });
    let analysis = file::read_captures(captures, cfg, &mut |done| {
        if let Some(b) = &bar {
            b.set_position(done);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(analysis)
}

/// Prints a warning per damaged file; returns whether there was one.
fn warn_damage(a: &Analysis) -> bool {
    let mut any = false;
    for f in &a.files {
        if let Some(e) = &f.error {
            any = true;
            eprintln!(
                "portwatch: warning: {}: {e}; results include the {} frames before it",
                f.path.display(),
                f.frames
            );
        }
    }
    any
}

fn json_view(a: &Analysis) -> serde_json::Value {
    serde_json::json!({
        "files": a.files,
        "observations": a.snapshot,
    })
}

/// Renders the observations: files, health, and per-port totals on the local side.
pub fn write_text(out: &mut dyn Write, a: &Analysis) -> std::io::Result<()> {
    for f in &a.files {
        write!(
            out,
            "{}: {} {} frames",
            f.path.display(),
            f.format,
            f.frames
        )?;
        match &f.error {
            Some(e) => writeln!(out, " (damaged {e})")?,
            None => writeln!(out)?,
        }
    }
    let s = &a.snapshot;
    let h = &s.health;
    writeln!(
        out,
        "frames {}, flows {}{}, not IP {}, truncated {}, malformed {}",
        h.packets_seen,
        s.flows.len(),
        if h.flow_table_full > 0 {
            format!(
                " ({} packets of flows beyond --max-flows)",
                h.flow_table_full
            )
        } else {
            String::new()
        },
        h.non_ip,
        h.truncated,
        h.malformed
    )?;
    writeln!(
        out,
        "{:<10} {:>6} {:>4} {:>12} {:>14}",
        "transport", "port", "dir", "packets", "bytes"
    )?;
    let mut ports: Vec<_> = s.ports.iter().filter(|p| p.side == Side::Local).collect();
    ports.sort_by(|a, b| {
        b.counts
            .packets
            .cmp(&a.counts.packets)
            .then((a.transport, a.port, a.dir).cmp(&(b.transport, b.port, b.dir)))
    });
    for p in ports {
        writeln!(
            out,
            "{:<10} {:>6} {:>4} {:>12} {:>14}",
            p.transport.to_string(),
            p.port,
            match p.dir {
                Direction::In => "in",
                Direction::Out => "out",
            },
            p.counts.packets,
            p.counts.bytes
        )?;
    }
    Ok(())
}
