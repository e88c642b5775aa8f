//! The /proc implementation of [`Host`]: /proc/net/{tcp,tcp6,udp,udp6}, /proc/PID/fd,
//! /proc/PID/{comm,cmdline} and /proc/sys/net/ipv4/ip_local_port_range, read under a
//! configurable root so tests can point it at a fake tree. Plain file reads: it compiles
//! everywhere, and is only the default host on Linux.
use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use super::{
    Connection, Host, HostError, Listener, MAX_CONNECTIONS, PortRange, Process, SocketScan,
};
use crate::flow::Transport;

/// TCP_LISTEN in /proc/net/tcp's `st` column.
const TCP_LISTEN: u8 = 0x0A;
/// TCP_CLOSE: an unconnected UDP socket.
const UDP_UNCONNECTED: u8 = 0x07;
/// TCP_TIME_WAIT: a closed connection's remains, owned by no process.
const TCP_TIME_WAIT: u8 = 0x06;

/// Reads host information from a /proc tree.
#[derive(Clone, Debug)]
pub struct ProcFs {
    root: PathBuf,
}

impl ProcFs {
    /// A reader rooted at `root` (normally `/proc`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn read(&self, rel: &str) -> Result<Option<String>, HostError> {
        let path = self.root.join(rel);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(source) => Err(HostError::Read { path, source }),
        }
    }

    /// Socket inodes to the processes holding them, for the inodes in `wanted`.
    fn owners(&self, wanted: &BTreeSet<u64>) -> (BTreeMap<u64, Vec<Process>>, u64) {
        let mut owners: BTreeMap<u64, Vec<Process>> = BTreeMap::new();
        let mut unreadable = 0u64;
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            return (owners, unreadable);
        };
        let mut pids: Vec<u32> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        for pid in pids {
            let fd_dir = self.root.join(pid.to_string()).join("fd");
            let fds = match std::fs::read_dir(&fd_dir) {
                Ok(d) => d,
                Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                    unreadable += 1;
                    continue;
                }
                // The process exited, or is a kernel thread without fds.
                Err(_) => continue,
            };
            let mut held = BTreeSet::new();
            for fd in fds.flatten() {
                let Ok(target) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                if let Some(inode) = socket_inode(&target)
                    && wanted.contains(&inode)
                {
                    held.insert(inode);
                }
            }
            if held.is_empty() {
                continue;
            }
            let proc = self.process(pid);
            for inode in held {
                owners.entry(inode).or_default().push(proc.clone());
            }
        }
        (owners, unreadable)
    }

    fn process(&self, pid: u32) -> Process {
        let comm = self
            .read(&format!("{pid}/comm"))
            .ok()
            .flatten()
            .unwrap_or_default();
        let cmdline = self
            .read(&format!("{pid}/cmdline"))
            .ok()
            .flatten()
            .unwrap_or_default();
        Process {
            pid,
            name: comm.trim_end_matches('\n').to_owned(),
            cmdline: cmdline
                .split('\0')
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

impl Host for ProcFs {
    fn sockets(&self) -> Result<SocketScan, HostError> {
        let mut listeners = Vec::new();
        let mut connected = Vec::new();
        for (file, transport) in [
            ("net/tcp", Transport::Tcp),
            ("net/tcp6", Transport::Tcp),
            ("net/udp", Transport::Udp),
            ("net/udp6", Transport::Udp),
        ] {
            // A missing file means the protocol family is disabled, not an error.
            if let Some(text) = self.read(file)? {
                let path = self.root.join(file);
                for row in parse_sockets(&path, &text)? {
                    match row.kind(transport) {
                        SocketKind::Listening => listeners.push(Listener {
                            transport,
                            addr: row.local.0,
                            port: row.local.1,
                            inode: row.inode,
                            processes: Vec::new(),
                        }),
                        SocketKind::Connected => connected.push(Connection {
                            transport,
                            local: row.local.0,
                            local_port: row.local.1,
                            remote: row.remote.0,
                            remote_port: row.remote.1,
                            inode: row.inode,
                            processes: Vec::new(),
                        }),
                        SocketKind::Other => {}
                    }
                }
            }
        }
        // The server side of accepted connections shares its listener's port: only the client
        // side names a process the listeners do not.
        let served: BTreeSet<(Transport, u16)> =
            listeners.iter().map(|l| (l.transport, l.port)).collect();
        let mut connections: Vec<Connection> = connected
            .into_iter()
            .filter(|c| {
                !(served.contains(&(c.transport, c.local_port))
                    && listeners.iter().any(|l| {
                        l.transport == c.transport && l.port == c.local_port && l.accepts(c.local)
                    }))
            })
            .collect();
        connections.sort();
        connections.dedup();
        let over = connections.len().saturating_sub(MAX_CONNECTIONS);
        connections.truncate(MAX_CONNECTIONS);
        let wanted: BTreeSet<u64> = listeners
            .iter()
            .map(|l| l.inode)
            .chain(connections.iter().map(|c| c.inode))
            .filter(|&i| i != 0)
            .collect();
        let (mut owners, pids_unreadable) = self.owners(&wanted);
        for l in &mut listeners {
            if let Some(p) = owners.get_mut(&l.inode) {
                l.processes = p.clone();
            }
        }
        for c in &mut connections {
            if let Some(p) = owners.get_mut(&c.inode) {
                c.processes = p.clone();
            }
        }
        listeners.sort_by_key(|l| (l.transport, l.port, l.addr));
        listeners.dedup();
        Ok(SocketScan {
            listeners,
            connections,
            connections_over_limit: over as u64,
            pids_unreadable,
        })
    }

    fn ephemeral_range(&self) -> Result<PortRange, HostError> {
        let rel = "sys/net/ipv4/ip_local_port_range";
        let path = self.root.join(rel);
        let text = self.read(rel)?.ok_or_else(|| HostError::Read {
            path: path.clone(),
            source: std::io::Error::from(ErrorKind::NotFound),
        })?;
        let nums: Vec<u16> = text
            .split_whitespace()
            .map(str::parse::<u16>)
            .collect::<Result<_, _>>()
            .map_err(|_| parse_err(&path, 1, "two port numbers", &text))?;
        match nums[..] {
            [a, b] => Ok(PortRange::new(a, b)),
            _ => Err(parse_err(&path, 1, "two port numbers", &text)),
        }
    }

    fn hostname(&self) -> Option<String> {
        let h = self.read("sys/kernel/hostname").ok()??;
        let h = h.trim();
        (!h.is_empty()).then(|| h.to_owned())
    }
}

fn parse_err(path: &Path, line: usize, expected: &'static str, found: &str) -> HostError {
    HostError::Parse {
        path: path.to_owned(),
        line,
        expected,
        found: found.chars().take(120).collect(),
    }
}

/// `socket:[12345]` -> 12345.
fn socket_inode(target: &Path) -> Option<u64> {
    target
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// One line of /proc/net/{tcp,udp}[6].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SocketRow {
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    st: u8,
    inode: u64,
}

enum SocketKind {
    /// A TCP socket in LISTEN, or a bound UDP socket without a remote end.
    Listening,
    /// A TCP connection with an owner (not TIME_WAIT), or a connected UDP socket.
    Connected,
    Other,
}

impl SocketRow {
    fn kind(&self, transport: Transport) -> SocketKind {
        let unconnected = self.remote.1 == 0 && self.remote.0.is_unspecified();
        match transport {
            Transport::Tcp if self.st == TCP_LISTEN => SocketKind::Listening,
            Transport::Tcp if self.st == TCP_TIME_WAIT || self.inode == 0 || unconnected => {
                SocketKind::Other
            }
            Transport::Tcp => SocketKind::Connected,
            _ if unconnected && self.st == UDP_UNCONNECTED => SocketKind::Listening,
            _ if !unconnected && self.inode != 0 => SocketKind::Connected,
            _ => SocketKind::Other,
        }
    }
}

/// Parses one /proc/net/{tcp,udp}[6] file.
fn parse_sockets(path: &Path, text: &str) -> Result<Vec<SocketRow>, HostError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let lineno = i + 1;
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        if f.len() < 10 {
            return Err(parse_err(path, lineno, "at least 10 columns", line));
        }
        let st = u8::from_str_radix(f[3], 16)
            .map_err(|_| parse_err(path, lineno, "a hex socket state", f[3]))?;
        let local = parse_endpoint(f[1])
            .ok_or_else(|| parse_err(path, lineno, "a local address ADDR:PORT in hex", f[1]))?;
        let remote = parse_endpoint(f[2])
            .ok_or_else(|| parse_err(path, lineno, "a remote address ADDR:PORT in hex", f[2]))?;
        let inode = f[9]
            .parse()
            .map_err(|_| parse_err(path, lineno, "a decimal inode", f[9]))?;
        out.push(SocketRow {
            local,
            remote,
            st,
            inode,
        });
    }
    Ok(out)
}

/// `0100007F:0016` -> 127.0.0.1:22. The kernel prints each 32-bit word of the address in host
/// byte order, so the words are decoded with the native byte order of this (the same) machine.
fn parse_endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(u32::to_ne_bytes);
    let addr = match a.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(a)?)),
        32 => {
            let mut b = [0u8; 16];
            for (i, chunk) in b.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(a.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some((addr, port))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encodes an address the way the running kernel prints it in /proc/net/*.
    pub(crate) fn hex_endpoint(addr: IpAddr, port: u16) -> String {
        let words: Vec<String> = match addr {
            IpAddr::V4(a) => vec![format!("{:08X}", u32::from_ne_bytes(a.octets()))],
            IpAddr::V6(a) => a
                .octets()
                .chunks(4)
                .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        };
        format!("{}:{port:04X}", words.concat())
    }

    /// One /proc/net/tcp-style line.
    pub(crate) fn socket_line(
        sl: usize,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
        st: u8,
        inode: u64,
    ) -> String {
        format!(
            "  {sl}: {} {} {st:02X} 00000000:00000000 00:00000000 00000000  1000        0 {inode} 1 0000000000000000 100 0 0 10 0",
            hex_endpoint(local.0, local.1),
            hex_endpoint(remote.0, remote.1)
        )
    }

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn endpoints_round_trip_through_the_kernel_encoding() {
        for (a, p) in [
            (v4("127.0.0.1"), 22),
            (v4("10.1.2.3"), 65535),
            (v4("::1"), 443),
            (v4("fd00:1:2:3::ff"), 8080),
            (v4("::ffff:192.168.0.1"), 53),
        ] {
            assert_eq!(parse_endpoint(&hex_endpoint(a, p)), Some((a, p)));
        }
        assert_eq!(parse_endpoint("0100007F"), None);
        assert_eq!(parse_endpoint("0100007:0016"), None);
        assert_eq!(parse_endpoint("zz00007F:0016"), None);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn decodes_a_real_x86_line() {
        // Captured from a little-endian machine: sshd on 127.0.0.1:22 and [::1]:631.
        assert_eq!(parse_endpoint("0100007F:0016"), Some((v4("127.0.0.1"), 22)));
        assert_eq!(
            parse_endpoint("00000000000000000000000001000000:0277"),
            Some((v4("::1"), 631))
        );
    }

    /// (port, inode) of the rows of `text` that are of kind `want`.
    fn kinds(text: &str, t: Transport, want: fn(&SocketKind) -> bool) -> Vec<(u16, u64)> {
        parse_sockets(Path::new("t"), text)
            .unwrap()
            .into_iter()
            .filter(|r| want(&r.kind(t)))
            .map(|r| (r.local.1, r.inode))
            .collect()
    }

    #[test]
    fn sorts_sockets_into_listening_and_connected() {
        let any = v4("0.0.0.0");
        let me = v4("10.0.0.1");
        let peer = v4("10.0.0.9");
        let tcp = [
            HEADER.to_owned(),
            socket_line(0, (any, 22), (any, 0), TCP_LISTEN, 100),
            socket_line(1, (me, 22), (peer, 50000), 0x01, 101),
            socket_line(2, (me, 50001), (peer, 443), 0x02, 102),
            socket_line(3, (me, 50002), (peer, 443), TCP_TIME_WAIT, 0),
        ]
        .join("\n");
        let listening = |k: &SocketKind| matches!(k, SocketKind::Listening);
        let connected = |k: &SocketKind| matches!(k, SocketKind::Connected);
        assert_eq!(kinds(&tcp, Transport::Tcp, listening), [(22, 100)]);
        assert_eq!(
            kinds(&tcp, Transport::Tcp, connected),
            [(22, 101), (50001, 102)]
        );
        let udp = [
            HEADER.to_owned(),
            socket_line(0, (any, 123), (any, 0), UDP_UNCONNECTED, 200),
            socket_line(1, (any, 40000), (peer, 53), UDP_UNCONNECTED, 201),
            socket_line(2, (any, 40001), (peer, 53), 0x01, 202),
        ]
        .join("\n");
        assert_eq!(kinds(&udp, Transport::Udp, listening), [(123, 200)]);
        assert_eq!(
            kinds(&udp, Transport::Udp, connected),
            [(40000, 201), (40001, 202)]
        );
    }

    #[test]
    fn malformed_lines_name_the_file_and_line() {
        let text = format!("{HEADER}\n  0: nonsense");
        let err = parse_sockets(Path::new("/x/net/tcp"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/x/net/tcp:2: expected at least 10 columns"),
            "{err}"
        );
        let bad_addr = format!("{HEADER}\n  0: 0100007F:XYZW 00000000:0000 0A 0:0 0:0 0 0 0 55 1");
        let err = parse_sockets(Path::new("t"), &bad_addr)
            .unwrap_err()
            .to_string();
        assert!(err.contains("t:2: expected a local address"), "{err}");
    }

    /// A fake /proc tree on disk.
    #[cfg(unix)]
    mod tree {
        use super::*;
        use std::fs;
        use std::os::unix::fs::symlink;

        struct FakeProc {
            dir: tempfile::TempDir,
        }

        impl FakeProc {
            fn new() -> Self {
                let dir = tempfile::tempdir().unwrap();
                fs::create_dir_all(dir.path().join("net")).unwrap();
                fs::create_dir_all(dir.path().join("sys/net/ipv4")).unwrap();
                fs::create_dir_all(dir.path().join("sys/kernel")).unwrap();
                Self { dir }
            }
            fn file(&self, rel: &str, text: &str) {
                fs::write(self.dir.path().join(rel), text).unwrap();
            }
            fn process(&self, pid: u32, comm: &str, argv: &[&str], inodes: &[u64]) {
                let p = self.dir.path().join(pid.to_string());
                fs::create_dir_all(p.join("fd")).unwrap();
                fs::write(p.join("comm"), format!("{comm}\n")).unwrap();
                let mut cmd = argv.join("\0");
                cmd.push('\0');
                fs::write(p.join("cmdline"), cmd).unwrap();
                symlink("/dev/null", p.join("fd/0")).unwrap();
                for (i, ino) in inodes.iter().enumerate() {
                    symlink(format!("socket:[{ino}]"), p.join(format!("fd/{}", i + 3))).unwrap();
                }
            }
            fn host(&self) -> ProcFs {
                ProcFs::new(self.dir.path())
            }
        }

        #[test]
        fn listeners_carry_their_processes_across_families() {
            let f = FakeProc::new();
            let any4 = v4("0.0.0.0");
            let any6 = v4("::");
            f.file(
                "net/tcp",
                &[
                    HEADER.to_owned(),
                    socket_line(0, (any4, 31112), (any4, 0), TCP_LISTEN, 1001),
                    socket_line(1, (v4("127.0.0.1"), 5432), (any4, 0), TCP_LISTEN, 1002),
                ]
                .join("\n"),
            );
            f.file(
                "net/tcp6",
                &[
                    HEADER.to_owned(),
                    socket_line(0, (any6, 443), (any6, 0), TCP_LISTEN, 1003),
                ]
                .join("\n"),
            );
            f.file(
                "net/udp",
                &[
                    HEADER.to_owned(),
                    socket_line(0, (any4, 123), (any4, 0), UDP_UNCONNECTED, 1004),
                ]
                .join("\n"),
            );
            // udp6 missing: IPv6 UDP disabled is not an error.
            f.process(
                10,
                "oxygen",
                &["/opt/Sisense.Oxygen.exe", "-d"],
                &[1001, 9999],
            );
            f.process(11, "nginx", &["nginx: master"], &[1003]);
            f.process(12, "nginx", &["nginx: worker"], &[1003]);
            f.process(13, "chronyd", &["/usr/sbin/chronyd"], &[1004]);
            let scan = f.host().sockets().unwrap();
            let got: Vec<String> = scan.listeners.iter().map(ToString::to_string).collect();
            assert_eq!(
                got,
                vec![
                    "tcp/[::]:443 (nginx[11], nginx[12])",
                    "tcp/127.0.0.1:5432",
                    "tcp/0.0.0.0:31112 (oxygen[10])",
                    "udp/0.0.0.0:123 (chronyd[13])",
                ]
            );
            let oxy = &scan.listeners[2].processes[0];
            assert_eq!(oxy.cmdline, vec!["/opt/Sisense.Oxygen.exe", "-d"]);
            assert_eq!(scan.pids_unreadable, 0);
        }

        #[test]
        fn client_connections_carry_their_processes_and_accepted_ones_are_left_out() {
            let f = FakeProc::new();
            let any4 = v4("0.0.0.0");
            let me = v4("10.0.0.1");
            let peer = v4("10.0.0.9");
            f.file(
                "net/tcp",
                &[
                    HEADER.to_owned(),
                    socket_line(0, (any4, 5432), (any4, 0), TCP_LISTEN, 2001),
                    // Accepted by the listener: the listener names its owner already.
                    socket_line(1, (me, 5432), (peer, 40100), 0x01, 2002),
                    // Opened by this node: the owner of outbound traffic to 443.
                    socket_line(2, (me, 40200), (peer, 443), 0x01, 2003),
                    socket_line(3, (me, 40201), (peer, 443), TCP_TIME_WAIT, 0),
                ]
                .join("\n"),
            );
            f.file(
                "net/udp6",
                &[
                    HEADER.to_owned(),
                    socket_line(
                        0,
                        (v4("::ffff:10.0.0.1"), 40300),
                        (v4("::ffff:10.0.0.9"), 53),
                        0x01,
                        2004,
                    ),
                ]
                .join("\n"),
            );
            f.process(20, "postgres", &["postgres"], &[2001, 2002]);
            f.process(21, "curl", &["/usr/bin/curl", "https://x"], &[2003]);
            f.process(22, "unbound-client", &["resolver"], &[2004]);
            let scan = f.host().sockets().unwrap();
            let got: Vec<(Transport, u16, u16, Vec<&str>)> = scan
                .connections
                .iter()
                .map(|c| {
                    (
                        c.transport,
                        c.local_port,
                        c.remote_port,
                        c.processes.iter().map(|p| p.name.as_str()).collect(),
                    )
                })
                .collect();
            assert_eq!(
                got,
                vec![
                    (Transport::Tcp, 40200, 443, vec!["curl"]),
                    (Transport::Udp, 40300, 53, vec!["unbound-client"]),
                ]
            );
            assert_eq!(scan.connections[0].remote, peer);
            assert_eq!(scan.listeners.len(), 1);
        }

        #[test]
        fn ephemeral_range_and_hostname() {
            let f = FakeProc::new();
            f.file("sys/net/ipv4/ip_local_port_range", "20000\t29999\n");
            f.file("sys/kernel/hostname", "node-a\n");
            let h = f.host();
            assert_eq!(h.ephemeral_range().unwrap(), PortRange::new(20000, 29999));
            assert_eq!(h.hostname().as_deref(), Some("node-a"));
            f.file("sys/net/ipv4/ip_local_port_range", "20000\n");
            let err = h.ephemeral_range().unwrap_err().to_string();
            assert!(
                err.contains("ip_local_port_range:1: expected two port numbers"),
                "{err}"
            );
        }

        #[test]
        fn missing_files_are_empty_but_a_missing_range_is_an_error() {
            let f = FakeProc::new();
            let h = f.host();
            let scan = h.sockets().unwrap();
            assert!(scan.listeners.is_empty() && scan.connections.is_empty());
            assert!(matches!(h.ephemeral_range(), Err(HostError::Read { .. })));
            assert_eq!(h.hostname(), None);
        }
    }
}
