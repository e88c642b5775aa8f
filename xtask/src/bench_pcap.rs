//! `cargo xtask bench pcap`: generates a deterministic capture with many flows under target/,
//! then times portwatch's offline reader against tcpdump, softflowd and tshark on the same file
//! (one core each, file in the page cache) and prints packets per second and ratios. The fast
//! tools run in interleaved rounds and are reported by their median, so a change in the
//! machine's speed during the run moves every tool alike.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::util;

/// Options of `cargo xtask bench pcap`.
#[derive(Debug, Args)]
pub struct BenchPcapArgs {
    /// Packets in the generated capture.
    #[arg(long, default_value_t = 10_000_000)]
    pub packets: u64,
    /// Distinct flows over the whole capture (about `packets / flows` packets each).
    #[arg(long, default_value_t = 200_000)]
    pub flows: u64,
    /// Flows active at any moment (packets interleave among them).
    #[arg(long, default_value_t = 4_096)]
    pub concurrent: u64,
    /// Skip these tools (comma-separated: tcpdump, softflowd, tshark).
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Regenerate the capture even when one with the same parameters exists.
    #[arg(long)]
    pub regenerate: bool,
    /// Interleaved rounds of portwatch, tcpdump and softflowd (each is reported by its median
    /// CPU time, with the range); tshark (minutes a run) runs once, after the rounds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
}

/// A small deterministic PRNG (xorshift64*), so every run writes the same file.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What one flow looks like in the generated traffic.
#[derive(Clone, Copy)]
struct Flow {
    kind: u8,
    client: u32,
    server: u32,
    sport: u16,
    dport: u16,
    sent: u32,
    life: u32,
}

const SERVER_PORTS: [u16; 12] = [
    443, 80, 22, 53, 5432, 8080, 9090, 3306, 6379, 25, 8443, 2049,
];

fn new_flow(rng: &mut Rng) -> Flow {
    // 60% IPv4 TCP, 15% IPv4 UDP, 12% IPv6 TCP, 8% VLAN-tagged IPv4 TCP, 3% QinQ UDP,
    // 2% ICMP echo.
    let r = rng.below(100);
    let kind = match r {
        0..60 => 0,
        60..75 => 1,
        75..87 => 2,
        87..95 => 3,
        95..98 => 4,
        _ => 5,
    };
    let port_pick = rng.below(SERVER_PORTS.len() as u64) as usize;
    Flow {
        kind,
        client: 0x0a01_0000 | rng.below(1 << 16) as u32,
        server: 0x0a00_0000 | rng.below(256) as u32,
        sport: 32768 + rng.below(28232) as u16,
        dport: SERVER_PORTS.get(port_pick).copied().unwrap_or(443),
        sent: 0,
        life: 10 + rng.below(80) as u32,
    }
}

/// Writes one frame (headers only: the capture's snaplen is 96) for `f`; returns the captured
/// bytes and the wire length.
fn frame(buf: &mut Vec<u8>, f: &Flow, rng: &mut Rng) -> u32 {
    buf.clear();
    let reply = f.sent % 2 == 1;
    let payload = match rng.below(4) {
        0 => 0,
        1 => 40 + rng.below(200) as u32,
        2 => 1448,
        _ => rng.below(1448) as u32,
    };
    buf.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]);
    let mut l2 = 14u32;
    match f.kind {
        3 => {
            buf.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
            l2 += 4;
        }
        4 => {
            buf.extend_from_slice(&[0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x00, 0x0a]);
            l2 += 8;
        }
        _ => {}
    }
    let (src, dst, sp, dp) = if reply {
        (f.server, f.client, f.dport, f.sport)
    } else {
        (f.client, f.server, f.sport, f.dport)
    };
    let proto: u8 = match f.kind {
        1 | 4 => 17,
        5 => 1,
        _ => 6,
    };
    let l4 = match proto {
        6 => {
            let flags: u8 = match (f.sent, reply) {
                (0, _) => 0x02,
                (1, _) => 0x12,
                _ if f.sent + 1 >= f.life => 0x11,
                _ => 0x18,
            };
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&sp.to_be_bytes());
            t[2..4].copy_from_slice(&dp.to_be_bytes());
            t[12] = 0x50;
            t[13] = flags;
            t
        }
        17 => {
            let mut u = vec![0u8; 8];
            u[0..2].copy_from_slice(&sp.to_be_bytes());
            u[2..4].copy_from_slice(&dp.to_be_bytes());
            u[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
            u
        }
        _ => vec![if reply { 0 } else { 8 }, 0, 0, 0, 0, 1, 0, f.sent as u8],
    };
    let l4_len = l4.len() as u32 + payload;
    if f.kind == 2 {
        buf.extend_from_slice(&[0x86, 0xdd]);
        let mut ip = [0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        ip[6] = proto;
        ip[7] = 64;
        ip[8..10].copy_from_slice(&[0xfd, 0x00]);
        ip[20..24].copy_from_slice(&src.to_be_bytes());
        ip[24..26].copy_from_slice(&[0xfd, 0x00]);
        ip[36..40].copy_from_slice(&dst.to_be_bytes());
        buf.extend_from_slice(&ip);
        buf.extend_from_slice(&l4);
        l2 + 40 + l4_len
    } else {
        buf.extend_from_slice(&[0x08, 0x00]);
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&src.to_be_bytes());
        ip[16..20].copy_from_slice(&dst.to_be_bytes());
        buf.extend_from_slice(&ip);
        buf.extend_from_slice(&l4);
        (l2 + 20 + l4_len).max(60)
    }
}

/// Writes the benchmark capture (classic pcap, microseconds, Ethernet, snaplen 96).
pub fn generate(path: &Path, a: &BenchPcapArgs) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut hdr = Vec::with_capacity(24);
    hdr.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    hdr.extend_from_slice(&2u16.to_le_bytes());
    hdr.extend_from_slice(&4u16.to_le_bytes());
    hdr.extend_from_slice(&[0; 8]);
    hdr.extend_from_slice(&96u32.to_le_bytes());
    hdr.extend_from_slice(&1u32.to_le_bytes());
    w.write_all(&hdr)?;
    let mut rng = Rng(0x005e_ed0f_9047_c4a7);
    let concurrent = a.concurrent.max(1) as usize;
    let mut active: Vec<Flow> = (0..concurrent).map(|_| new_flow(&mut rng)).collect();
    let mut started = concurrent as u64;
    let mut buf = Vec::with_capacity(128);
    // Average flow life is ~50 packets; rescale so the file holds about `flows` flows.
    let per_flow = (a.packets / a.flows.max(1)).max(1);
    let mut ts_us: u64 = 1_767_225_600_000_000;
    for _ in 0..a.packets {
        let i = rng.below(concurrent as u64) as usize;
        let Some(f) = active.get_mut(i) else { continue };
        let wire = frame(&mut buf, f, &mut rng);
        f.sent += 1;
        if f.sent >= f.life * per_flow as u32 / 50 + 2 && started < a.flows {
            *f = new_flow(&mut rng);
            started += 1;
        }
        ts_us += 1 + rng.below(20);
        let cap = buf.len().min(96);
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&((ts_us / 1_000_000) as u32).to_le_bytes());
        rec[4..8].copy_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
        rec[8..12].copy_from_slice(&(cap as u32).to_le_bytes());
        rec[12..16].copy_from_slice(&wire.max(cap as u32).to_le_bytes());
        w.write_all(&rec)?;
        w.write_all(buf.get(..cap).unwrap_or_default())?;
    }
    w.flush()?;
    Ok(())
}

/// One timed run: wall-clock seconds and the CPU seconds (user + system) the tool used. The
/// ratios use CPU time: on a shared machine wall time mostly measures the other tenants.
struct Timing {
    secs: f64,
    cpu: f64,
}

/// CPU seconds (user + system) used so far by waited-for children.
fn children_cpu() -> f64 {
    // SAFETY: getrusage writes into the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn time(name: &str, cmd: &mut Command) -> Result<Timing> {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    eprintln!("xtask: timing {name}: $ {}", util::show(cmd));
    let cpu0 = children_cpu();
    let t = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{}`", util::show(cmd)))?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = children_cpu() - cpu0;
    if !out.status.success() {
        bail!(
            "`{}` failed with {}: {}",
            util::show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Timing { secs, cpu })
}

/// One benchmarked command and its timings over the rounds.
struct Job {
    name: String,
    argv: Vec<String>,
    runs: Vec<Timing>,
}

impl Job {
    fn new(name: &str, argv: Vec<String>) -> Self {
        Self {
            name: name.to_owned(),
            argv,
            runs: Vec::new(),
        }
    }

    fn run(&mut self) -> Result<()> {
        let (program, args) = self.argv.split_first().context("empty command")?;
        let t = time(&self.name, Command::new(program).args(args))?;
        eprintln!("xtask:   {:.2} s CPU, {:.2} s wall", t.cpu, t.secs);
        self.runs.push(t);
        Ok(())
    }

    fn median(&self) -> f64 {
        median(self.runs.iter().map(|t| t.cpu).collect())
    }

    fn range(&self) -> (f64, f64) {
        let cpu = self.runs.iter().map(|t| t.cpu);
        (
            cpu.clone().fold(f64::INFINITY, f64::min),
            cpu.fold(0.0, f64::max),
        )
    }
}

/// The median (the mean of the middle two for an even count; 0 for none).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn have(tool: &str) -> bool {
    util::output(Command::new("sh").args(["-c", &format!("command -v {tool}")])).is_some()
}

/// Runs the benchmark.
pub fn run(a: &BenchPcapArgs) -> Result<()> {
    let dir = util::root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path: PathBuf = dir.join(format!(
        "pcap-{}p-{}f-{}c.pcap",
        a.packets, a.flows, a.concurrent
    ));
    if a.regenerate || !path.exists() {
        eprintln!("xtask: writing {}", path.display());
        generate(&path, a)?;
    }
    util::sh(util::cargo().args(["build", "--release", "-p", "portwatch"]))?;
    let bin = util::root().join("target/release/portwatch");
    // Warm the page cache so every tool reads from memory.
    std::io::copy(&mut File::open(&path)?, &mut std::io::sink())?;
    let file = path.to_string_lossy().into_owned();
    // One core for everyone.
    let pinned = |program: &str, args: Vec<String>| -> Vec<String> {
        let mut v = vec![
            "taskset".to_owned(),
            "-c".into(),
            "0".into(),
            program.into(),
        ];
        v.extend(args);
        v
    };
    let spec = util::root().join("specs/thoughtspot.toml");
    let spec = spec.to_string_lossy().into_owned();
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let bin = bin.to_string_lossy().into_owned();
    // The capture is analysed as the servers' node would: their addresses are local.
    let local = ["--local", "10.0.0.0/24", "--local", "fd00::a00:0/120"];
    let mut jobs: Vec<Job> = vec![
        Job::new(
            "portwatch analyze (read, decode, flows, report)",
            pinned(
                &bin,
                strings(
                    &[
                        &["analyze", "--no-progress", "--spec", &spec][..],
                        &local,
                        &[&file],
                    ]
                    .concat(),
                ),
            ),
        ),
        Job::new(
            "portwatch analyze --observations (no classify)",
            pinned(
                &bin,
                strings(
                    &[
                        &["analyze", "--no-progress", "--observations"][..],
                        &local,
                        &[&file],
                    ]
                    .concat(),
                ),
            ),
        ),
        // Without node addresses each flow is oriented by its first packet.
        Job::new(
            "portwatch analyze --observations, no --local",
            pinned(
                &bin,
                strings(&["analyze", "--no-progress", "--observations", &file]),
            ),
        ),
    ];
    let peers: [(&str, &str, Vec<&str>); 3] = [
        (
            "tcpdump",
            "tcpdump -r FILE -w /dev/null",
            vec!["-r", &file, "-w", "/dev/null"],
        ),
        ("softflowd", "softflowd -r FILE", vec!["-r", &file]),
        (
            "tshark",
            "tshark -r FILE -q -z conv,tcp",
            vec!["-r", &file, "-q", "-z", "conv,tcp"],
        ),
    ];
    let mut slow = Vec::new();
    for (tool, label, args) in peers {
        if a.skip.iter().any(|s| s == tool) {
            continue;
        }
        if !have(tool) {
            eprintln!("xtask: {tool} is not installed (cargo xtask setup installs it); skipped");
            continue;
        }
        let job = Job::new(label, pinned(tool, strings(&args)));
        if tool == "tshark" {
            slow.push(job);
        } else {
            jobs.push(job);
        }
    }
    for round in 1..=a.rounds {
        eprintln!("xtask: round {round} of {}", a.rounds);
        for job in &mut jobs {
            job.run()?;
        }
    }
    for job in &mut slow {
        job.run()?;
    }
    jobs.extend(slow);
    let base = jobs.get(1).map(Job::median).unwrap_or(1.0);
    println!(
        "pcap offline benchmark: {} packets, ~{} flows, {} concurrent, file {} MiB, one core (taskset -c 0)",
        a.packets,
        a.flows,
        a.concurrent,
        std::fs::metadata(&path)?.len() >> 20
    );
    println!(
        "{} interleaved rounds; CPU seconds (user + system) are each run's median, with the range over its rounds",
        a.rounds
    );
    println!(
        "{:<50} {:>5} {:>8} {:>15} {:>10} {:>10} {:>15}",
        "run", "runs", "cpu s", "cpu s range", "wall s", "Mpps cpu", "vs observations"
    );
    for j in &jobs {
        let (lo, hi) = j.range();
        let med = j.median();
        println!(
            "{:<50} {:>5} {:>8.2} {:>15} {:>10.2} {:>10.2} {:>14.2}x",
            j.name,
            j.runs.len(),
            med,
            format!("{lo:.2}-{hi:.2}"),
            median(j.runs.iter().map(|t| t.secs).collect()),
            a.packets as f64 / med / 1e6,
            med / base
        );
    }
    println!(
        "(last column: the run's median CPU time over portwatch's capture-to-observations median, i.e. how many times faster portwatch is)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty_runs() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![0.9]), 0.9);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
