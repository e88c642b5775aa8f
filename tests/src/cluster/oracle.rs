//! The independent oracle: a `tcpdump` capture on each node's interface, running while the agents
//! run, and per-port packet and byte counts computed from it by `tshark`'s own statistics
//! (`-z io,stat`), not by portwatch's decoder. It only reads captures; it never judges findings.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::daemons::{Transport, tail};
use super::error::{ClusterError, Result, io_err};
use super::lab::{Host, IFACE, Lab, Proc, check_interrupted};

/// Which end of the conversation has the port: this node (for the scenario's service ports:
/// the node serves it) or the peer it talks to (the node is the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Local,
    Remote,
}

/// Direction relative to the captured node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dir {
    In,
    Out,
}

/// A per-port counter key, the shape of portwatch's lossless per-port totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    pub transport: Transport,
    pub port: u16,
    pub side: Side,
    pub dir: Dir,
}

impl fmt::Display for PortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match self.side {
            Side::Local => "local port",
            Side::Remote => "peer's port",
        };
        let dir = match self.dir {
            Dir::In => "in",
            Dir::Out => "out",
        };
        write!(f, "{}/{} ({side}, {dir})", self.transport.name(), self.port)
    }
}

/// Counts for one key. Every frame on these veths is untagged Ethernet, so IP bytes are frame
/// bytes less 14 per packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub packets: u64,
    /// Sum of frame lengths (link layer included).
    pub frame_bytes: u64,
    /// Sum of IP packet lengths (IPv4 total length, IPv6 header plus payload).
    pub ip_bytes: u64,
    /// Sum of transport payload lengths (TCP segment data, UDP datagram data).
    pub payload_bytes: u64,
}

/// A running capture on one node's interface.
#[derive(Debug)]
pub struct Capture {
    pub host: Host,
    pub pcap: PathBuf,
    proc: Proc,
}

/// What tcpdump said when it stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    pub captured: u64,
    pub dropped_by_kernel: u64,
}

/// Starts `tcpdump` on `h`'s interface (full packets, written as they arrive) and waits until it
/// listens. Run it before anything sends traffic.
pub fn start_capture(lab: &Lab, h: Host) -> Result<Capture> {
    let dir = lab.subdir("pcap")?;
    let pcap = dir.join(format!("{}.pcap", h.name()));
    let pcap_s = pcap.to_string_lossy().into_owned();
    // tcpdump drops to the `tcpdump` user after opening the interface; keep root so it can write
    // into the scratch directory.
    let c = lab.nsenter(
        h,
        &[
            "tcpdump",
            "-i",
            IFACE,
            "-n",
            "-s",
            "0",
            "-U",
            "--immediate-mode",
            // 32 MiB of kernel buffer: the JVMs and Erlang starting on two cores can keep
            // tcpdump off the CPU for a while, and a lost packet would make the oracle wrong.
            "-B",
            "32768",
            "-Z",
            "root",
            "-w",
            &pcap_s,
        ],
    );
    let log = lab
        .dir()
        .join("logs")
        .join(format!("{}-tcpdump.log", h.name()));
    let proc = lab.spawn_command(h, "tcpdump", c, log)?;
    let cap = Capture {
        host: h,
        pcap,
        proc,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        check_interrupted()?;
        let text = fs::read_to_string(&cap.proc.log).unwrap_or_default();
        if text.contains("listening on") {
            return Ok(cap);
        }
        if let Some(status) = lab.exited(&cap.proc) {
            return Err(ClusterError::Exited {
                service: "tcpdump",
                host: h,
                status: status.to_string(),
                log: cap.proc.log.clone(),
                tail: tail(&cap.proc.log, 10),
            });
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::NotReady {
                service: "tcpdump",
                host: h,
                check: "\"listening on\" in its output".into(),
                waited: Duration::from_secs(10),
                log: cap.proc.log.clone(),
                tail: tail(&cap.proc.log, 10),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Capture {
    pub fn pid(&self) -> u32 {
        self.proc.pid
    }
}

/// Waits until no capture file has grown for `quiet` (the network is idle), at most `limit`.
/// Returns whether it got quiet.
pub fn wait_quiet(caps: &[Capture], quiet: Duration, limit: Duration) -> Result<bool> {
    let size = |c: &Capture| fs::metadata(&c.pcap).map(|m| m.len()).unwrap_or(0);
    let deadline = Instant::now() + limit;
    let mut last: Vec<u64> = caps.iter().map(size).collect();
    let mut since = Instant::now();
    loop {
        check_interrupted()?;
        std::thread::sleep(Duration::from_millis(50));
        let now: Vec<u64> = caps.iter().map(size).collect();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

/// Stops a capture (SIGINT, as at a terminal) and returns tcpdump's own packet statistics.
pub fn stop_capture(lab: &Lab, cap: &Capture) -> Result<CaptureStats> {
    let status = lab.stop(&cap.proc, libc::SIGINT, Duration::from_secs(10));
    let text = fs::read_to_string(&cap.proc.log).map_err(io_err("reading", &cap.proc.log))?;
    let num = |suffix: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_suffix(suffix)?.trim().parse().ok())
    };
    match (
        status,
        num(" packets captured"),
        num(" packets dropped by kernel"),
    ) {
        (Some(_), Some(captured), Some(dropped_by_kernel)) => Ok(CaptureStats {
            captured,
            dropped_by_kernel,
        }),
        _ => Err(ClusterError::Exited {
            service: "tcpdump",
            host: cap.host,
            status: format!("{status:?} without its closing statistics"),
            log: cap.proc.log.clone(),
            tail: tail(&cap.proc.log, 10),
        }),
    }
}

/// A display filter matching this node's address as source or destination.
fn addr(h: Host, field: &str) -> String {
    format!("(ip.{field}=={} || ipv6.{field}=={})", h.v4(), h.v6())
}

fn filter(h: Host, k: PortKey) -> String {
    let t = k.transport.name();
    let (a, p) = match (k.side, k.dir) {
        // Served here: traffic in is to our port, traffic out is from it.
        (Side::Local, Dir::In) => (addr(h, "dst"), format!("{t}.dstport=={}", k.port)),
        (Side::Local, Dir::Out) => (addr(h, "src"), format!("{t}.srcport=={}", k.port)),
        // Served by the peer: we send to its port and receive from it.
        (Side::Remote, Dir::Out) => (addr(h, "src"), format!("{t}.dstport=={}", k.port)),
        (Side::Remote, Dir::In) => (addr(h, "dst"), format!("{t}.srcport=={}", k.port)),
    };
    // ICMP errors quote a transport header: those are not traffic of the port.
    format!("{a} && {p} && !icmp && !icmpv6")
}

/// Per-port counts of `h`'s capture for every `ports` entry, both sides and directions, as
/// computed by `tshark -z io,stat` (frames, bytes, and SUM of payload and IP length fields).
pub fn port_counts(
    pcap: &Path,
    h: Host,
    ports: &BTreeSet<(Transport, u16)>,
) -> Result<BTreeMap<PortKey, Counts>> {
    let mut keys = Vec::new();
    for &(transport, port) in ports {
        for side in [Side::Local, Side::Remote] {
            for dir in [Dir::In, Dir::Out] {
                keys.push(PortKey {
                    transport,
                    port,
                    side,
                    dir,
                });
            }
        }
    }
    let mut columns: Vec<String> = Vec::new();
    for &k in &keys {
        let f = filter(h, k);
        columns.push(f.clone());
        let payload = match k.transport {
            Transport::Tcp => "tcp.len",
            Transport::Udp => "udp.length",
        };
        columns.push(format!("SUM({payload}){payload} && {f}"));
    }
    let mut c = Command::new("tshark");
    c.arg("-r").arg(pcap).args(["-n", "-q"]);
    for col in &columns {
        c.arg("-z").arg(format!("io,stat,0,{col}"));
    }
    let command = format!(
        "tshark -r {} -q -z io,stat,0,... ({} columns)",
        pcap.display(),
        columns.len()
    );
    let out = super::checked_output(&mut c, command)?;
    let tables = parse_io_stat(&String::from_utf8_lossy(&out.stdout));
    let get = |col: &str| -> Result<&Vec<u64>> {
        tables
            .get(&label_key(col))
            .ok_or_else(|| ClusterError::Oracle {
                pcap: pcap.to_path_buf(),
                filter: col.to_owned(),
            })
    };
    let mut result = BTreeMap::new();
    for (i, &k) in keys.iter().enumerate() {
        let frames = get(&columns[2 * i])?;
        let payload = get(&columns[2 * i + 1])?;
        let (Some(&packets), Some(&frame_bytes), Some(&payload)) =
            (frames.first(), frames.get(1), payload.first())
        else {
            return Err(ClusterError::Oracle {
                pcap: pcap.to_path_buf(),
                filter: columns[2 * i].clone(),
            });
        };
        // Frames on these veths are untagged Ethernet, never padded: 14 bytes before the IP
        // header.
        let ip_bytes = frame_bytes - 14 * packets;
        let payload_bytes = match k.transport {
            Transport::Tcp => payload,
            // udp.length counts the 8-byte UDP header.
            Transport::Udp => payload - 8 * packets,
        };
        result.insert(
            k,
            Counts {
                packets,
                frame_bytes,
                ip_bytes,
                payload_bytes,
            },
        );
    }
    Ok(result)
}

/// Parses tshark's `-z io,stat,0,...` tables: column label -> numbers of the single interval row.
/// tshark wraps long labels over several lines, so labels are keyed with all whitespace removed
/// (see [`label_key`]).
fn parse_io_stat(text: &str) -> BTreeMap<String, Vec<u64>> {
    let mut out = BTreeMap::new();
    let mut label: Option<String> = None;
    let mut in_label = false;
    for line in text.lines() {
        let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
        if let Some(rest) = inner.trim_start().strip_prefix("Col 1: ") {
            label = Some(label_key(rest));
            in_label = true;
        } else if line.starts_with("|-") || line.starts_with("==") {
            in_label = false;
        } else if in_label {
            if let Some(l) = label.as_mut() {
                l.push_str(&label_key(inner));
            }
        } else if line.contains("<>")
            && let Some(l) = label.take()
        {
            let nums: Vec<u64> = line
                .split('|')
                .skip(2)
                .filter_map(|c| c.trim().parse().ok())
                .collect();
            out.insert(l, nums);
        }
    }
    out
}

/// A column label without whitespace (how [`parse_io_stat`] keys it).
fn label_key(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_stat_tables_are_read_by_label() {
        let text = "
===================================================
| IO Statistics                                   |
| Col 1: ip.dst==10.77.0.12 && udp.dstport==11211 |
|-------------------------------------------------|
|                |1               |               |
| Interval       | Frames | Bytes |               |
|---------------------------------|               |
| 0.000 <> 1.964 |      3 |   171 |               |
===================================================
| Col 1: SUM(udp.length)udp.length && x &&      |
|        !icmp                                  |
|-----------------------------------------------|
| Interval       | SUM |                |
| 0.000 <> 1.964 |  69 |                |
";
        let t = parse_io_stat(text);
        assert_eq!(
            t.get(&label_key("ip.dst==10.77.0.12 && udp.dstport==11211")),
            Some(&vec![3, 171])
        );
        assert_eq!(
            t.get(&label_key("SUM(udp.length)udp.length && x && !icmp")),
            Some(&vec![69])
        );
    }

    #[test]
    fn filters_name_the_serving_side() {
        let k = PortKey {
            transport: Transport::Udp,
            port: 11211,
            side: Side::Remote,
            dir: Dir::Out,
        };
        assert_eq!(
            filter(Host::N1, k),
            "(ip.src==10.77.0.11 || ipv6.src==fd77::11) && udp.dstport==11211 && !icmp && !icmpv6"
        );
    }
}
