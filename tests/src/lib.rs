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

/// A named network namespace, deleted (with every interface in it) on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace with a unique name starting with `prefix`, loopback up.
    pub fn new(prefix: &str) -> io::Result<Self> {
        let name = unique(prefix);
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
    /// A fresh, unique directory under /sys/fs/bpf.
    pub fn new(test: &str) -> io::Result<Self> {
        let path = Path::new("/sys/fs/bpf").join(unique(&format!("pwtest-{test}-")));
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Internet checksum (RFC 1071) of `data` starting from `sum`.
fn csum(mut sum: u32, data: &[u8]) -> u16 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Builds Ethernet frames: MACs, VLAN tags (outer first: `(tpid, vid)`), an IP packet.
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub vlans: Vec<(u16, u16)>,
}

impl FrameBuilder {
    fn l2(&self, ethertype: u16) -> Vec<u8> {
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

    /// An IPv4 UDP frame with a valid header checksum (UDP checksum 0).
    pub fn udp4(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        sport: u16,
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut f = self.l2(0x0800);
        let total = (20 + 8 + payload.len()) as u16;
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&src.octets());
        ip[16..20].copy_from_slice(&dst.octets());
        let c = csum(0, &ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    /// An IPv6 UDP frame with a valid UDP checksum.
    pub fn udp6(
        &self,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        sport: u16,
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut f = self.l2(0x86DD);
        let ulen = (8 + payload.len()) as u16;
        let mut ip = [0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&ulen.to_be_bytes());
        ip[6] = 17;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&src.octets());
        ip[24..40].copy_from_slice(&dst.octets());
        f.extend_from_slice(&ip);
        let mut udp = Vec::with_capacity(8 + payload.len());
        udp.extend_from_slice(&sport.to_be_bytes());
        udp.extend_from_slice(&dport.to_be_bytes());
        udp.extend_from_slice(&ulen.to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(payload);
        let mut pseudo = Vec::with_capacity(40);
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&u32::from(ulen).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 17]);
        let mut sum = 0u32;
        for c in pseudo.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        let c = csum(sum, &udp);
        udp[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
        f.extend_from_slice(&udp);
        f
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(&f[12..14], &[0x81, 0x00]);
        assert_eq!(&f[16..18], &[0x08, 0x00]);
    }
}
