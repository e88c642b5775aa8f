//! The host seam: listening and connected sockets, the processes that own them and the
//! ephemeral port range, read through the [`Host`] trait. Linux reads /proc (rooted at a configurable path so tests use
//! a fake tree); other systems report that the information is unavailable. Never touches
//! capture, the spec or the clock.
mod fake;
mod procfs;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::flow::Transport;

pub use fake::FakeHost;
pub use procfs::ProcFs;

/// An inclusive range of port numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    /// The IANA dynamic/private range (RFC 6335), which Windows and macOS use for ephemeral
    /// ports and which Linux peers' ranges mostly overlap.
    pub const IANA_DYNAMIC: PortRange = PortRange {
        start: 49152,
        end: 65535,
    };
    /// Linux's default `net.ipv4.ip_local_port_range`.
    pub const LINUX_DEFAULT: PortRange = PortRange {
        start: 32768,
        end: 60999,
    };

    /// A range; `start` and `end` are swapped if given in the wrong order.
    pub fn new(start: u16, end: u16) -> Self {
        Self {
            start: start.min(end),
            end: start.max(end),
        }
    }

    /// Whether `port` lies in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// A process that holds a socket.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    /// The kernel's name for the process (`comm`, at most 15 bytes on Linux).
    pub name: String,
    /// The command line, one element per argument (empty for kernel threads or when hidden).
    pub cmdline: Vec<String>,
}

impl Process {
    /// The names a spec may use for this process: `comm`, and the file name of argv\[0\]
    /// (which is not truncated).
    pub fn names(&self) -> Vec<&str> {
        let mut v = vec![self.name.as_str()];
        if let Some(arg0) = self.cmdline.first() {
            let base = arg0.rsplit(['/', '\\']).next().unwrap_or(arg0);
            if !base.is_empty() && base != self.name {
                v.push(base);
            }
        }
        v
    }
}

/// A socket waiting for peers: a TCP socket in LISTEN state, or a UDP socket bound to a port
/// and not connected.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Listener {
    pub transport: Transport,
    /// The bound address (`0.0.0.0` or `::` for every address).
    pub addr: IpAddr,
    pub port: u16,
    /// Socket inode (0 when unknown).
    pub inode: u64,
    /// Owning processes (several when a socket is shared after fork); empty when unknown.
    pub processes: Vec<Process>,
}

impl Listener {
    /// Whether a packet for `ip` reaches this socket's bound address. `::` also accepts IPv4
    /// (dual-stack, the Linux default); IPv4-mapped IPv6 addresses compare as IPv4.
    pub fn accepts(&self, ip: IpAddr) -> bool {
        let bound = canonical(self.addr);
        let ip = canonical(ip);
        match bound {
            IpAddr::V4(b) if b.is_unspecified() => ip.is_ipv4(),
            IpAddr::V6(b) if b.is_unspecified() => true,
            b => b == ip,
        }
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{}/{a}:{}", self.transport, self.port)?,
            IpAddr::V6(a) => write!(f, "{}/[{a}]:{}", self.transport, self.port)?,
        }
        let names: Vec<String> = self
            .processes
            .iter()
            .map(|p| format!("{}[{}]", p.name, p.pid))
            .collect();
        if !names.is_empty() {
            write!(f, " ({})", names.join(", "))?;
        }
        Ok(())
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) as IPv4; everything else unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// A connected socket this node opened as the client: a TCP connection (any state but LISTEN
/// and TIME_WAIT) or a connected UDP socket whose local port no listener serves. It names the
/// process behind outbound traffic, which the packets themselves do not.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Connection {
    pub transport: Transport,
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    /// Socket inode (0 when unknown).
    pub inode: u64,
    /// Owning processes; empty when unknown.
    pub processes: Vec<Process>,
}

/// The most client-side connections one scan keeps with their owners (a bound on the scan's
/// memory on nodes with very many outbound connections).
pub const MAX_CONNECTIONS: usize = 16_384;

/// What one socket scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketScan {
    /// Sorted by transport, port, address.
    pub listeners: Vec<Listener>,
    /// Client-side connections open at the time of the scan, sorted; at most
    /// [`MAX_CONNECTIONS`].
    pub connections: Vec<Connection>,
    /// Client-side connections beyond [`MAX_CONNECTIONS`], left out (their flows have no
    /// known process).
    #[serde(default)]
    pub connections_over_limit: u64,
    /// Processes whose sockets could not be read (permission): their sockets have no owner.
    pub pids_unreadable: u64,
}

/// Failures reading host information.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected {expected}, found {found:?}")]
    Parse {
        path: PathBuf,
        line: usize,
        expected: &'static str,
        found: String,
    },
    #[error("listening sockets and process names are not available on {os} (Linux /proc only)")]
    Unsupported { os: &'static str },
}

/// Where listeners, processes and the ephemeral range come from.
pub trait Host: Send + Sync {
    /// Listening TCP and bound UDP sockets, and the client side of connected ones, with their
    /// owning processes.
    fn sockets(&self) -> Result<SocketScan, HostError>;
    /// The range this node picks client ports from.
    fn ephemeral_range(&self) -> Result<PortRange, HostError>;
    /// The node's host name, when known.
    fn hostname(&self) -> Option<String>;
}

/// The host this program runs on: /proc on Linux, [`Unsupported`] elsewhere.
pub fn system() -> Box<dyn Host> {
    #[cfg(target_os = "linux")]
    {
        Box::new(ProcFs::new("/proc"))
    }
    #[cfg(not(target_os = "linux"))]
    {
        Box::new(Unsupported)
    }
}

/// A host without a supported source of socket information (Windows, macOS): no listeners, and
/// the IANA dynamic range as the ephemeral range (the default on both).
#[derive(Clone, Copy, Debug, Default)]
pub struct Unsupported;

impl Host for Unsupported {
    fn sockets(&self) -> Result<SocketScan, HostError> {
        Err(HostError::Unsupported {
            os: std::env::consts::OS,
        })
    }
    fn ephemeral_range(&self) -> Result<PortRange, HostError> {
        Ok(PortRange::IANA_DYNAMIC)
    }
    fn hostname(&self) -> Option<String> {
        std::env::var("COMPUTERNAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn listener(addr: IpAddr) -> Listener {
        Listener {
            transport: Transport::Tcp,
            addr,
            port: 22,
            inode: 1,
            processes: vec![],
        }
    }

    #[test]
    fn wildcard_and_mapped_addresses_are_accepted_as_the_kernel_would() {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
        let any4 = listener(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let any6 = listener(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        let one = listener(v4);
        let one_mapped = listener(mapped);
        assert!(any4.accepts(v4) && any4.accepts(mapped) && !any4.accepts(v6));
        assert!(any6.accepts(v4) && any6.accepts(v6) && any6.accepts(mapped));
        assert!(one.accepts(mapped) && one_mapped.accepts(v4));
        assert!(!one.accepts(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))));
    }

    #[test]
    fn port_range_orders_its_bounds() {
        let r = PortRange::new(60999, 32768);
        assert_eq!(r, PortRange::LINUX_DEFAULT);
        assert!(r.contains(32768) && r.contains(60999) && !r.contains(61000));
        assert_eq!(r.to_string(), "32768-60999");
    }

    #[test]
    fn process_names_include_the_untruncated_argv0() {
        let p = Process {
            pid: 7,
            name: "Sisense.Oxygen.".into(),
            cmdline: vec!["/opt/sisense/Sisense.Oxygen.exe".into(), "--x".into()],
        };
        assert_eq!(p.names(), vec!["Sisense.Oxygen.", "Sisense.Oxygen.exe"]);
    }
}
