//! The cluster's network and process registry: a bridge in its own namespace, one namespace per
//! host attached to it by a veth pair, hosts files for them, a scratch directory, and every
//! process started inside. It owns all of these and removes them on drop, also after a panic;
//! it never touches the host's own namespace beyond /etc/netns/NAME and /run/sshd.
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::error::{ClusterError, Result, io_err};

/// Prefix of every namespace, /etc/netns entry and scratch directory the scenario makes, followed
/// by the owning process id (so a later run can sweep what a killed run left behind).
pub const PREFIX: &str = "pw8";
/// The interface name of every host's veth end inside its namespace.
pub const IFACE: &str = "eth0";
const BRIDGE: &str = "br0";
const BPFFS: &str = "/sys/fs/bpf";

/// Set by a signal handler (the demo's); every wait loop checks it and gives up with
/// [`ClusterError::Interrupted`] so the guards clean up.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        Err(ClusterError::Interrupted)
    } else {
        Ok(())
    }
}

/// The hosts of the scenario: three cluster nodes, an admin workstation, an outside client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    N1,
    N2,
    N3,
    Admin,
    Outside,
}

impl Host {
    pub const ALL: [Host; 5] = [Host::N1, Host::N2, Host::N3, Host::Admin, Host::Outside];
    pub const NODES: [Host; 3] = [Host::N1, Host::N2, Host::N3];

    /// Short name, also the host name in every hosts file (RabbitMQ's node names use it).
    pub fn name(self) -> &'static str {
        match self {
            Host::N1 => "n1",
            Host::N2 => "n2",
            Host::N3 => "n3",
            Host::Admin => "admin",
            Host::Outside => "outside",
        }
    }

    fn octet(self) -> u8 {
        match self {
            Host::N1 => 11,
            Host::N2 => 12,
            Host::N3 => 13,
            Host::Admin => 50,
            Host::Outside => 200,
        }
    }

    /// 10.77.0.0/24: nodes .11-.13, admin .50, outside .200.
    pub fn v4(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, self.octet())
    }

    /// fd77::/64 (unique local): the same last digits as the IPv4 address.
    pub fn v6(self) -> Ipv6Addr {
        let o = u16::from(self.octet());
        // fd77::11 for .11: the decimal digits written as hex, easier to read in captures.
        let digits = u16::from_str_radix(&o.to_string(), 16).unwrap_or(o);
        Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, digits)
    }

    pub fn is_node(self) -> bool {
        matches!(self, Host::N1 | Host::N2 | Host::N3)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A process the lab started and owns.
#[derive(Clone, Debug)]
pub struct Proc {
    pub label: String,
    pub host: Host,
    pub pid: u32,
    pub log: PathBuf,
}

struct Owned {
    info: Proc,
    child: Child,
    status: Option<ExitStatus>,
    /// Gets SIGTERM and a grace period at teardown (an agent writing its last report); the
    /// rest is killed outright, being throw-away.
    graceful: bool,
}

/// The network and process guard. Build it with [`Lab::new`]; dropping it (or [`Lab::close`])
/// kills every process in its namespaces, deletes them with their links, and removes the
/// scratch directory and hosts files.
pub struct Lab {
    id: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    etc_dirs: Vec<PathBuf>,
    /// Pin directories on bpffs (the agents' maps), removed after the processes are gone.
    bpf_dirs: Vec<PathBuf>,
    made_run_sshd: bool,
    procs: Mutex<Vec<Owned>>,
    closed: bool,
}

/// Whether this process runs as root (the scenario needs it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Returns an error naming every tool from `tools` that is not on PATH (or not at its absolute
/// path).
pub fn require_tools(tools: &[&str]) -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = |t: &str| {
        if t.starts_with('/') {
            Path::new(t).exists()
        } else {
            std::env::split_paths(&path).any(|d| d.join(t).is_file())
        }
    };
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !found(t)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ClusterError::MissingTools {
            missing: missing.join(", "),
        })
    }
}

impl Lab {
    /// Builds the bridge namespace and one namespace per [`Host`], each with its veth, IPv4 and
    /// IPv6 addresses and an /etc/netns/NAME/hosts naming every host. Sweeps what earlier runs
    /// that died without cleaning up left behind.
    pub fn new() -> Result<Lab> {
        if !is_root() {
            // SAFETY: geteuid has no preconditions and cannot fail.
            let uid = unsafe { libc::geteuid() };
            return Err(ClusterError::NotRoot { uid });
        }
        require_tools(&["ip", "timeout"])?;
        sweep_stale();
        let id = format!("{PREFIX}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&id);
        let mut lab = Lab {
            id,
            dir: dir.clone(),
            namespaces: Vec::new(),
            etc_dirs: Vec::new(),
            bpf_dirs: Vec::new(),
            made_run_sshd: false,
            procs: Mutex::new(Vec::new()),
            closed: false,
        };
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_err("removing old scratch directory", &dir))?;
        }
        fs::create_dir_all(dir.join("logs")).map_err(io_err("creating", dir.join("logs")))?;
        lab.build_network()?;
        Ok(lab)
    }

    fn build_network(&mut self) -> Result<()> {
        let br = self.bridge_ns();
        self.add_ns(&br)?;
        // The switch has no address of its own: no IPv6 on its ports, so no router
        // solicitations or neighbour discovery from it.
        sysctl(
            &br,
            &[
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        )?;
        ip(&["-n", &br, "link", "set", "lo", "up"])?;
        ip(&["-n", &br, "link", "add", BRIDGE, "type", "bridge"])?;
        // No STP delay and no multicast snooping surprises: a plain learning switch.
        ip(&[
            "-n",
            &br,
            "link",
            "set",
            BRIDGE,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ])?;
        ip(&["-n", &br, "link", "set", BRIDGE, "up"])?;
        let hosts_file = hosts_file();
        for h in Host::ALL {
            let ns = self.ns(h);
            self.add_ns(&ns)?;
            // No router here: hosts that solicit one every few seconds keep the wire busy.
            sysctl(&ns, &["net.ipv6.conf.default.router_solicitations=0"])?;
            let etc = Path::new("/etc/netns").join(&ns);
            fs::create_dir_all(&etc).map_err(io_err("creating", &etc))?;
            self.etc_dirs.push(etc.clone());
            fs::write(etc.join("hosts"), &hosts_file)
                .map_err(io_err("writing", etc.join("hosts")))?;
            let port = format!("v-{}", h.name());
            // Created inside the bridge namespace with the peer moved straight into the host's:
            // nothing ever appears in the namespace this test runs in.
            ip(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", IFACE, "netns",
                &ns,
            ])?;
            ip(&["-n", &br, "link", "set", &port, "master", BRIDGE, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", h.v4()),
                "dev",
                IFACE,
            ])?;
            ip(&[
                "-n",
                &ns,
                "-6",
                "addr",
                "add",
                &format!("{}/64", h.v6()),
                "dev",
                IFACE,
                "nodad",
            ])?;
            ip(&["-n", &ns, "link", "set", IFACE, "up"])?;
        }
        Ok(())
    }

    fn add_ns(&mut self, ns: &str) -> Result<()> {
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_owned());
        Ok(())
    }

    /// This run's identifier, the prefix of all its names.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The namespace of `h`.
    pub fn ns(&self, h: Host) -> String {
        format!("{}-{}", self.id, h.name())
    }

    /// The namespace holding the bridge (a capture there sees every host, like a mirror port).
    pub fn bridge_ns(&self) -> String {
        format!("{}-br", self.id)
    }

    /// The scratch directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new subdirectory of the scratch directory.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let d = self.dir.join(name);
        fs::create_dir_all(&d).map_err(io_err("creating", &d))?;
        Ok(d)
    }

    /// A fresh pin directory on bpffs, /sys/fs/bpf/<id>-<name> (removed with its pins at the end).
    pub fn bpffs_dir(&mut self, name: &str) -> Result<PathBuf> {
        let d = Path::new(BPFFS).join(format!("{}-{name}", self.id));
        if d.exists() {
            fs::remove_dir_all(&d).map_err(io_err("removing old pin directory", &d))?;
        }
        fs::create_dir_all(&d).map_err(io_err("creating a pin directory on bpffs", &d))?;
        self.bpf_dirs.push(d.clone());
        Ok(d)
    }

    /// sshd refuses to start without its privilege separation directory; make it if missing
    /// and remove it at the end.
    pub fn ensure_run_sshd(&mut self) -> Result<()> {
        let p = Path::new("/run/sshd");
        if !p.exists() {
            fs::create_dir_all(p).map_err(io_err("creating", p))?;
            self.made_run_sshd = true;
        }
        Ok(())
    }

    /// `ip netns exec NS args...`: the hosts file of NS is bound over /etc/hosts. The child gets
    /// its own process group so a terminal's Ctrl-C reaches only the scenario, which cleans up.
    pub fn command(&self, h: Host, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(h)]).args(args);
        c.stdin(Stdio::null()).process_group(0);
        c
    }

    /// Starts a long-running process in `h`'s namespace, its stdout and stderr in a log file.
    pub fn spawn(&self, h: Host, label: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Proc> {
        let log = self
            .dir
            .join("logs")
            .join(format!("{}-{label}.log", h.name()));
        let mut c = self.command(h, args);
        c.envs(env.iter().copied());
        self.spawn_command(h, label, c, log)
    }

    /// Starts `c` (built with [`Lab::command`] or [`Lab::nsenter`]) and owns it.
    pub fn spawn_command(&self, h: Host, label: &str, c: Command, log: PathBuf) -> Result<Proc> {
        self.spawn_owned(h, label, c, log, false)
    }

    /// [`Lab::spawn_command`] for a process that must get SIGTERM and time to finish at
    /// teardown (an agent).
    pub fn spawn_graceful(&self, h: Host, label: &str, c: Command, log: PathBuf) -> Result<Proc> {
        self.spawn_owned(h, label, c, log, true)
    }

    fn spawn_owned(
        &self,
        h: Host,
        label: &str,
        mut c: Command,
        log: PathBuf,
        graceful: bool,
    ) -> Result<Proc> {
        check_interrupted()?;
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_err("creating log", &log))?;
        let err = out
            .try_clone()
            .map_err(io_err("duplicating log handle", &log))?;
        c.stdout(out).stderr(err);
        let command = crate::cluster::show(&c);
        let child = c.spawn().map_err(|source| ClusterError::Spawn {
            command: command.clone(),
            source,
        })?;
        let info = Proc {
            label: label.to_owned(),
            host: h,
            pid: child.id(),
            log,
        };
        self.procs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Owned {
                info: info.clone(),
                child,
                status: None,
                graceful,
            });
        Ok(info)
    }

    /// `nsenter --net=/run/netns/NS args...`: only the network namespace changes (mounts stay,
    /// so bpffs and /sys are the host's). For the capture and the agents.
    pub fn nsenter(&self, h: Host, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.ns(h)))
            .arg("--")
            .args(args);
        c.stdin(Stdio::null()).process_group(0);
        c
    }

    /// Runs a short command in `h`'s namespace, bounded by `limit`; returns its stdout, or an
    /// error carrying stdout and stderr when it fails.
    pub fn run(&self, h: Host, args: &[&str], limit: Duration) -> Result<String> {
        self.run_env(h, args, &[], limit)
    }

    /// [`Lab::run`] with extra environment variables.
    pub fn run_env(
        &self,
        h: Host,
        args: &[&str],
        env: &[(&str, &str)],
        limit: Duration,
    ) -> Result<String> {
        check_interrupted()?;
        let secs = format!("{}", limit.as_secs().max(1));
        let mut full = vec!["timeout", "--kill-after=2", secs.as_str()];
        full.extend_from_slice(args);
        let mut c = self.command(h, &full);
        c.envs(env.iter().copied());
        let command = format!("[{}] {}", h.name(), args.join(" "));
        let out = c.output().map_err(|source| ClusterError::Spawn {
            command: command.clone(),
            source,
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let status = if out.status.code() == Some(124) {
                format!("a timeout after {limit:?}")
            } else {
                out.status.to_string()
            };
            return Err(ClusterError::Failed {
                command,
                status,
                output: format!("{stdout}{stderr}"),
            });
        }
        Ok(stdout)
    }

    /// Runs `f` on a new thread that has entered `h`'s network namespace: sockets it opens live
    /// there. The calling thread never changes namespace.
    pub fn in_netns<T: Send>(&self, h: Host, f: impl FnOnce() -> T + Send) -> Result<T> {
        let ns = self.ns(h);
        let path = Path::new("/run/netns").join(&ns);
        std::thread::scope(|s| {
            s.spawn(|| -> Result<T> {
                let file = File::open(&path).map_err(|source| ClusterError::Setns {
                    ns: ns.clone(),
                    source,
                })?;
                // SAFETY: setns on a valid namespace fd only changes this (scoped, short-lived)
                // thread's network namespace.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(ClusterError::Setns {
                        ns: ns.clone(),
                        source: std::io::Error::last_os_error(),
                    });
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// The live (non-zombie) processes in `h`'s namespace, this process excluded.
    pub fn pids(&self, h: Host) -> Vec<u32> {
        ns_pids(&self.ns(h))
    }

    /// The exit status of an owned process if it has exited (reaps it).
    pub fn exited(&self, p: &Proc) -> Option<ExitStatus> {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let o = procs.iter_mut().find(|o| o.info.pid == p.pid)?;
        if o.status.is_none() {
            o.status = o.child.try_wait().ok().flatten();
        }
        o.status
    }

    /// Sends `sig` to an owned process and waits up to `limit` for it to exit.
    pub fn stop(&self, p: &Proc, sig: i32, limit: Duration) -> Option<ExitStatus> {
        if self.exited(p).is_none() {
            signal(p.pid, sig);
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.exited(p) {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills everything, deletes namespaces, hosts files and the scratch directory. Returns what
    /// could not be removed (empty when all is clean).
    pub fn close(mut self) -> Vec<String> {
        self.teardown()
    }

    fn teardown(&mut self) -> Vec<String> {
        if self.closed {
            return Vec::new();
        }
        self.closed = true;
        let mut left = Vec::new();
        // 1. Graceful processes (agents) get SIGTERM and up to 5 s; then every process in our
        //    namespaces is killed.
        let graceful: Vec<u32> = {
            let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
            procs
                .iter()
                .filter(|o| o.graceful && o.status.is_none())
                .map(|o| o.info.pid)
                .collect()
        };
        for &pid in &graceful {
            signal(pid, libc::SIGTERM);
            signal(pid, libc::SIGCONT);
        }
        self.wait_gone(&graceful, Duration::from_secs(5));
        let mut seen: Vec<u32> = Vec::new();
        for ns in &self.namespaces {
            for pid in ns_pids(ns) {
                signal(pid, libc::SIGKILL);
                seen.push(pid);
            }
        }
        if !self.wait_namespaces_empty(Duration::from_secs(10)) {
            for ns in &self.namespaces {
                for pid in ns_pids(ns) {
                    left.push(format!("process {pid} ({}) in {ns}", comm(pid)));
                }
            }
        }
        // 2. Our children (all of them ran in a namespace; reap them).
        {
            let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
            for o in procs.iter_mut() {
                if o.status.is_none() {
                    let _ = o.child.kill();
                    o.status = o.child.wait().ok();
                }
            }
        }
        // 3. Namespaces (their veths go with them), hosts files, scratch directory.
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                left.push(format!("namespace {ns}: {e}"));
            }
        }
        for d in self.etc_dirs.iter().chain(&self.bpf_dirs) {
            if let Err(e) = fs::remove_dir_all(d) {
                left.push(format!("{}: {e}", d.display()));
            }
        }
        if self.dir.exists()
            && let Err(e) = fs::remove_dir_all(&self.dir)
        {
            left.push(format!("{}: {e}", self.dir.display()));
        }
        if self.made_run_sshd {
            let _ = fs::remove_dir("/run/sshd");
        }
        for pid in seen {
            if alive(pid) {
                left.push(format!("process {pid} ({}) still alive", comm(pid)));
            }
        }
        left.sort();
        left.dedup();
        left
    }

    fn wait_gone(&mut self, pids: &[u32], limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            self.reap();
            if !pids.iter().any(|&p| alive(p)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn reap(&mut self) {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        for o in procs.iter_mut() {
            if o.status.is_none() {
                o.status = o.child.try_wait().ok().flatten();
            }
        }
    }

    fn wait_namespaces_empty(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            self.reap();
            if self.namespaces.iter().all(|ns| ns_pids(ns).is_empty()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let left = self.teardown();
        for l in left {
            eprintln!("cluster: could not clean up: {l}");
        }
    }
}

/// What a run with this id left on the machine: namespaces, hosts-file directories, scratch
/// directory. Empty after a clean teardown.
pub fn leftovers(id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for ns in list_namespaces() {
        if ns.starts_with(&format!("{id}-")) {
            out.push(format!("namespace {ns}"));
        }
    }
    if let Ok(rd) = fs::read_dir("/etc/netns") {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&format!("{id}-")) {
                out.push(format!("/etc/netns/{n}"));
            }
        }
    }
    for base in [Path::new(BPFFS).to_path_buf()] {
        if let Ok(rd) = fs::read_dir(&base) {
            for e in rd.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{id}-"))
                {
                    out.push(e.path().display().to_string());
                }
            }
        }
    }
    let dir = std::env::temp_dir().join(id);
    if dir.exists() {
        out.push(dir.display().to_string());
    }
    out
}

fn hosts_file() -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for h in Host::ALL {
        s.push_str(&format!("{}\t{}\n", h.v4(), h.name()));
    }
    s
}

/// Runs `ip args...`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    let mut c = Command::new("ip");
    c.args(args);
    let command = crate::cluster::show(&c);
    let out = crate::cluster::checked_output(&mut c, command)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sysctl(ns: &str, settings: &[&str]) -> Result<()> {
    let mut args = vec!["netns", "exec", ns, "sysctl", "-q", "-w"];
    args.extend_from_slice(settings);
    ip(&args).map(drop)
}

fn list_namespaces() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Live, non-zombie pids in namespace `ns` (per `ip netns pids`), without this process.
fn ns_pids(ns: &str) -> Vec<u32> {
    let me = std::process::id();
    ip(&["netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter(|&p| p != me && alive(p))
        .collect()
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself hold parentheses.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

/// Sends `sig` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: u32, sig: i32) {
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions; pid is a positive process id.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Removes namespaces, hosts files and scratch directories of earlier runs whose process is
/// gone (killed before its guards ran).
fn sweep_stale() {
    let dead = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
            return false;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists())
    };
    for ns in list_namespaces().into_iter().filter(|n| dead(n)) {
        for pid in ns_pids(&ns) {
            signal(pid, libc::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ns_pids(&ns).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(25));
        }
        eprintln!("cluster: removing namespace {ns} left by an earlier run");
        let _ = ip(&["netns", "del", &ns]);
    }
    for base in [
        Path::new("/etc/netns").to_path_buf(),
        Path::new(BPFFS).to_path_buf(),
        std::env::temp_dir(),
    ] {
        if let Ok(rd) = fs::read_dir(&base) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if dead(&n) {
                    eprintln!(
                        "cluster: removing {} left by an earlier run",
                        e.path().display()
                    );
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }
}
