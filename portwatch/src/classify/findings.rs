//! The results of classification: findings with the spec entry they name, their evidence
//! (counts, first/last seen, top peers) and a display form. Plain data, serialisable: the
//! report model embeds it as is.
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::direction::{Role, UnknownReason};
use crate::clock::UnixNanos;
use crate::flow::Transport;

/// The spec entry a finding names, copied out of the spec so reports stand alone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntryRef {
    /// The entry's id (unique within its spec).
    pub id: String,
    pub service: String,
    /// The entry's ports as the spec writes them (e.g. "25 or 587", "15000-15050").
    pub ports: String,
    /// The entry's transport as the spec writes it.
    pub transport: String,
    /// inbound, outbound or bidirectional.
    pub direction: String,
    /// Spec file and 1-based line of the entry.
    pub file: String,
    pub line: u32,
}

impl fmt::Display for EntryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{} {} {}] ({}:{})",
            self.id, self.transport, self.ports, self.direction, self.file, self.line
        )
    }
}

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Traffic that breaks a documented rule (direction, transport, zone).
    Violation,
    /// Undocumented traffic or exposure, or a listener owned by another process than named.
    Warning,
    /// Something to look at: unused entries, missing listeners, unknown direction.
    Notice,
    /// Documented and as expected.
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Violation => "violation",
            Self::Warning => "warning",
            Self::Notice => "notice",
            Self::Info => "info",
        })
    }
}

/// What a finding says. Variants carry what the kind needs beyond the common fields of
/// [`Finding`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FindingKind {
    /// Traffic the entry documents.
    Documented,
    /// Traffic on a port, transport and role no entry documents.
    Undocumented,
    /// Traffic on an entry's port and transport, in the other direction.
    WrongDirection { expected: String, observed: Role },
    /// Traffic on an entry's port and direction, over another transport.
    WrongTransport {
        expected: String,
        observed: Transport,
    },
    /// Documented traffic with peers outside the entry's zones (per the inventory).
    PeerOutsideZone {
        /// The zones, CIDRs and hosts the entry allows.
        allowed: Vec<String>,
        /// The peers outside them (sorted; at most 100).
        outside: Vec<IpAddr>,
        /// How many distinct peers were outside.
        #[serde(default)]
        outside_total: u64,
    },
    /// A documented entry without traffic in the window.
    Unused {
        /// Why the entry may legitimately be quiet (install only, optional, ...), if flagged.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Ports of an entry used in the window that saw none of its traffic: candidates for
    /// closing even though the entry is in use.
    UnusedPorts {
        /// The ports and ranges without traffic, as the spec writes them; a labelled variant's
        /// port carries its label (`5671 (TLS)`).
        ports: Vec<String>,
    },
    /// A listening socket no inbound entry documents (every bound address of the port).
    UndocumentedListener { addrs: Vec<IpAddr> },
    /// A documented inbound port with nothing listening on it.
    NotListening {
        /// The entry's ports and ranges with no listener, as the spec writes them (for
        /// alternatives: every alternative's, as none of them listens).
        missing: Vec<String>,
    },
    /// A listener on an entry's port owned by a process the entry does not name.
    ProcessMismatch {
        expected: Vec<String>,
        found: Vec<String>,
    },
    /// Flows whose server side could not be decided: counted and shown, never guessed.
    UnknownDirection {
        reason: UnknownReason,
        /// The other port of the flows (the finding's `port` is the local one); none for the
        /// finding that sums up the groups beyond the report's limit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remote_port: Option<u16>,
        /// Entries either port could belong to.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        candidates: Vec<EntryRef>,
    },
}

impl FindingKind {
    /// The kind's name as in JSON (`documented`, `wrong_direction`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Documented => "documented",
            Self::Undocumented => "undocumented",
            Self::WrongDirection { .. } => "wrong_direction",
            Self::WrongTransport { .. } => "wrong_transport",
            Self::PeerOutsideZone { .. } => "peer_outside_zone",
            Self::Unused { .. } => "unused",
            Self::UnusedPorts { .. } => "unused_ports",
            Self::UndocumentedListener { .. } => "undocumented_listener",
            Self::NotListening { .. } => "not_listening",
            Self::ProcessMismatch { .. } => "process_mismatch",
            Self::UnknownDirection { .. } => "unknown_direction",
        }
    }

    /// How much it matters.
    pub fn severity(&self) -> Severity {
        match self {
            Self::WrongDirection { .. }
            | Self::WrongTransport { .. }
            | Self::PeerOutsideZone { .. } => Severity::Violation,
            Self::Undocumented
            | Self::UndocumentedListener { .. }
            | Self::ProcessMismatch { .. } => Severity::Warning,
            Self::Unused { .. }
            | Self::UnusedPorts { .. }
            | Self::NotListening { .. }
            | Self::UnknownDirection { .. } => Severity::Notice,
            Self::Documented => Severity::Info,
        }
    }

    /// Order of kinds in reports: most serious first.
    pub fn rank(&self) -> u8 {
        match self {
            Self::WrongDirection { .. } => 0,
            Self::WrongTransport { .. } => 1,
            Self::PeerOutsideZone { .. } => 2,
            Self::ProcessMismatch { .. } => 3,
            Self::Undocumented => 4,
            Self::UndocumentedListener { .. } => 5,
            Self::UnknownDirection { .. } => 6,
            Self::NotListening { .. } => 7,
            Self::Unused { .. } => 8,
            Self::UnusedPorts { .. } => 9,
            Self::Documented => 10,
        }
    }

    /// Every kind name, in report order.
    pub const NAMES: [&'static str; 11] = [
        "wrong_direction",
        "wrong_transport",
        "peer_outside_zone",
        "process_mismatch",
        "undocumented",
        "undocumented_listener",
        "unknown_direction",
        "not_listening",
        "unused",
        "unused_ports",
        "documented",
    ];
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Documented => f.write_str("documented"),
            Self::Undocumented => f.write_str("undocumented traffic"),
            Self::WrongDirection { expected, observed } => {
                write!(f, "wrong direction: {observed}, spec says {expected}")
            }
            Self::WrongTransport { expected, observed } => {
                write!(f, "wrong transport: {observed}, spec says {expected}")
            }
            Self::PeerOutsideZone {
                allowed,
                outside_total,
                ..
            } => write!(f, "{outside_total} peer(s) outside {}", allowed.join(", ")),
            Self::Unused { note: None } => f.write_str("unused"),
            Self::Unused { note: Some(n) } => write!(f, "unused ({n})"),
            Self::UnusedPorts { ports } => write!(f, "no traffic on {}", ports.join(", ")),
            Self::UndocumentedListener { addrs } => {
                let a: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
                write!(f, "undocumented listener on {}", a.join(", "))
            }
            Self::NotListening { missing } => {
                write!(f, "nothing listening on {}", missing.join(", "))
            }
            Self::ProcessMismatch { expected, found } => write!(
                f,
                "process {} where spec names {}",
                found.join(", "),
                expected.join(", ")
            ),
            Self::UnknownDirection {
                reason,
                remote_port: Some(p),
                ..
            } => write!(f, "direction unknown ({reason}), peer port {p}"),
            Self::UnknownDirection { reason, .. } => write!(f, "direction unknown ({reason})"),
        }
    }
}

/// Packets and bytes both ways plus flow count and time span, from flow detail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub flows: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// Unix nanoseconds; 0 when nothing was seen.
    pub first_seen: UnixNanos,
    pub last_seen: UnixNanos,
}

impl Traffic {
    /// Adds `o`.
    pub fn add(&mut self, o: &Traffic) {
        self.flows = self.flows.saturating_add(o.flows);
        self.packets_in = self.packets_in.saturating_add(o.packets_in);
        self.bytes_in = self.bytes_in.saturating_add(o.bytes_in);
        self.packets_out = self.packets_out.saturating_add(o.packets_out);
        self.bytes_out = self.bytes_out.saturating_add(o.bytes_out);
        if o.first_seen != 0 && (self.first_seen == 0 || o.first_seen < self.first_seen) {
            self.first_seen = o.first_seen;
        }
        self.last_seen = self.last_seen.max(o.last_seen);
    }
    /// Total packets both ways.
    pub fn packets(&self) -> u64 {
        self.packets_in.saturating_add(self.packets_out)
    }
    /// Total bytes both ways.
    pub fn bytes(&self) -> u64 {
        self.bytes_in.saturating_add(self.bytes_out)
    }
}

/// Exact per-port packet and byte counts (lossless totals, even when flow detail overflowed).
/// They count every packet on the port, whichever role the port played.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCountsInOut {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
}

impl PortCountsInOut {
    /// Adds `o`.
    pub fn add(&mut self, o: &PortCountsInOut) {
        self.packets_in = self.packets_in.saturating_add(o.packets_in);
        self.bytes_in = self.bytes_in.saturating_add(o.bytes_in);
        self.packets_out = self.packets_out.saturating_add(o.packets_out);
        self.bytes_out = self.bytes_out.saturating_add(o.bytes_out);
    }
    /// Whether nothing was counted.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// One peer's share of a finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStat {
    pub addr: IpAddr,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// A finding: what, which entry, and the evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    #[serde(flatten)]
    pub kind: FindingKind,
    pub severity: Severity,
    /// The spec entry the finding names (none for undocumented traffic and listeners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<EntryRef>,
    /// Transport of the traffic or listener (the entry's, for entry-only findings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// The service port (the local port for unknown direction); none for port-less traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The node's role in the traffic, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Every service port seen, when the finding covers several (an entry with a range).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports_seen: Vec<u16>,
    /// From flow detail (a lower bound when the report says flows are approximate).
    #[serde(default)]
    pub traffic: Traffic,
    /// Exact per-port totals for the service port on the service side, when available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_totals: Option<PortCountsInOut>,
    /// Top peers by bytes (at most [`TOP_PEERS`]), and how many distinct peers there were.
    #[serde(default)]
    pub peers: Vec<PeerStat>,
    #[serde(default)]
    pub peers_total: u64,
    /// Owning processes, as `name[pid]` (listener findings, and inbound traffic to a listener).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
}

/// How many peers a finding lists.
pub const TOP_PEERS: usize = 10;

impl Finding {
    /// A finding of `kind` with empty evidence.
    pub fn new(kind: FindingKind) -> Self {
        Self {
            severity: kind.severity(),
            kind,
            entry: None,
            transport: None,
            port: None,
            role: None,
            ports_seen: Vec::new(),
            traffic: Traffic::default(),
            port_totals: None,
            peers: Vec::new(),
            peers_total: 0,
            processes: Vec::new(),
        }
    }

    /// "tcp/443 inbound", "udp/123", "icmp inbound"; for findings about an entry rather than
    /// traffic, the entry's transport, ports and direction ("tcp/25 or 587 outbound").
    pub fn subject(&self) -> String {
        if let (None, true, Some(e)) = (self.port, self.ports_seen.is_empty(), &self.entry)
            && self.traffic.flows == 0
        {
            return format!("{}/{} {}", e.transport, e.ports, e.direction);
        }
        let mut s = match (self.transport, self.port) {
            (Some(t), Some(p)) => format!("{t}/{p}"),
            (Some(t), None) => t.to_string(),
            (None, _) => "-".to_owned(),
        };
        if let Some(r) = self.role {
            s.push(' ');
            s.push_str(r.as_direction());
        }
        s
    }

    /// The sort key reports use: kind, then entry, then subject.
    pub fn sort_key(
        &self,
    ) -> (
        u8,
        Option<&str>,
        Option<Transport>,
        Option<u16>,
        Option<Role>,
    ) {
        (
            self.kind.rank(),
            self.entry.as_ref().map(|e| e.id.as_str()),
            self.transport,
            self.port,
            self.role,
        )
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} {}", self.severity, self.subject(), self.kind)?;
        if let Some(e) = &self.entry {
            write!(f, " - {e}")?;
        }
        Ok(())
    }
}
