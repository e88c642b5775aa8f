//! Kernel benchmark (run by `cargo xtask bench kernel`, needs root): the TC program's cost per
//! packet measured by the kernel (`BPF_PROG_TEST_RUN`) for IPv4/IPv6 UDP/TCP frames, and the
//! small-packet UDP rate between two namespaces with and without the programs attached
//! (interleaved runs, medians). Prints figures and ratios; asserts nothing about speed.
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aya::programs::TcAttachType;
use portwatch::capture::ebpf::{EbpfBackend, EbpfConfig};
use portwatch_common::{PROG_EGRESS, PROG_INGRESS};
use portwatch_tests::{FrameBuilder, L4, Link, PinDir, V4Opts, require_root};

struct Args {
    repeat: u32,
    rounds: usize,
    /// Interleaved rounds of the packet-rate comparison.
    rate_rounds: usize,
    seconds: f64,
    payload: usize,
    skip_rate: bool,
    /// eBPF objects to compare (`--object PATH`, repeatable): only the per-packet cost of each,
    /// interleaved, is measured.
    objects: Vec<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        repeat: 2_000_000,
        rounds: 7,
        rate_rounds: 21,
        seconds: 1.0,
        payload: 18,
        skip_rate: false,
        objects: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_default();
        match arg.as_str() {
            "--repeat" => a.repeat = val().parse().expect("--repeat N"),
            "--rounds" => a.rounds = val().parse().expect("--rounds N"),
            "--rate-rounds" => a.rate_rounds = val().parse().expect("--rate-rounds N"),
            "--seconds" => a.seconds = val().parse().expect("--seconds S"),
            "--payload" => a.payload = val().parse().expect("--payload BYTES"),
            "--no-rate" => a.skip_rate = true,
            "--object" => a.objects.push(val()),
            other => panic!(
                "unknown argument {other}; use --repeat N --rounds N --rate-rounds N --seconds S --payload B --no-rate --object PATH"
            ),
        }
    }
    a
}

fn median(v: Vec<f64>) -> f64 {
    quantile(v, 0.5)
}

/// The value at quantile `q` (0..=1) of `v`, nearest rank.
fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}

fn main() {
    if !require_root("bench_kernel") {
        std::process::exit(0);
    }
    let args = parse_args();
    if !args.objects.is_empty() {
        compare_objects(&args);
        return;
    }
    per_packet_cost(&args);
    if !args.skip_rate {
        udp_rate(&args);
    }
}

/// The frames every per-packet figure is measured on.
fn bench_frames() -> Vec<(&'static str, Vec<u8>)> {
    let fb = FrameBuilder {
        dst_mac: [2, 0, 0, 0, 0, 1],
        src_mac: [2, 0, 0, 0, 0, 2],
        vlans: Vec::new(),
    };
    let (s4, d4) = (Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 1));
    let (s6, d6): (Ipv6Addr, Ipv6Addr) = ("fd00::2".parse().unwrap(), "fd00::1".parse().unwrap());
    let pl = [0u8; 64];
    let udp = L4::Udp {
        sport: 40000,
        dport: 53,
        payload: &pl,
    };
    let tcp = L4::Tcp {
        sport: 40000,
        dport: 443,
        flags: 0x18,
        payload: &pl,
    };
    vec![
        ("IPv4 UDP", fb.ipv4(s4, d4, &udp, &V4Opts::default())),
        ("IPv4 TCP", fb.ipv4(s4, d4, &tcp, &V4Opts::default())),
        ("IPv6 UDP", fb.ipv6(s6, d6, &[], &udp)),
        ("IPv6 TCP", fb.ipv6(s6, d6, &[], &tcp)),
        ("ARP (parsed, counted as non-IP: no port or flow update)", {
            let mut f = fb.l2(0x0806);
            f.extend_from_slice(&[0u8; 28]);
            f
        }),
    ]
}

/// `--object A --object B ...`: loads each eBPF object (built variants of portwatch-ebpf, same
/// map and program names) into its own pin directory and measures their ingress and egress
/// programs with BPF_PROG_TEST_RUN in rotating order within each round, so that the machine's
/// speed phases fall on every variant alike. Prints medians and minimums, net of an empty
/// program measured in the same rounds.
fn compare_objects(args: &Args) {
    use portwatch_common as common;
    use std::os::fd::AsFd;
    let slots = common::DEFAULT_PORT_SLOTS;
    let mask = slots - 1;
    let mut loaded = Vec::new();
    for path in &args.objects {
        let pins = PinDir::new("variant").expect("pin dir");
        let mut ebpf = aya::EbpfLoader::new()
            .default_map_pin_directory(&pins.path)
            .map_max_entries(common::MAP_FLOWS, 65_536)
            .map_max_entries(common::MAP_PORT_TOTALS, slots)
            .override_global(common::GLOBAL_PORT_SLOT_MASK, &mask, true)
            .load_file(path)
            .unwrap_or_else(|e| panic!("loading {path}: {e}"));
        for prog in [PROG_INGRESS, PROG_EGRESS] {
            let p: &mut aya::programs::SchedClassifier = ebpf
                .program_mut(prog)
                .unwrap_or_else(|| panic!("{path} has no program {prog}"))
                .try_into()
                .expect("a classifier");
            p.load()
                .unwrap_or_else(|e| panic!("verifier on {path} {prog}: {e:?}"));
        }
        loaded.push((path.clone(), pins, ebpf));
    }
    let frames = bench_frames();
    let empty = EmptyProgram::load().expect("load a two-instruction classifier");
    let n = loaded.len();
    // results[variant][frame][prog] = runs
    let mut results = vec![vec![[Vec::new(), Vec::new()]; frames.len()]; n];
    let mut base = Vec::new();
    for round in 0..args.rounds {
        base.push(f64::from(empty.run(&frames[0].1, args.repeat)));
        for (fi, (_, frame)) in frames.iter().enumerate() {
            for (pi, prog) in [PROG_INGRESS, PROG_EGRESS].into_iter().enumerate() {
                for k in 0..n {
                    let v = (round + fi + k) % n;
                    let p: &aya::programs::SchedClassifier = loaded[v]
                        .2
                        .program(prog)
                        .expect("loaded above")
                        .try_into()
                        .expect("a classifier");
                    let fd = p.fd().expect("program fd");
                    let r = portwatch::capture::ebpf::prog_test_run(fd.as_fd(), frame, args.repeat)
                        .expect("BPF_PROG_TEST_RUN");
                    assert_eq!(r.retval, -1, "the program passes packets on");
                    results[v][fi][pi].push(f64::from(r.duration_ns));
                }
            }
        }
    }
    let base = median(base);
    println!(
        "## Variants (BPF_PROG_TEST_RUN, repeat {}, {} interleaved rounds; empty program {base:.0} ns)",
        args.repeat, args.rounds
    );
    println!();
    println!(
        "\"vs first\": the median over rounds of this variant's figure minus the first variant's \
         in the same round (they ran back to back, in the same speed phase of the machine)."
    );
    println!();
    println!(
        "| variant | frame | ingress median | egress median | ingress net | egress net | ingress min | egress min | ingress vs first | egress vs first |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    for (v, (path, _, _)) in loaded.iter().enumerate() {
        let name = std::path::Path::new(path)
            .file_stem()
            .map_or(path.clone(), |s| s.to_string_lossy().into_owned());
        for (fi, (frame, _)) in frames.iter().enumerate() {
            let [i, e] = &results[v][fi];
            let (mi, me) = (median(i.clone()), median(e.clone()));
            let vs = |p: usize| -> f64 {
                median(
                    results[v][fi][p]
                        .iter()
                        .zip(&results[0][fi][p])
                        .map(|(a, b)| a - b)
                        .collect(),
                )
            };
            println!(
                "| {name} | {frame} | {mi:.0} | {me:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:+.0} | {:+.0} |",
                mi - base,
                me - base,
                min(i),
                min(e),
                vs(0),
                vs(1)
            );
        }
    }
}

/// BPF_PROG_TEST_RUN over representative frames; the program is loaded but not attached.
fn per_packet_cost(args: &Args) {
    let pins = PinDir::new("bench").expect("pin dir");
    let mut b = EbpfBackend::open(EbpfConfig {
        ifaces: Some(Vec::new()),
        flow_capacity: 65_536,
        pin_dir: pins.path.clone(),
        ..EbpfConfig::default()
    })
    .expect("load the eBPF programs");
    let frames = bench_frames();
    // What BPF_PROG_TEST_RUN's loop costs by itself: a program that only returns.
    let empty = EmptyProgram::load().expect("load a two-instruction classifier");
    let base = median(
        (0..args.rounds)
            .map(|_| f64::from(empty.run(&frames[0].1, args.repeat)))
            .collect(),
    );
    println!(
        "## Per-packet cost (BPF_PROG_TEST_RUN, repeat {}, median of {} runs)",
        args.repeat, args.rounds
    );
    println!();
    println!(
        "An empty program (return only) measures {base:.0} ns/pkt: the test loop's own cost, \
         included in every figure below; \"net\" subtracts it."
    );
    println!();
    println!(
        "| frame | ingress ns/pkt | egress ns/pkt | ingress net | egress net | ingress min | egress min |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, frame) in &frames {
        let mut cols = Vec::new();
        let mut mins = Vec::new();
        for prog in [PROG_INGRESS, PROG_EGRESS] {
            let runs: Vec<f64> = (0..args.rounds)
                .map(|_| {
                    let r = b
                        .test_run(prog, frame, args.repeat)
                        .expect("BPF_PROG_TEST_RUN");
                    assert_eq!(
                        r.retval, -1,
                        "the program passes packets on (TC_ACT_UNSPEC)"
                    );
                    f64::from(r.duration_ns)
                })
                .collect();
            mins.push(runs.iter().copied().fold(f64::INFINITY, f64::min));
            cols.push(median(runs));
        }
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            cols[0],
            cols[1],
            cols[0] - base,
            cols[1] - base,
            mins[0],
            mins[1]
        );
    }
    println!();
}

/// A two-instruction `sched_cls` program (`r0 = -1; exit`), loaded with a raw `bpf(2)` call:
/// the baseline of BPF_PROG_TEST_RUN's own per-repetition cost.
struct EmptyProgram(std::os::fd::OwnedFd);

impl EmptyProgram {
    fn load() -> std::io::Result<Self> {
        #[repr(C)]
        struct ProgLoad {
            prog_type: u32,
            insn_cnt: u32,
            insns: u64,
            license: u64,
            log_level: u32,
            log_size: u32,
            log_buf: u64,
            kern_version: u32,
            prog_flags: u32,
        }
        // BPF_MOV64_IMM(r0, -1); BPF_EXIT.
        let insns: [u64; 2] = [(0xffff_ffff_u64 << 32) | 0xb7, 0x95];
        let license = b"GPL\0";
        let attr = ProgLoad {
            prog_type: 3, // BPF_PROG_TYPE_SCHED_CLS
            insn_cnt: 2,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 0,
            log_size: 0,
            log_buf: 0,
            kern_version: 0,
            prog_flags: 0,
        };
        // SAFETY: BPF_PROG_LOAD (5) with a live, properly sized prefix of `union bpf_attr`.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                5,
                &raw const attr,
                std::mem::size_of::<ProgLoad>(),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new fd that nothing else owns.
        Ok(Self(unsafe {
            std::os::fd::FromRawFd::from_raw_fd(fd as i32)
        }))
    }

    /// Mean ns per repetition over `repeat` runs on `frame`.
    fn run(&self, frame: &[u8], repeat: u32) -> u32 {
        use std::os::fd::AsFd;
        portwatch::capture::ebpf::prog_test_run(self.0.as_fd(), frame, repeat)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of the empty program: {e}"))
            .duration_ns
    }
}

/// One rate run.
#[derive(Clone, Copy)]
struct Rate {
    sent: f64,
    received: f64,
    /// CPU time of the sending thread per datagram sent, in ns. On a veth the receive path
    /// (a's ingress hook included) runs in the sender's softirq, on the sender's CPU, so this
    /// is the whole path's cost per packet, and unlike a rate it does not count time the
    /// hypervisor took away.
    cpu_ns: f64,
}

/// One figure of a [`Rate`].
type RateField = fn(&Rate) -> f64;

/// CPU time of the calling thread, in ns.
fn thread_cpu_ns() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime into a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}

/// Small UDP datagrams from namespace b to a for `seconds`.
fn blast(link: &Link, rx: &Arc<UdpSocket>, seconds: f64, payload: usize) -> Rate {
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let r = {
        let (rx, stop, received) = (rx.clone(), stop.clone(), received.clone());
        std::thread::spawn(move || {
            pin_cpu(1);
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if rx.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let dst: SocketAddr = (link.a_v4, 9999).into();
    let src = link.b_v4;
    let start_rx = received.load(Ordering::Relaxed);
    let (sent, elapsed, cpu) = link.b.run(move || {
        pin_cpu(0);
        let tx = UdpSocket::bind((src, 0)).expect("bind");
        tx.connect(dst).expect("connect");
        let buf = vec![0u8; payload];
        // sendmmsg: 64 datagrams per system call, so that the kernel path (where the programs
        // run) and not the system call dominates the sender's time.
        const BATCH: usize = 64;
        let mut iov: Vec<libc::iovec> = (0..BATCH)
            .map(|_| libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            })
            .collect();
        // SAFETY: mmsghdr is plain data; every pointer set below outlives the calls.
        let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
            .map(|i| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = &raw mut iov[i];
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&tx);
        let c0 = thread_cpu_ns();
        let t0 = Instant::now();
        let mut n = 0u64;
        let end = Duration::from_secs_f64(seconds);
        while t0.elapsed() < end {
            // SAFETY: msgs/iov/buf are live for the call.
            let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, 0) };
            if rc > 0 {
                n += rc as u64;
            }
        }
        (n, t0.elapsed().as_secs_f64(), thread_cpu_ns() - c0)
    });
    // Let the receiver drain what is queued, then stop it.
    std::thread::sleep(Duration::from_millis(200));
    let got = received.load(Ordering::Relaxed) - start_rx;
    stop.store(true, Ordering::Relaxed);
    let _ = r.join();
    Rate {
        sent: sent as f64 / elapsed,
        received: got as f64 / elapsed,
        cpu_ns: cpu / sent.max(1) as f64,
    }
}

fn pin_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity on the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// portwatch's embedded object loaded as the agent loads it (default table sizes), programs
/// verified, nothing attached.
fn load_portwatch(pins: &PinDir) -> aya::Ebpf {
    use portwatch_common as common;
    let slots = common::DEFAULT_PORT_SLOTS;
    let mask = slots - 1;
    let mut ebpf = aya::EbpfLoader::new()
        .default_map_pin_directory(&pins.path)
        .map_max_entries(common::MAP_FLOWS, common::DEFAULT_FLOW_CAPACITY)
        .map_max_entries(common::MAP_PORT_TOTALS, slots)
        .override_global(common::GLOBAL_PORT_SLOT_MASK, &mask, true)
        .load(portwatch::capture::ebpf::object())
        .expect("load portwatch's eBPF object");
    for prog in [PROG_INGRESS, PROG_EGRESS] {
        classifier(&mut ebpf, prog).load().expect("verifier");
    }
    ebpf
}

fn classifier<'a>(ebpf: &'a mut aya::Ebpf, name: &str) -> &'a mut aya::programs::SchedClassifier {
    ebpf.program_mut(name)
        .unwrap_or_else(|| panic!("no program {name}"))
        .try_into()
        .expect("a classifier")
}

/// Interleaved runs on a's veth: nothing attached; a one-instruction classic BPF filter on the
/// clsact ingress hook (what any TC observer pays before its program does anything); and
/// portwatch's programs (TCX ingress and egress).
fn udp_rate(args: &Args) {
    let link = Link::new().expect("namespaces");
    let a4 = link.a_v4;
    let rx = Arc::new(link.a.run(move || {
        let s = UdpSocket::bind((a4, 9999)).expect("bind receiver");
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        s
    }));
    let pins = PinDir::new("benchrate").expect("pin dir");
    // portwatch's programs, loaded (and verified) once, with their maps pinned as the agent pins
    // them: each portwatch run attaches them with TCX on a's ingress and egress, as the agent
    // does, and detaches them afterwards, so the runs follow each other closely.
    let mut loaded = Some(load_portwatch(&pins));
    // Warm-up (ARP, caches).
    blast(&link, &rx, 0.3, args.payload);
    let mut rounds: Vec<[Rate; 3]> = Vec::new();
    // One configuration's run: 0 nothing, 1 the trivial filter, 2 portwatch.
    let mut run = |which: usize| -> Rate {
        match which {
            0 => blast(&link, &rx, args.seconds, args.payload),
            1 => {
                link.a
                    .exec("tc", &["qdisc", "add", "dev", &link.a_if, "clsact"])
                    .expect("clsact");
                link.a
                    .exec(
                        "tc",
                        &[
                            "filter",
                            "add",
                            "dev",
                            &link.a_if,
                            "ingress",
                            "bpf",
                            "bytecode",
                            "1,6 0 0 0,",
                        ],
                    )
                    .expect("trivial filter");
                let r = blast(&link, &rx, args.seconds, args.payload);
                link.a
                    .exec("tc", &["qdisc", "del", "dev", &link.a_if, "clsact"])
                    .expect("remove clsact");
                r
            }
            _ => {
                let (ebpf, ids) = {
                    let ebpf = loaded.take().expect("portwatch is loaded");
                    let ifname = link.a_if.clone();
                    link.a.run(move || {
                        let mut ebpf = ebpf;
                        let ids = [
                            (PROG_INGRESS, TcAttachType::Ingress),
                            (PROG_EGRESS, TcAttachType::Egress),
                        ]
                        .map(|(name, hook)| classifier(&mut ebpf, name).attach(&ifname, hook));
                        (ebpf, ids)
                    })
                };
                let ids = ids.map(|r| r.expect("attach portwatch"));
                let r = blast(&link, &rx, args.seconds, args.payload);
                let ebpf = link.a.run(move || {
                    let mut ebpf = ebpf;
                    for (name, id) in [PROG_INGRESS, PROG_EGRESS].into_iter().zip(ids) {
                        classifier(&mut ebpf, name)
                            .detach(id)
                            .expect("detach portwatch");
                    }
                    ebpf
                });
                loaded = Some(ebpf);
                r
            }
        }
    };
    for round in 0..args.rate_rounds {
        // The order rotates from round to round, so that no configuration always runs first
        // (or always right after another one).
        let mut got = [None; 3];
        for k in 0..3 {
            let which = (round + k) % 3;
            got[which] = Some(run(which));
        }
        let [none, hook, with] = got.map(|r| r.expect("every configuration ran"));
        eprintln!(
            "round {round}: nothing {:.0}/{:.0}/{:.0}, trivial filter {:.0}/{:.0}/{:.0}, portwatch {:.0}/{:.0}/{:.0} (sent/s, received/s, sender CPU ns/packet)",
            none.sent,
            none.received,
            none.cpu_ns,
            hook.sent,
            hook.received,
            hook.cpu_ns,
            with.sent,
            with.received,
            with.cpu_ns
        );
        rounds.push([none, hook, with]);
    }
    let col = |i: usize, f: RateField| -> Vec<f64> { rounds.iter().map(|r| f(&r[i])).collect() };
    // Each round runs the three back to back: per-round ratios cancel the host's slow drifts,
    // which a ratio of medians does not.
    let ratios = |i: usize, j: usize, f: RateField| -> Vec<f64> {
        col(i, f)
            .iter()
            .zip(col(j, f))
            .map(|(a, b)| a / b)
            .collect()
    };
    let paired = |i: usize, j: usize, f: RateField| -> f64 { median(ratios(i, j, f)) };
    println!(
        "## UDP rate, {}-byte payloads, namespace b -> a over veth ({} interleaved rounds of {} s, medians)",
        args.payload, args.rate_rounds, args.seconds
    );
    println!();
    println!(
        "| | nothing attached | trivial clsact filter | portwatch | portwatch / nothing | portwatch / trivial filter |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let rows: [(&str, RateField); 3] = [
        ("sent packets/s", |r| r.sent),
        ("received packets/s", |r| r.received),
        ("sender CPU ns/packet", |r| r.cpu_ns),
    ];
    for (name, f) in rows {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.3} | {:.3} |",
            median(col(0, f)),
            median(col(1, f)),
            median(col(2, f)),
            paired(2, 0, f),
            paired(2, 1, f),
        );
    }
    println!();
    println!(
        "Spread of the per-round ratios portwatch / nothing over all {} rounds (none left out): \
         quartiles and extremes.",
        rounds.len()
    );
    println!();
    println!("| | min | 25% | median | 75% | max |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, f) in rows {
        let r = ratios(2, 0, f);
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            quantile(r.clone(), 0.0),
            quantile(r.clone(), 0.25),
            quantile(r.clone(), 0.5),
            quantile(r.clone(), 0.75),
            quantile(r, 1.0)
        );
    }
    let extra: Vec<f64> = rounds.iter().map(|r| r[2].cpu_ns - r[0].cpu_ns).collect();
    println!();
    println!(
        "portwatch adds {:.0} ns of CPU per packet on the path (median of per-round differences).",
        median(extra)
    );
    println!();
    println!("(ratios are medians of the per-round ratios)");
}
