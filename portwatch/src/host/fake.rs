//! An in-memory [`Host`] for tests and for runs without a host to inspect (offline captures).
use super::{Connection, Host, HostError, Listener, PortRange, SocketScan};

/// Returns what it was given.
#[derive(Clone, Debug)]
pub struct FakeHost {
    pub listeners: Vec<Listener>,
    pub connections: Vec<Connection>,
    pub ephemeral: PortRange,
    pub hostname: Option<String>,
}

impl Default for FakeHost {
    fn default() -> Self {
        Self {
            listeners: Vec::new(),
            connections: Vec::new(),
            ephemeral: PortRange::LINUX_DEFAULT,
            hostname: None,
        }
    }
}

impl Host for FakeHost {
    fn sockets(&self) -> Result<SocketScan, HostError> {
        let mut listeners = self.listeners.clone();
        listeners.sort_by_key(|l| (l.transport, l.port, l.addr));
        let mut connections = self.connections.clone();
        connections.sort();
        Ok(SocketScan {
            listeners,
            connections,
            connections_over_limit: 0,
            pids_unreadable: 0,
        })
    }
    fn ephemeral_range(&self) -> Result<PortRange, HostError> {
        Ok(self.ephemeral)
    }
    fn hostname(&self) -> Option<String> {
        self.hostname.clone()
    }
}
