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
    /// `--no-per-packet`: only the packet rate.
    skip_per_packet: bool,
    /// eBPF objects to compare (`--object PATH`, repeatable): only the per-packet cost of each,
    /// interleaved, is measured.
    objects: Vec<String>,
    /// `--rate-only CONFIG`: hold one rate configuration for `--seconds` (diagnostics).
    rate_only: Option<String>,
    /// `--rate-object PATH` (repeatable): the rate part attaches these eBPF objects (built
    /// variants), each a configuration of its own, instead of the embedded one.
    rate_objects: Vec<String>,
    /// `--bpf-stats` (with `--rate-only portwatch`): the programs' run-time statistics.
    bpf_stats: bool,
    /// `--toggle-seconds S`: the toggled-stream rate comparison for S seconds (0: not run).
    toggle_seconds: f64,
    /// `--toggle-ms T`: its segment length.
    toggle_ms: u64,
    /// `--toggle-log PREFIX`: writes each toggled stream's segments to PREFIX.NAME.
    toggle_log: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        repeat: 2_000_000,
        rounds: 7,
        rate_rounds: 21,
        seconds: 1.0,
        payload: 18,
        skip_rate: false,
        skip_per_packet: false,
        objects: Vec::new(),
        rate_only: None,
        rate_objects: Vec::new(),
        bpf_stats: false,
        toggle_seconds: 0.0,
        toggle_ms: 100,
        toggle_log: None,
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
            "--no-per-packet" => a.skip_per_packet = true,
            "--object" => a.objects.push(val()),
            "--rate-only" => a.rate_only = Some(val()),
            "--rate-object" => a.rate_objects.push(val()),
            "--bpf-stats" => a.bpf_stats = true,
            "--toggle-seconds" => a.toggle_seconds = val().parse().expect("--toggle-seconds S"),
            "--toggle-ms" => a.toggle_ms = val().parse().expect("--toggle-ms MS"),
            "--toggle-log" => a.toggle_log = Some(val()),
            other => panic!(
                "unknown argument {other}; use --repeat N --rounds N --rate-rounds N --seconds S --payload B --no-rate --no-per-packet --object PATH --rate-only nothing|filter|portwatch --rate-object PATH --bpf-stats --toggle-seconds S --toggle-ms MS --toggle-log PREFIX"
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
    if let Some(config) = &args.rate_only {
        rate_only(&args, config);
        return;
    }
    if !args.objects.is_empty() {
        compare_objects(&args);
        return;
    }
    if !args.skip_per_packet {
        per_packet_cost(&args);
    }
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

    /// A TCX link of the program on `ifindex` (`attach_type` BPF_TCX_INGRESS or
    /// BPF_TCX_EGRESS), appended after the programs already attached: BPF_LINK_CREATE.
    fn tcx_link(&self, ifindex: u32, attach_type: u32) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsRawFd;
        #[repr(C)]
        struct LinkCreate {
            prog_fd: u32,
            target_ifindex: u32,
            attach_type: u32,
            flags: u32,
            relative_fd: u32,
            _pad: u32,
            expected_revision: u64,
        }
        let attr = LinkCreate {
            prog_fd: self.0.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type,
            flags: 0,
            relative_fd: 0,
            _pad: 0,
            expected_revision: 0,
        };
        // SAFETY: BPF_LINK_CREATE (28) with a live, properly sized prefix of `union bpf_attr`.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                28,
                &raw const attr,
                std::mem::size_of::<LinkCreate>(),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new fd that nothing else owns.
        Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) })
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
    /// Times the receiving thread went to sleep (voluntary context switches) per datagram
    /// received: each is a wake-up the sender's softirq pays for (an inter-processor interrupt,
    /// a VM exit on this machine), counted in `cpu_ns`.
    rx_sleeps: f64,
}

/// One figure of a [`Rate`].
type RateField = fn(&Rate) -> f64;

/// `clock` in ns.
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime into a live timespec.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time of the calling thread, in ns.
fn thread_cpu_ns() -> f64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID) as f64
}

/// CLOCK_MONOTONIC in ns (what `perf record -k mono` stamps samples with).
fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Voluntary context switches of the calling thread so far.
fn thread_sleeps() -> i64 {
    // SAFETY: getrusage into a zeroed, live rusage.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &raw mut ru);
        ru.ru_nvcsw
    }
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
            let s0 = thread_sleeps();
            while !stop.load(Ordering::Relaxed) {
                if rx.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            thread_sleeps() - s0
        })
    };
    let dst: SocketAddr = (link.a_v4, 9999).into();
    let src = link.b_v4;
    let start_rx = received.load(Ordering::Relaxed);
    let (sent, elapsed, cpu) = link.b.run(move || {
        pin_cpu(0);
        let mut tx = Batch::new(src, dst, payload);
        let c0 = thread_cpu_ns();
        let t0 = Instant::now();
        let mut n = 0u64;
        let end = Duration::from_secs_f64(seconds);
        while t0.elapsed() < end {
            let rc = tx.send();
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
    let sleeps = r.join().expect("receiver thread");
    Rate {
        sent: sent as f64 / elapsed,
        received: got as f64 / elapsed,
        cpu_ns: cpu / sent.max(1) as f64,
        rx_sleeps: sleeps as f64 / got.max(1) as f64,
    }
}

/// A connected UDP socket that sends `BATCH` datagrams of one payload per `sendmmsg` call, so
/// that the kernel path (where the programs run) and not the system call dominates the
/// sender's time.
struct Batch {
    tx: UdpSocket,
    // `msgs` points into `iov`, `iov` into `buf`: heap buffers that stay put while the struct
    // moves, and are freed with it.
    _buf: Vec<u8>,
    _iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl Batch {
    const BATCH: usize = 64;

    fn new(src: std::net::Ipv4Addr, dst: SocketAddr, payload: usize) -> Self {
        let tx = UdpSocket::bind((src, 0)).expect("bind");
        tx.connect(dst).expect("connect");
        let buf = vec![0u8; payload];
        let mut iov: Vec<libc::iovec> = (0..Self::BATCH)
            .map(|_| libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            })
            .collect();
        // SAFETY: mmsghdr is plain data; every pointer set below outlives the calls.
        let msgs: Vec<libc::mmsghdr> = (0..Self::BATCH)
            .map(|i| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = &raw mut iov[i];
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        Self {
            tx,
            _buf: buf,
            _iov: iov,
            msgs,
        }
    }

    /// One `sendmmsg` call: the datagrams sent, or -1.
    fn send(&mut self) -> i32 {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.tx);
        // SAFETY: msgs, iov and buf are owned by self and live for the call.
        unsafe { libc::sendmmsg(fd, self.msgs.as_mut_ptr(), Self::BATCH as u32, 0) }
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

/// portwatch's object loaded as the agent loads it (default table sizes), programs verified,
/// nothing attached: the embedded object, or the eBPF object file `path` (a built variant).
fn load_portwatch(pins: &PinDir, path: Option<&str>) -> aya::Ebpf {
    use portwatch_common as common;
    let slots = common::DEFAULT_PORT_SLOTS;
    let mask = slots - 1;
    let mut loader = aya::EbpfLoader::new();
    loader
        .default_map_pin_directory(&pins.path)
        .map_max_entries(common::MAP_FLOWS, common::DEFAULT_FLOW_CAPACITY)
        .map_max_entries(common::MAP_PORT_TOTALS, slots)
        .override_global(common::GLOBAL_PORT_SLOT_MASK, &mask, true);
    let mut ebpf = match path {
        Some(path) => loader
            .load_file(path)
            .unwrap_or_else(|e| panic!("loading {path}: {e}")),
        None => loader
            .load(portwatch::capture::ebpf::object())
            .expect("load portwatch's eBPF object"),
    };
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

/// The rate part's setup: namespaces, the receiving socket in a, and portwatch's programs
/// loaded (and verified) once, with their maps pinned as the agent pins them. Each portwatch run
/// attaches them with TCX on a's ingress and egress, as the agent does, and detaches them
/// afterwards, so the runs follow each other closely. With `--rate-object` (repeatable) each
/// given object is a configuration of its own instead of the embedded one.
struct RateRig {
    link: Link,
    rx: Arc<UdpSocket>,
    _pins: Vec<PinDir>,
    /// portwatch's object(s): configuration `2 + i` attaches `loaded[i]`.
    loaded: Vec<Option<aya::Ebpf>>,
    /// The configurations' names: "nothing", "filter", then "portwatch" or the objects' names.
    names: Vec<String>,
    payload: usize,
}

impl RateRig {
    fn new(args: &Args) -> Self {
        let link = Link::new().expect("namespaces");
        let a4 = link.a_v4;
        let rx = Arc::new(link.a.run(move || {
            let s = UdpSocket::bind((a4, 9999)).expect("bind receiver");
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            s
        }));
        let mut names = vec!["nothing".to_owned(), "filter".to_owned()];
        let mut pins = Vec::new();
        let mut loaded = Vec::new();
        let objects: Vec<Option<&str>> = if args.rate_objects.is_empty() {
            vec![None]
        } else {
            args.rate_objects.iter().map(|o| Some(o.as_str())).collect()
        };
        for path in objects {
            let dir = PinDir::new("benchrate").expect("pin dir");
            loaded.push(Some(load_portwatch(&dir, path)));
            pins.push(dir);
            names.push(path.map_or("portwatch".to_owned(), |p| {
                std::path::Path::new(p)
                    .file_stem()
                    .map_or(p.to_owned(), |s| s.to_string_lossy().into_owned())
            }));
        }
        let rig = Self {
            link,
            rx,
            _pins: pins,
            loaded,
            names,
            payload: args.payload,
        };
        // Warm-up (ARP, caches).
        blast(&rig.link, &rig.rx, 0.3, rig.payload);
        rig
    }

    /// One run of `seconds` in configuration `which`: 0 nothing attached, 1 the trivial clsact
    /// filter, 2 and up portwatch (`loaded[which - 2]`).
    fn run(&mut self, which: usize, seconds: f64) -> Rate {
        let link = &self.link;
        match which {
            0 => blast(link, &self.rx, seconds, self.payload),
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
                let r = blast(link, &self.rx, seconds, self.payload);
                link.a
                    .exec("tc", &["qdisc", "del", "dev", &link.a_if, "clsact"])
                    .expect("remove clsact");
                r
            }
            _ => {
                let slot = &mut self.loaded[which - 2];
                let (ebpf, ids) = {
                    let ebpf = slot.take().expect("portwatch is loaded");
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
                let r = blast(link, &self.rx, seconds, self.payload);
                let ebpf = link.a.run(move || {
                    let mut ebpf = ebpf;
                    for (name, id) in [PROG_INGRESS, PROG_EGRESS].into_iter().zip(ids) {
                        classifier(&mut ebpf, name)
                            .detach(id)
                            .expect("detach portwatch");
                    }
                    ebpf
                });
                *slot = Some(ebpf);
                r
            }
        }
    }
}

/// `--toggle-seconds S`: the rate with and without portwatch compared within one continuous
/// stream. The sender sends from b to a for `S` seconds while a controller thread in a attaches
/// portwatch's programs (TCX ingress and egress, as in the round-based part) for `--toggle-ms`
/// milliseconds, detaches them for as long, and so on. Every attach and detach opens a new
/// segment (a sequence number the sender and the receiver read before each call and each
/// datagram); segments during which the programs were being attached or detached are left
/// out. Adjacent segments (nothing, then portwatch) form a pair, and per-pair ratios are
/// reported: a pair spans a fraction of a second, so the machine's speed phases (minutes) and
/// the hypervisor's moves (seconds) fall on both of its halves alike, which the one-second runs
/// of the round-based part cannot ensure. For each configuration from 2 on.
fn toggle_rate(args: &Args, rig: &mut RateRig) {
    // First an empty program (`r0 = -1; exit`) attached the same way: what the two TCX hooks
    // cost by themselves, before a program does anything.
    let configs: Vec<Option<usize>> = std::iter::once(None)
        .chain((2..rig.names.len()).map(Some))
        .collect();
    for config in configs {
        let name = config.map_or("empty TCX program".to_owned(), |w| rig.names[w].clone());
        let log = args.toggle_log.as_ref().map(|p| {
            format!(
                "{p}.{}",
                config.map_or("empty-tcx", |w| rig.names[w].as_str())
            )
        });
        let hooked = match config {
            None => Hooked::Empty(EmptyProgram::load().expect("load the empty program")),
            Some(w) => Hooked::Portwatch(rig.loaded[w - 2].take().expect("portwatch is loaded")),
        };
        let (hooked, pairs) = toggle_once(
            rig,
            hooked,
            args.toggle_seconds,
            args.toggle_ms,
            log.as_deref(),
        );
        if let (Some(w), Hooked::Portwatch(ebpf)) = (config, hooked) {
            rig.loaded[w - 2] = Some(ebpf);
        }
        let n = pairs.len();
        let ratio = |f: fn(&(Rate, Rate)) -> f64| -> Vec<f64> { pairs.iter().map(f).collect() };
        let rx = ratio(|(a, b)| b.received / a.received);
        let tx = ratio(|(a, b)| b.sent / a.sent);
        let cpu = ratio(|(a, b)| b.cpu_ns - a.cpu_ns);
        let base_cpu = ratio(|(a, _)| a.cpu_ns);
        let base_rx = ratio(|(a, _)| a.received);
        println!(
            "## UDP rate toggled within one stream: {name} attached for {} ms, then nothing for {} ms ({} s, {n} pairs)",
            args.toggle_ms, args.toggle_ms, args.toggle_seconds
        );
        println!();
        println!("| per pair | min | 25% | median | 75% | max |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        for (label, v, digits) in [
            (format!("received packets/s {name} / nothing"), &rx, 3),
            (format!("sent packets/s {name} / nothing"), &tx, 3),
            (format!("sender CPU ns/packet {name} - nothing"), &cpu, 0),
            ("received packets/s, nothing".to_owned(), &base_rx, 0),
            ("sender CPU ns/packet, nothing".to_owned(), &base_cpu, 0),
        ] {
            let q = |x: f64| quantile(v.clone(), x);
            println!(
                "| {label} | {:.*} | {:.*} | {:.*} | {:.*} | {:.*} |",
                digits,
                q(0.0),
                digits,
                q(0.25),
                digits,
                q(0.5),
                digits,
                q(0.75),
                digits,
                q(1.0)
            );
        }
        // Standard error of a median, from the quartiles (normal approximation).
        let se = |v: &Vec<f64>| {
            1.2533 * (quantile(v.clone(), 0.75) - quantile(v.clone(), 0.25))
                / 1.349
                / (v.len() as f64).sqrt()
        };
        println!();
        println!(
            "median received ratio {:.4} (standard error about {:.4}); median extra CPU {:+.0} ns/packet (about {:.0})",
            median(rx.clone()),
            se(&rx),
            median(cpu.clone()),
            se(&cpu)
        );
        println!();
    }
}

/// One toggled stream for configuration `which`: (nothing, attached) figures of each pair.
fn toggle_once(
    rig: &mut RateRig,
    hooked: Hooked,
    seconds: f64,
    seg_ms: u64,
    log: Option<&str>,
) -> (Hooked, Vec<(Rate, Rate)>) {
    // Segment k: even k nothing attached, odd k attached; the sequence number is 2k while the
    // configuration is stable and 2k+1 while it changes.
    let max_seq = ((seconds * 1000.0 / seg_ms as f64) as usize + 4) * 2 + 4;
    let seq = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let received: Arc<Vec<AtomicU64>> = Arc::new((0..max_seq).map(|_| AtomicU64::new(0)).collect());
    let rx_thread = {
        let (rx, stop, received, seq) =
            (rig.rx.clone(), stop.clone(), received.clone(), seq.clone());
        std::thread::spawn(move || {
            pin_cpu(1);
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if rx.recv(&mut buf).is_ok() {
                    let s = seq.load(Ordering::Relaxed) as usize;
                    received[s.min(max_seq - 1)].fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let link = &rig.link;
    let dst: SocketAddr = (link.a_v4, 9999).into();
    let src = link.b_v4;
    let payload = rig.payload;
    let sender = {
        let (stop, seq) = (stop.clone(), seq.clone());
        link.b.spawn_thread(move || {
            pin_cpu(0);
            let mut tx = Batch::new(src, dst, payload);
            // Per sequence number: datagrams sent, CPU ns, wall ns.
            let mut sent = vec![0u64; max_seq];
            let mut cpu = vec![0f64; max_seq];
            let mut wall = vec![0f64; max_seq];
            let mut cur = seq.load(Ordering::Relaxed) as usize;
            let (mut c0, mut t0) = (thread_cpu_ns(), Instant::now());
            while !stop.load(Ordering::Relaxed) {
                let rc = tx.send();
                let s = (seq.load(Ordering::Relaxed) as usize).min(max_seq - 1);
                if rc > 0 {
                    // Counted in the segment that is current after the call: a call that
                    // straddles a change lands in the change's own (discarded) sequence number.
                    sent[s.max(cur)] += rc as u64;
                }
                if s != cur {
                    let (c1, t1) = (thread_cpu_ns(), Instant::now());
                    cpu[cur] += c1 - c0;
                    wall[cur] += (t1 - t0).as_secs_f64();
                    (c0, t0, cur) = (c1, t1, s);
                }
            }
            (sent, cpu, wall)
        })
    };
    // The controller, in namespace a (where the interface is), on the receiver's CPU.
    let ifname = link.a_if.clone();
    let controller = {
        let (stop, seq) = (stop.clone(), seq.clone());
        link.a.spawn_thread(move || {
            pin_cpu(1);
            let mut hooked = hooked;
            // Let the stream settle first (sequence 0 is discarded below).
            std::thread::sleep(Duration::from_millis(seg_ms));
            let t0 = Instant::now();
            let mut s = 0u64;
            let seg = Duration::from_millis(seg_ms);
            // CLOCK_MONOTONIC of every change of sequence number (for `perf record -k mono`).
            let mut marks = vec![(0u64, monotonic_ns())];
            let mark = |marks: &mut Vec<(u64, u64)>, s: u64| {
                seq.store(s, Ordering::Relaxed);
                marks.push((s, monotonic_ns()));
            };
            while t0.elapsed() < Duration::from_secs_f64(seconds) && (s as usize) + 4 < max_seq {
                // Enter the change, attach, leave the change: attached and stable.
                s += 1;
                mark(&mut marks, s);
                let attached = hooked.attach(&ifname);
                s += 1;
                mark(&mut marks, s);
                std::thread::sleep(seg);
                s += 1;
                mark(&mut marks, s);
                hooked.detach(attached);
                s += 1;
                mark(&mut marks, s);
                std::thread::sleep(seg);
            }
            // A last change closes the final segment.
            mark(&mut marks, s + 1);
            std::thread::sleep(Duration::from_millis(5));
            stop.store(true, Ordering::Relaxed);
            (hooked, s, marks)
        })
    };
    let (hooked, last, marks) = controller.join().expect("controller");
    let (sent, cpu, wall) = sender.join().expect("sender");
    // The receiver's queue is drained within a few ms; it stops at its next timeout.
    std::thread::sleep(Duration::from_millis(100));
    let _ = rx_thread.join();
    if let Some(path) = log {
        // One line per sequence number: seq, CLOCK_MONOTONIC ns at its start, datagrams sent in
        // it, the sender's CPU ns in it.
        let mut text = String::new();
        for &(k, t) in &marks {
            let k = k as usize;
            if k < max_seq {
                text += &format!("{k} {t} {} {:.0}\n", sent[k], cpu[k]);
            }
        }
        std::fs::write(path, text).expect("write --toggle-log");
    }
    let rate = |k: usize| Rate {
        sent: sent[k] as f64 / wall[k],
        received: received[k].load(Ordering::Relaxed) as f64 / wall[k],
        cpu_ns: cpu[k] / sent[k].max(1) as f64,
        rx_sleeps: 0.0,
    };
    // Stable segments: nothing at 4j (j >= 1; 0 was the settling time), attached at 4j + 2.
    // Pair each attached segment with the nothing segment before it.
    let last = last as usize;
    let pairs = (1..)
        .map(|j| 4 * j)
        .take_while(|&k| k + 2 <= last)
        .filter(|&k| wall[k] > 0.0 && wall[k + 2] > 0.0)
        .map(|k| (rate(k), rate(k + 2)))
        .collect();
    (hooked, pairs)
}

/// What the toggled stream attaches: portwatch's programs, or an empty program on both hooks.
enum Hooked {
    Portwatch(aya::Ebpf),
    Empty(EmptyProgram),
}

/// The attachments of a [`Hooked`], ingress then egress.
enum Attached {
    Portwatch([aya::programs::tc::SchedClassifierLinkId; 2]),
    /// TCX links: closing the fd detaches.
    Empty([std::os::fd::OwnedFd; 2]),
}

impl Hooked {
    /// Attaches with TCX on `ifname`'s ingress and egress (after programs already there), in
    /// the calling thread's namespace.
    fn attach(&mut self, ifname: &str) -> Attached {
        match self {
            Hooked::Portwatch(ebpf) => Attached::Portwatch(
                [
                    (PROG_INGRESS, TcAttachType::Ingress),
                    (PROG_EGRESS, TcAttachType::Egress),
                ]
                .map(|(name, hook)| {
                    classifier(ebpf, name)
                        .attach(ifname, hook)
                        .expect("attach portwatch")
                }),
            ),
            Hooked::Empty(p) => {
                let name = std::ffi::CString::new(ifname).expect("interface name");
                // SAFETY: a NUL-terminated name.
                let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
                assert!(ifindex != 0, "no interface {ifname}");
                // BPF_TCX_INGRESS, BPF_TCX_EGRESS.
                Attached::Empty([46, 47].map(|hook| {
                    p.tcx_link(ifindex, hook)
                        .unwrap_or_else(|e| panic!("attach the empty program: {e}"))
                }))
            }
        }
    }

    fn detach(&mut self, a: Attached) {
        match (self, a) {
            (Hooked::Portwatch(ebpf), Attached::Portwatch(ids)) => {
                for (name, id) in [PROG_INGRESS, PROG_EGRESS].into_iter().zip(ids) {
                    classifier(ebpf, name).detach(id).expect("detach portwatch");
                }
            }
            (_, Attached::Empty(links)) => drop(links),
            (Hooked::Empty(_), Attached::Portwatch(_)) => {
                unreachable!("attached by the same Hooked")
            }
        }
    }
}

/// `--rate-only CONFIG`: holds one configuration of the rate part (`nothing`, `filter` or
/// `portwatch`) for `--seconds`, once, and prints its figures: a diagnostic mode, to profile the
/// sender's CPU (`perf record -C 0`) while the path runs. With `--bpf-stats` (portwatch only) the
/// kernel's run-time statistics are enabled during the run, and the programs' mean run time on
/// the real path is printed next to the same statistic over `BPF_PROG_TEST_RUN` of a frame like
/// the real ones (same instrument on both paths), with the programs' health counters.
fn rate_only(args: &Args, config: &str) {
    let mut rig = RateRig::new(args);
    let which = rig
        .names
        .iter()
        .position(|c| c == config)
        .unwrap_or_else(|| panic!("--rate-only takes one of {:?}, not {config}", rig.names));
    let stats = args
        .bpf_stats
        .then(|| aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS"));
    let before = prog_stats(&mut rig, which);
    let ids: Vec<u32> = {
        let ebpf = rig.loaded[which.max(2) - 2].as_mut().expect("loaded");
        [PROG_INGRESS, PROG_EGRESS]
            .map(|prog| classifier(ebpf, prog).info().expect("program info").id())
            .to_vec()
    };
    eprintln!(
        "rate-only {config}: running for {} s (portwatch's program ids {ids:?})",
        args.seconds
    );
    let r = rig.run(which, args.seconds);
    println!(
        "{config}: sent {:.0}/s, received {:.0}/s, sender CPU {:.0} ns/packet, receiver sleeps {:.3}/packet",
        r.sent, r.received, r.cpu_ns, r.rx_sleeps
    );
    if stats.is_none() {
        return;
    }
    let after = prog_stats(&mut rig, which);
    for (i, prog) in [PROG_INGRESS, PROG_EGRESS].into_iter().enumerate() {
        let (t, n) = (after[i].0 - before[i].0, after[i].1 - before[i].1);
        println!(
            "{prog} on the real path: {n} runs, {:.1} ns/run (run-time statistics)",
            t as f64 / n.max(1) as f64
        );
    }
    // The same statistic over BPF_PROG_TEST_RUN, on a frame like the real ones (the rig's
    // addresses and ports, the same payload).
    let fb = FrameBuilder {
        dst_mac: [2, 0, 0, 0, 0, 1],
        src_mac: [2, 0, 0, 0, 0, 2],
        vlans: Vec::new(),
    };
    let pl = vec![0u8; args.payload];
    let frame = fb.ipv4(
        rig.link.b_v4,
        rig.link.a_v4,
        &L4::Udp {
            sport: 40000,
            dport: 9999,
            payload: &pl,
        },
        &V4Opts::default(),
    );
    let ebpf = rig.loaded[which.max(2) - 2].as_mut().expect("loaded");
    for prog in [PROG_INGRESS, PROG_EGRESS] {
        use std::os::fd::AsFd;
        let p = classifier(ebpf, prog);
        let i0 = p.info().expect("program info");
        let tr = portwatch::capture::ebpf::prog_test_run(
            p.fd().expect("fd").as_fd(),
            &frame,
            args.repeat,
        )
        .expect("BPF_PROG_TEST_RUN");
        let i1 = p.info().expect("program info");
        let t = (i1.run_time() - i0.run_time()).as_nanos() as f64;
        let n = i1.run_count() - i0.run_count();
        println!(
            "{prog} under BPF_PROG_TEST_RUN: {n} runs, {:.1} ns/run (run-time statistics; the test \
             loop's own figure {} ns/run); jitted {} bytes, {} instructions verified",
            t / n.max(1) as f64,
            tr.duration_ns,
            i1.size_jitted(),
            i1.verified_instruction_count().unwrap_or(0)
        );
    }
    let counters: aya::maps::PerCpuArray<_, u64> = aya::maps::PerCpuArray::try_from(
        ebpf.map(portwatch_common::MAP_COUNTERS)
            .expect("counters map"),
    )
    .expect("a per-CPU array");
    let names = [
        "packets",
        "flow_full",
        "flow_err",
        "port_full",
        "port_err",
        "malformed",
        "truncated",
        "non_ip",
        "fragments",
        "vlan",
        "pulled",
        "pull_failed",
        "ext_limit",
    ];
    let line: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let v: u64 = counters
                .get(&(i as u32), 0)
                .map(|c| c.iter().sum())
                .unwrap_or(0);
            format!("{n} {v}")
        })
        .collect();
    println!(
        "health counters (all CPUs, real path and test runs): {}",
        line.join(", ")
    );
    drop(stats);
}

/// (run time in ns, run count) of portwatch's ingress and egress programs (of the object that
/// configuration `which` attaches; the first one for the others).
fn prog_stats(rig: &mut RateRig, which: usize) -> [(u64, u64); 2] {
    let ebpf = rig.loaded[which.max(2) - 2].as_mut().expect("loaded");
    [PROG_INGRESS, PROG_EGRESS].map(|prog| {
        let i = classifier(ebpf, prog).info().expect("program info");
        (i.run_time().as_nanos() as u64, i.run_count())
    })
}

/// Interleaved runs on a's veth: nothing attached; a one-instruction classic BPF filter on the
/// clsact ingress hook (what any TC observer pays before its program does anything); and
/// portwatch's programs (TCX ingress and egress), or each `--rate-object`.
fn udp_rate(args: &Args) {
    let mut rig = RateRig::new(args);
    if args.toggle_seconds > 0.0 {
        toggle_rate(args, &mut rig);
    }
    if args.rate_rounds == 0 {
        return;
    }
    let names = rig.names.clone();
    let n = names.len();
    let mut rounds: Vec<Vec<Rate>> = Vec::new();
    for round in 0..args.rate_rounds {
        // The order rotates from round to round, so that no configuration always runs first
        // (or always right after another one).
        let mut got = vec![None; n];
        for k in 0..n {
            let which = (round + k) % n;
            got[which] = Some(rig.run(which, args.seconds));
        }
        let got: Vec<Rate> = got
            .into_iter()
            .map(|r| r.expect("every configuration ran"))
            .collect();
        let line: Vec<String> = names
            .iter()
            .zip(&got)
            .map(|(name, r)| {
                format!(
                    "{name} {:.0}/{:.0}/{:.0}/{:.3}",
                    r.sent, r.received, r.cpu_ns, r.rx_sleeps
                )
            })
            .collect();
        eprintln!(
            "round {round}: {} (sent/s, received/s, sender CPU ns/packet, receiver sleeps/packet)",
            line.join(", ")
        );
        rounds.push(got);
    }
    let col = |i: usize, f: RateField| -> Vec<f64> { rounds.iter().map(|r| f(&r[i])).collect() };
    // Each round runs every configuration back to back: per-round ratios cancel the host's slow
    // drifts, which a ratio of medians does not.
    let ratios = |i: usize, j: usize, f: RateField| -> Vec<f64> {
        col(i, f)
            .iter()
            .zip(col(j, f))
            .map(|(a, b)| a / b)
            .collect()
    };
    let paired = |i: usize, j: usize, f: RateField| -> f64 { median(ratios(i, j, f)) };
    let shown = |i: usize| -> &str {
        match i {
            0 => "nothing attached",
            1 => "trivial clsact filter",
            _ => &names[i],
        }
    };
    println!(
        "## UDP rate, {}-byte payloads, namespace b -> a over veth ({} interleaved rounds of {} s, medians)",
        args.payload, args.rate_rounds, args.seconds
    );
    println!();
    let mut head = String::from("|");
    for i in 0..n {
        head += &format!(" | {}", shown(i));
    }
    for name in &names[2..] {
        head += &format!(" | {name} / nothing | {name} / trivial filter");
    }
    println!("{head} |");
    println!("| --- |{}", " ---: |".repeat(n + 2 * (n - 2)));
    let rows: [(&str, RateField); 3] = [
        ("sent packets/s", |r| r.sent),
        ("received packets/s", |r| r.received),
        ("sender CPU ns/packet", |r| r.cpu_ns),
    ];
    let all_rows: [(&str, RateField); 4] = [
        rows[0],
        rows[1],
        rows[2],
        ("receiver sleeps/packet", |r| r.rx_sleeps),
    ];
    for (name, f) in all_rows {
        let mut line = format!("| {name}");
        for i in 0..n {
            let m = median(col(i, f));
            line += &if m < 10.0 {
                format!(" | {m:.3}")
            } else {
                format!(" | {m:.0}")
            };
        }
        for i in 2..n {
            line += &format!(" | {:.3} | {:.3}", paired(i, 0, f), paired(i, 1, f));
        }
        println!("{line} |");
    }
    for (i, name) in names.iter().enumerate().skip(2) {
        println!();
        println!(
            "Spread of the per-round ratios {name} / nothing over all {} rounds (none left out): \
             quartiles and extremes.",
            rounds.len()
        );
        println!();
        println!("| | min | 25% | median | 75% | max |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        for (name, f) in rows {
            let r = ratios(i, 0, f);
            println!(
                "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                quantile(r.clone(), 0.0),
                quantile(r.clone(), 0.25),
                quantile(r.clone(), 0.5),
                quantile(r.clone(), 0.75),
                quantile(r, 1.0)
            );
        }
    }
    println!();
    for i in 1..n {
        let extra: Vec<f64> = rounds.iter().map(|r| r[i].cpu_ns - r[0].cpu_ns).collect();
        println!(
            "{} adds {:.0} ns of CPU per packet on the path (median of per-round differences).",
            shown(i),
            median(extra)
        );
    }
    println!();
    println!("(ratios are medians of the per-round ratios)");
}
