//! Helpers for portwatch's privileged end-to-end tests: throw-away network namespaces and veth
//! pairs behind RAII guards (removed even when a test panics), running code or commands inside
//! a namespace, raw Ethernet frames (VLAN tags included) and AF_PACKET senders, and scratch
//! bpffs pin directories; `cluster` holds the multi-node scenario harness; `browser` and
//! `report_fixture` drive headless Chromium over reports built in memory for the
//! (unprivileged) HTML report tests. Nothing here touches the host's own interfaces.
pub mod agent;
pub mod browser;
pub mod cluster;
pub mod report_fixture;

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// True when the test can run (root); otherwise prints why it is skipped.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!(
        "SKIPPED {test}: needs root (network namespaces, veth pairs and eBPF programs); \
         run `cargo xtask test` as root or with sudo"
    );
    false
}

/// A short name unique to this process and call (interface names are limited to 15 bytes).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// Runs a command and fails with its output when it does not succeed.
pub fn run(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out)
}

/// Runs `ip ARGS...`.
pub fn ip(args: &[&str]) -> io::Result<Output> {
    run(Command::new("ip").args(args))
}

/// Prefix of every namespace a test makes; the bpffs pin directories start with `pwtest-`.
/// Both end in `-PID-N` with the full process id, so that [`sweep_stale`] can tell whose they are.
const NETNS_PREFIX: &str = "pwt-";
const PIN_PREFIX: &str = "pwtest-";

/// `{prefix}{pid}-{n}`: unique to this process and call, with the whole process id (for names
/// without the 15-byte limit of interface names).
fn owned_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}-{n}", std::process::id())
}

/// The process id in a name made by [`owned_name`] with `prefix`.
fn owner(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let mut parts = rest.rsplitn(3, '-');
    parts.next()?.parse::<u32>().ok()?;
    parts.next()?.parse().ok()
}

/// Once per process: removes the namespaces and pin directories of test processes that are
/// gone (a test killed with SIGKILL never runs its guards' drop), and says so on stderr.
pub fn sweep_stale() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let dead =
            |pid: Option<u32>| pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists());
        if let Ok(rd) = std::fs::read_dir("/run/netns") {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if dead(owner(&name, NETNS_PREFIX)) {
                    eprintln!("removing network namespace {name} left by a killed test");
                    let _ = Command::new("ip").args(["netns", "del", &name]).output();
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir("/sys/fs/bpf") {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if dead(owner(&name, PIN_PREFIX)) {
                    eprintln!("removing /sys/fs/bpf/{name} left by a killed test");
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    });
}

/// A named network namespace, deleted (with every interface in it) on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace named `pwt-PREFIX-PID-N`, loopback up (after sweeping what killed
    /// tests left).
    pub fn new(prefix: &str) -> io::Result<Self> {
        sweep_stale();
        let name = owned_name(&format!("{NETNS_PREFIX}{prefix}-"));
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (`ip netns exec NAME ...`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace's bind mount.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs `ip ARGS...` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs `program ARGS...` inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args))
    }

    /// Spawns `program ARGS...` inside the namespace without waiting.
    pub fn spawn(&self, program: &str, args: &[&str]) -> io::Result<std::process::Child> {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .spawn()
    }

    /// A command that runs inside the namespace but keeps this process's mounts (unlike
    /// `ip netns exec`, which remounts /sys and so hides /sys/fs/bpf).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> io::Result<Command> {
        use std::os::unix::process::CommandExt;
        let ns = File::open(self.path())?;
        let mut cmd = Command::new(program);
        // SAFETY: setns(2) is async-signal-safe; `ns` stays open until the closure is dropped
        // with the Command.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// Runs `f` on a new thread that has entered the namespace, and returns its result.
    /// Sockets, interface lookups and netlink calls made by `f` happen inside the namespace.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        self.spawn_thread(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Like [`NetNs::run`] but returns the thread's handle.
    pub fn spawn_thread<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> std::thread::JoinHandle<R> {
        let path = self.path();
        std::thread::spawn(move || {
            enter(&path).expect("setns into the test namespace");
            f()
        })
    }
}

/// Names of the programs attached through TCX to `ifname` in `ns` (ingress, then egress), as
/// the kernel lists them (BPF_PROG_QUERY). bpftool 7.1 does not show TCX links.
pub fn tcx_programs(ns: &NetNs, ifname: &str) -> io::Result<Vec<String>> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let ifname = ifname.to_owned();
    ns.run(move || {
        let mut names = Vec::new();
        for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
            let (_, progs) = SchedClassifier::query_tcx(&ifname, hook).map_err(io::Error::other)?;
            names.extend(
                progs
                    .iter()
                    .map(|p| p.name_as_str().unwrap_or("?").to_owned()),
            );
        }
        Ok(names)
    })
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    // SAFETY: setns on an fd we own; affects only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Two namespaces joined by a veth pair, with IPv4 and IPv6 addresses on both ends:
/// `a` is 10.X.Y.1 / fd00:X:Y::1 on `a_if`, `b` is .2 / ::2 on `b_if`.
#[derive(Debug)]
pub struct Link {
    pub a: NetNs,
    pub b: NetNs,
    pub a_if: String,
    pub b_if: String,
    pub a_v4: Ipv4Addr,
    pub b_v4: Ipv4Addr,
    pub a_v6: Ipv6Addr,
    pub b_v6: Ipv6Addr,
}

impl Link {
    /// Creates both namespaces and the veth pair, addresses configured (IPv6 without DAD, so
    /// the addresses are usable at once), links up.
    pub fn new() -> io::Result<Self> {
        static SUBNET: AtomicU32 = AtomicU32::new(0);
        let a = NetNs::new("pwa")?;
        let b = NetNs::new("pwb")?;
        let a_if = unique("pva");
        let b_if = unique("pvb");
        let n = SUBNET.fetch_add(1, Ordering::Relaxed);
        let x = (std::process::id() % 200) as u8 + 20;
        let y = (n % 250) as u8;
        let a_v4 = Ipv4Addr::new(10, x, y, 1);
        let b_v4 = Ipv4Addr::new(10, x, y, 2);
        let a_v6: Ipv6Addr = format!("fd00:{x}:{y}::1")
            .parse()
            .map_err(io::Error::other)?;
        let b_v6: Ipv6Addr = format!("fd00:{x}:{y}::2")
            .parse()
            .map_err(io::Error::other)?;
        ip(&[
            "link",
            "add",
            &a_if,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            &b_if,
            "netns",
            b.name(),
        ])?;
        for (ns, ifn, v4, v6) in [(&a, &a_if, a_v4, a_v6), (&b, &b_if, b_v4, b_v6)] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifn])?;
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                ifn,
                "nodad",
            ])?;
            ns.ip(&["link", "set", ifn, "up"])?;
        }
        Ok(Self {
            a,
            b,
            a_if,
            b_if,
            a_v4,
            b_v4,
            a_v6,
            b_v6,
        })
    }

    /// The MAC address of `ifname` in namespace `ns`.
    pub fn mac(ns: &NetNs, ifname: &str) -> io::Result<[u8; 6]> {
        let out = ns.exec("cat", &[&format!("/sys/class/net/{ifname}/address")])?;
        parse_mac(String::from_utf8_lossy(&out.stdout).trim())
    }
}

/// Parses "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> io::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(io::Error::other(format!("not a MAC address: {s:?}")));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(io::Error::other)?;
    }
    Ok(mac)
}

/// A scratch directory on bpffs for pinned maps, removed (maps unpinned) on drop.
#[derive(Debug)]
pub struct PinDir {
    pub path: PathBuf,
}

impl PinDir {
    /// A fresh directory /sys/fs/bpf/pwtest-TEST-PID-N (after sweeping what killed tests left).
    pub fn new(test: &str) -> io::Result<Self> {
        sweep_stale();
        let path = Path::new("/sys/fs/bpf").join(owned_name(&format!("{PIN_PREFIX}{test}-")));
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Adds `data` to a one's-complement running sum (RFC 1071, not yet folded).
fn sum16(mut sum: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    sum
}

/// Internet checksum (RFC 1071) of `data` starting from `sum`.
fn csum(sum: u32, data: &[u8]) -> u16 {
    let mut sum = sum16(sum, data);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A transport header and payload.
#[derive(Clone, Debug)]
pub enum L4<'a> {
    /// UDP with a valid checksum.
    Udp {
        sport: u16,
        dport: u16,
        payload: &'a [u8],
    },
    /// TCP (20-byte header) with a valid checksum; `flags` is the flag byte.
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        payload: &'a [u8],
    },
    /// Any protocol, bytes as given.
    Raw { proto: u8, bytes: &'a [u8] },
}

impl L4<'_> {
    fn proto(&self) -> u8 {
        match self {
            L4::Udp { .. } => 17,
            L4::Tcp { .. } => 6,
            L4::Raw { proto, .. } => *proto,
        }
    }

    /// The bytes, checksummed with the pseudo-header sum `pseudo` (which excludes the length).
    fn bytes(&self, pseudo: u32) -> Vec<u8> {
        let (mut b, at) = match self {
            L4::Udp {
                sport,
                dport,
                payload,
            } => {
                let mut b = Vec::with_capacity(8 + payload.len());
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(payload);
                (b, 6)
            }
            L4::Tcp {
                sport,
                dport,
                flags,
                payload,
            } => {
                let mut b = Vec::with_capacity(20 + payload.len());
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&1u32.to_be_bytes());
                b.extend_from_slice(&0u32.to_be_bytes());
                b.extend_from_slice(&[0x50, *flags, 0xff, 0xff, 0, 0, 0, 0]);
                b.extend_from_slice(payload);
                (b, 16)
            }
            L4::Raw { bytes, .. } => return bytes.to_vec(),
        };
        let sum = pseudo + b.len() as u32 + u32::from(self.proto());
        let c = csum(sum, &b);
        let c = if c == 0 { 0xffff } else { c };
        b[at..at + 2].copy_from_slice(&c.to_be_bytes());
        b
    }
}

/// IPv4 header details beyond addresses.
#[derive(Clone, Debug, Default)]
pub struct V4Opts<'a> {
    /// Option bytes (padded with zeros to a multiple of 4).
    pub options: &'a [u8],
    /// Fragment offset in 8-byte units (non-zero: a later fragment, no transport header).
    pub frag_offset: u16,
    /// The more-fragments flag.
    pub more_fragments: bool,
    /// Overrides the IHL field (to build malformed headers).
    pub ihl: Option<u8>,
}

/// An IPv6 extension header.
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    /// Hop-by-hop options, `len8` extra 8-byte units (PadN filled).
    HopByHop { len8: u8 },
    /// Routing header (type 4, segments left 0), `len8` extra units.
    Routing { len8: u8 },
    /// Destination options, `len8` extra units.
    DstOpts { len8: u8 },
    /// Fragment header.
    Fragment { offset: u16, more: bool },
}

impl Ext {
    fn number(self) -> u8 {
        match self {
            Ext::HopByHop { .. } => 0,
            Ext::Routing { .. } => 43,
            Ext::Fragment { .. } => 44,
            Ext::DstOpts { .. } => 60,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            Ext::HopByHop { len8 } | Ext::DstOpts { len8 } | Ext::Routing { len8 } => {
                let total = 8 * (usize::from(len8) + 1);
                let mut b = vec![0u8; total];
                b[0] = next;
                b[1] = len8;
                if let Ext::Routing { .. } = self {
                    b[2] = 4;
                } else {
                    // One PadN option covering the rest.
                    b[2] = 1;
                    b[3] = (total - 4) as u8;
                }
                b
            }
            Ext::Fragment { offset, more } => {
                let mut b = vec![0u8; 8];
                b[0] = next;
                let f = (offset << 3) | u16::from(more);
                b[2..4].copy_from_slice(&f.to_be_bytes());
                b[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
                b
            }
        }
    }
}

/// Builds Ethernet frames: MACs, VLAN tags (outer first: `(tpid, vid)`), an IP packet.
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub vlans: Vec<(u16, u16)>,
}

impl FrameBuilder {
    /// Ethernet header (with the VLAN tags) for `ethertype`.
    pub fn l2(&self, ethertype: u16) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for (tpid, vid) in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    /// An IPv4 frame with a valid header checksum.
    pub fn ipv4(&self, src: Ipv4Addr, dst: Ipv4Addr, l4: &L4<'_>, o: &V4Opts<'_>) -> Vec<u8> {
        let pseudo = sum16(sum16(0, &src.octets()), &dst.octets());
        let body = if o.frag_offset != 0 {
            // A later fragment carries payload only.
            match l4 {
                L4::Udp { payload, .. } | L4::Tcp { payload, .. } => payload.to_vec(),
                L4::Raw { bytes, .. } => bytes.to_vec(),
            }
        } else {
            l4.bytes(pseudo)
        };
        let mut opts = o.options.to_vec();
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        let hlen = 20 + opts.len();
        let mut ip = vec![0u8; hlen];
        ip[0] = 0x40 | o.ihl.unwrap_or((hlen / 4) as u8);
        ip[2..4].copy_from_slice(&((hlen + body.len()) as u16).to_be_bytes());
        let frag = (u16::from(o.more_fragments) << 13) | (o.frag_offset & 0x1fff);
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip[8] = 64;
        ip[9] = l4.proto();
        ip[12..16].copy_from_slice(&src.octets());
        ip[16..20].copy_from_slice(&dst.octets());
        ip[20..].copy_from_slice(&opts);
        let c = csum(0, &ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut f = self.l2(0x0800);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&body);
        f
    }

    /// An IPv6 frame with extension headers `ext` (in order) before the transport header.
    pub fn ipv6(&self, src: Ipv6Addr, dst: Ipv6Addr, ext: &[Ext], l4: &L4<'_>) -> Vec<u8> {
        let pseudo = sum16(sum16(0, &src.octets()), &dst.octets());
        let later_fragment = ext
            .iter()
            .any(|e| matches!(e, Ext::Fragment { offset, .. } if *offset != 0));
        let body = if later_fragment {
            match l4 {
                L4::Udp { payload, .. } | L4::Tcp { payload, .. } => payload.to_vec(),
                L4::Raw { bytes, .. } => bytes.to_vec(),
            }
        } else {
            l4.bytes(pseudo)
        };
        let mut chain = Vec::new();
        let mut next = l4.proto();
        for e in ext.iter().rev() {
            let mut b = e.bytes(next);
            b.extend_from_slice(&chain);
            chain = b;
            next = e.number();
        }
        let mut ip = [0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&((chain.len() + body.len()) as u16).to_be_bytes());
        ip[6] = next;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&src.octets());
        ip[24..40].copy_from_slice(&dst.octets());
        let mut f = self.l2(0x86DD);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&chain);
        f.extend_from_slice(&body);
        f
    }

    /// An IPv4 UDP frame.
    pub fn udp4(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        sport: u16,
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        self.ipv4(
            src,
            dst,
            &L4::Udp {
                sport,
                dport,
                payload,
            },
            &V4Opts::default(),
        )
    }

    /// An IPv6 UDP frame.
    pub fn udp6(
        &self,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        sport: u16,
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        self.ipv6(
            src,
            dst,
            &[],
            &L4::Udp {
                sport,
                dport,
                payload,
            },
        )
    }
}

/// An AF_PACKET socket bound to one interface of the calling thread's namespace, sending raw
/// Ethernet frames as they are (VLAN tags included).
pub struct PacketSocket {
    fd: libc::c_int,
    ifindex: i32,
}

impl PacketSocket {
    /// Opens the socket on `ifname` (call from inside the namespace).
    pub fn open(ifname: &str) -> io::Result<Self> {
        let c = CString::new(ifname).map_err(io::Error::other)?;
        // SAFETY: if_nametoindex with a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, ifindex })
    }

    /// Sends one frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_ifindex = self.ifindex;
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: sendto with a valid buffer and address.
        let rc = unsafe {
            libc::sendto(
                self.fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                std::ptr::from_ref(&sa).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends every frame, retrying briefly when the device queue is full (ENOBUFS).
    pub fn send_all<'a>(&self, frames: impl IntoIterator<Item = &'a [u8]>) -> io::Result<u64> {
        let mut n = 0;
        for f in frames {
            loop {
                match self.send(f) {
                    Ok(()) => break,
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => std::thread::yield_now(),
                    Err(e) => return Err(e),
                }
            }
            n += 1;
        }
        Ok(n)
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: closing the fd we own.
        unsafe { libc::close(self.fd) };
    }
}

/// The `portwatch` binary of this workspace, built (debug) on first use. `PORTWATCH_BIN`
/// overrides it.
pub fn portwatch_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("PORTWATCH_BIN") {
            return PathBuf::from(p);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ sits in the workspace")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "portwatch", "--bin", "portwatch"])
            .current_dir(&root)
            .status()
            .expect("running cargo build for the portwatch binary");
        assert!(status.success(), "cargo build -p portwatch failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target.join("debug/portwatch")
    })
    .clone()
}

/// An AF_PACKET socket with a transmit ring (PACKET_TX_RING, TPACKET_V2): frames are written
/// into shared memory and sent by one `sendto`. The kernel builds such skbs with only the
/// Ethernet header in the linear area (the rest in page fragments): the non-linear case.
pub struct TxRing {
    fd: libc::c_int,
    ifindex: i32,
    ring: *mut u8,
    frames: usize,
    next: usize,
}

// SAFETY: the ring is owned by this value and only touched through &mut self.
unsafe impl Send for TxRing {}

const SOL_PACKET: libc::c_int = 263;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_TX_RING: libc::c_int = 13;
const TPACKET_V2: libc::c_int = 1;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_WRONG_FORMAT: u32 = 1 << 2;
const TX_FRAME_SIZE: usize = 2048;
const TX_BLOCK_SIZE: usize = 4096;
const TX_BLOCKS: usize = 64;
/// Where the frame's data starts in a TPACKET_V2 slot (TPACKET2_HDRLEN - sizeof(sockaddr_ll)).
const TX_DATA_OFFSET: usize = 32;

#[repr(C)]
struct TpacketReq {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
}

impl TxRing {
    /// Opens the socket and maps its ring (call from inside the namespace).
    pub fn open(ifname: &str) -> io::Result<Self> {
        let sock = PacketSocket::open(ifname)?;
        let fd = sock.fd;
        let ifindex = sock.ifindex;
        std::mem::forget(sock);
        let set = |opt: libc::c_int, val: *const libc::c_void, len: usize| {
            // SAFETY: setsockopt with a live buffer of `len` bytes.
            if unsafe { libc::setsockopt(fd, SOL_PACKET, opt, val, len as u32) } != 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        let close_on_err = |e: io::Error| {
            // SAFETY: closing the fd we own.
            unsafe { libc::close(fd) };
            e
        };
        set(PACKET_VERSION, std::ptr::from_ref(&TPACKET_V2).cast(), 4).map_err(close_on_err)?;
        let frames = TX_BLOCK_SIZE / TX_FRAME_SIZE * TX_BLOCKS;
        let req = TpacketReq {
            block_size: TX_BLOCK_SIZE as u32,
            block_nr: TX_BLOCKS as u32,
            frame_size: TX_FRAME_SIZE as u32,
            frame_nr: frames as u32,
        };
        set(
            PACKET_TX_RING,
            std::ptr::from_ref(&req).cast(),
            std::mem::size_of::<TpacketReq>(),
        )
        .map_err(close_on_err)?;
        // SAFETY: maps the ring the kernel just allocated for this socket.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                TX_BLOCK_SIZE * TX_BLOCKS,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return Err(close_on_err(io::Error::last_os_error()));
        }
        Ok(Self {
            fd,
            ifindex,
            ring: ring.cast(),
            frames,
            next: 0,
        })
    }

    fn status(&self, slot: usize) -> *mut u32 {
        // SAFETY: slot < frames, inside the mapping; tp_status is the slot's first field.
        unsafe { self.ring.add(slot * TX_FRAME_SIZE).cast::<u32>() }
    }

    /// Queues every frame in the ring and sends them, refilling as slots come back.
    pub fn send_all<'a>(&mut self, frames: impl IntoIterator<Item = &'a [u8]>) -> io::Result<u64> {
        let mut n = 0;
        let mut queued = 0;
        for f in frames {
            if f.len() > TX_FRAME_SIZE - TX_DATA_OFFSET {
                return Err(io::Error::other("frame too large for the TX ring slot"));
            }
            let slot = self.next;
            let st = self.status(slot);
            // Wait until the kernel has sent what was in this slot.
            loop {
                // SAFETY: volatile read of the shared status word.
                let s = unsafe { std::ptr::read_volatile(st) };
                if s == TP_STATUS_AVAILABLE {
                    break;
                }
                if s & TP_STATUS_WRONG_FORMAT != 0 {
                    return Err(io::Error::other(
                        "the kernel rejected a frame (TP_STATUS_WRONG_FORMAT)",
                    ));
                }
                self.flush()?;
                std::thread::yield_now();
            }
            // SAFETY: the slot is ours (status AVAILABLE); writes stay inside it.
            unsafe {
                let base = self.ring.add(slot * TX_FRAME_SIZE);
                std::ptr::copy_nonoverlapping(f.as_ptr(), base.add(TX_DATA_OFFSET), f.len());
                // tp_len follows tp_status.
                std::ptr::write_volatile(base.add(4).cast::<u32>(), f.len() as u32);
                std::ptr::write_volatile(st, TP_STATUS_SEND_REQUEST);
            }
            self.next = (self.next + 1) % self.frames;
            n += 1;
            queued += 1;
            if queued == self.frames / 2 {
                self.flush()?;
                queued = 0;
            }
        }
        self.flush()?;
        // Wait until every slot is back.
        for slot in 0..self.frames {
            // SAFETY: volatile read of the shared status word.
            while unsafe { std::ptr::read_volatile(self.status(slot)) } == TP_STATUS_SEND_REQUEST {
                self.flush()?;
                std::thread::yield_now();
            }
        }
        Ok(n)
    }

    /// Asks the kernel to send every slot marked SEND_REQUEST (blocking until done).
    fn flush(&self) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_ifindex = self.ifindex;
        sa.sll_halen = 6;
        // SAFETY: sendto with no buffer (the ring holds the frames) and a valid address.
        let rc = unsafe {
            libc::sendto(
                self.fd,
                std::ptr::null(),
                0,
                0,
                std::ptr::from_ref(&sa).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOBUFS) {
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Drop for TxRing {
    fn drop(&mut self) {
        // SAFETY: unmapping our ring and closing our fd.
        unsafe {
            libc::munmap(self.ring.cast(), TX_BLOCK_SIZE * TX_BLOCKS);
            libc::close(self.fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_owner_for_the_sweep() {
        let n = owned_name(&format!("{PIN_PREFIX}ebpf-udp-"));
        assert_eq!(owner(&n, PIN_PREFIX), Some(std::process::id()));
        let n = owned_name(&format!("{NETNS_PREFIX}pwa-"));
        assert_eq!(owner(&n, NETNS_PREFIX), Some(std::process::id()));
        // Names that are not ours, or not in this form (the cluster's, an older run's), are
        // never swept.
        for other in [
            "pw8-1234-n1",
            "pwtest-x-1234x5",
            "pwtest-",
            "pwt-pwa-x-1",
            "docker0",
        ] {
            assert_eq!(owner(other, NETNS_PREFIX), None, "{other}");
            assert_eq!(owner(other, PIN_PREFIX), None, "{other}");
        }
    }

    #[test]
    fn ipv4_header_checksum_verifies() {
        let fb = FrameBuilder {
            dst_mac: [2; 6],
            src_mac: [4; 6],
            vlans: vec![(0x8100, 7)],
        };
        let f = fb.udp4(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            1,
            2,
            b"hi",
        );
        assert_eq!(f.len(), 18 + 20 + 8 + 2);
        assert_eq!(csum(0, &f[18..38]), 0);
        // The UDP checksum verifies over the pseudo-header.
        let pseudo = sum16(sum16(0, &f[30..34]), &f[34..38]) + 10 + 17;
        assert_eq!(csum(pseudo, &f[38..]), 0);
        assert_eq!(&f[12..14], &[0x81, 0x00]);
        assert_eq!(&f[16..18], &[0x08, 0x00]);
    }

    #[test]
    fn ipv6_extension_chain_links_next_headers() {
        let fb = FrameBuilder {
            dst_mac: [2; 6],
            src_mac: [4; 6],
            vlans: vec![],
        };
        let a = Ipv6Addr::LOCALHOST;
        let l4 = L4::Udp {
            sport: 1,
            dport: 2,
            payload: b"x",
        };
        let f = fb.ipv6(
            a,
            a,
            &[Ext::HopByHop { len8: 0 }, Ext::DstOpts { len8: 1 }],
            &l4,
        );
        assert_eq!(f[14 + 6], 0, "hop-by-hop first");
        assert_eq!(f[54], 60, "then destination options");
        assert_eq!(f[62], 17, "then UDP");
        assert_eq!(f.len(), 14 + 40 + 8 + 16 + 9);
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 8 + 16 + 9);
    }
}
