//! `portwatch analyze`: offline analysis of pcap/pcapng files. A thin adapter: arguments to
//! [`capture::file::read_captures`](crate::capture::file::read_captures), a progress bar on
//! a terminal, and the rendering of what was observed. No decoding or product logic here.
use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::capture::file::{self, Analysis, FileConfig, Orienter};
use crate::flow::{Direction, Side};

/// Files at least this large get a progress bar (reading them takes more than a moment).
const PROGRESS_MIN_BYTES: u64 = 64 << 20;

/// Output formats of `analyze`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Text,
    /// JSON (for scripts).
    Json,
}

/// Analyse capture files (pcap or pcapng; several interfaces per pcapng).
///
/// Link types: Ethernet (802.1Q/802.1ad tags), Linux cooked SLL/SLL2, raw IP, BSD loopback.
/// Frames cut by snaplen count with their wire length. A damaged file is read up to the damage,
/// whose byte offset is reported.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Capture files, read in order into one observation window.
    #[arg(required = true, value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
    /// The node's own addresses or networks (repeatable): traffic from them is outbound, to
    /// them inbound. Without them, direction comes from the capture (pcapng flags, cooked
    /// headers) or the first packet of each flow.
    #[arg(long = "local", value_name = "ADDR|CIDR")]
    pub local: Vec<String>,
    /// At most this many distinct flows are kept (per-port totals stay exact beyond it).
    #[arg(long, default_value_t = 1 << 21, value_name = "N")]
    pub max_flows: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
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

/// Runs `portwatch analyze`.
pub fn run(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let cfg = FileConfig {
        flow_capacity: args.max_flows,
        orienter: orienter(&args.local)?,
    };
    let total = file::total_size(&args.captures);
    let bar = (!args.no_progress && std::io::stderr().is_terminal() && total >= PROGRESS_MIN_BYTES)
        .then(|| {
            let b = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} reading captures {bar:30} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta} left)",
            ) {
                b.set_style(style);
            }
            b
        });
    let analysis = file::read_captures(&args.captures, &cfg, &mut |done| {
        if let Some(b) = &bar {
            b.set_position(done);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    for f in &analysis.files {
        if let Some(e) = &f.error {
            eprintln!(
                "portwatch: warning: {}: {e}; results include the {} frames before it",
                f.path.display(),
                f.frames
            );
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &json_view(&analysis))?;
            writeln!(out)?;
        }
        Format::Text => write_text(&mut out, &analysis)?,
    }
    out.flush()?;
    Ok(ExitCode::from(super::exit::OK))
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
