//! Classification: holds observed flows, per-port totals and listeners against the spec and
//! inventory and produces findings. PURE: no clock, no I/O, no logging; everything it needs
//! arrives in [`ClassifyInput`], everything it says leaves in [`Findings`].
pub mod direction;
pub mod distribution;
mod engine;
pub mod findings;
pub mod listeners;
pub mod series;
mod wellknown;

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use direction::{DirectionContext, Evidence, Orientation, Role, UnknownReason, orient};
pub use distribution::{Distribution, DistributionError, Recorder};
pub use series::Series;

pub(crate) use engine::entry_ref;
pub use findings::{
    EntryRef, Finding, FindingKind, PeerStat, PortCountsInOut, Severity, TOP_PEERS, Traffic,
};
pub use listeners::{JudgedListener, ListenerVerdict, judge_listeners};

use crate::flow::Snapshot;
use crate::host::{Connection, Listener, PortRange};
use crate::inventory::Inventory;
use crate::spec::Spec;

/// The node being classified.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// The node's own addresses: peers with these (or loopback) addresses are the node itself
    /// and are not held against zones.
    #[serde(default)]
    pub addrs: Vec<IpAddr>,
}

/// Everything classification looks at.
#[derive(Clone, Copy, Debug)]
pub struct ClassifyInput<'a> {
    pub spec: &'a Spec,
    /// Zones and nodes of the site; without it, peers are not checked against zones.
    pub inventory: Option<&'a Inventory>,
    /// The observation window (one interval's snapshot, or [`crate::flow::Window::snapshot`]).
    pub window: &'a Snapshot,
    /// Listening sockets; `None` when they could not be read (offline capture, other OS):
    /// listener findings are then skipped and direction inference does without them.
    pub listeners: Option<&'a [Listener]>,
    /// This node's client-side connections with their owning processes (a scan at the
    /// interval's end); `None` when they could not be read. Names the process behind outbound
    /// flows that are still open at the scan: others have no known process, which is never
    /// held against an entry.
    pub connections: Option<&'a [Connection]>,
    /// The node's ephemeral port range.
    pub ephemeral: PortRange,
    pub node: &'a NodeInfo,
}

/// What classification found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Findings {
    /// Sorted: most serious kind first, then entry id, transport, port, role.
    pub findings: Vec<Finding>,
    pub summary: Summary,
    /// Per-service distributions, sorted by service.
    pub services: Vec<ServiceStats>,
}

/// Counts over the whole window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of findings of each kind (every kind present, zero included).
    pub kinds: BTreeMap<String, u64>,
    pub flows: FlowSummary,
    pub entries: EntrySummary,
    /// `None` when listeners were not available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listeners: Option<ListenerSummary>,
    /// Flow detail is incomplete (the flow table overflowed or capture dropped packets):
    /// flow-derived counts are lower bounds, per-port totals stay exact.
    pub flows_approximate: bool,
}

/// How flows were classified.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowSummary {
    pub total: u64,
    /// Node was the server / the client / could not be told.
    pub server: u64,
    pub client: u64,
    pub unknown_direction: u64,
    pub documented: u64,
    pub undocumented: u64,
    /// Wrong direction, wrong transport, or peer outside the entry's zones.
    pub violating: u64,
    /// Documented flows whose peer the inventory could not place (unbound zone, unresolved
    /// host name): neither confirmed nor flagged.
    pub peer_unverifiable: u64,
    /// ICMPv6 neighbour discovery and multicast listener traffic, which no port table lists
    /// and every IPv6 link carries: counted, not classified.
    pub infrastructure: u64,
}

/// How spec entries fared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrySummary {
    pub total: u64,
    /// Entries without transport or ports (the vendor says N/A): nothing to observe.
    pub not_observable: u64,
    pub used: u64,
    pub unused: u64,
    /// Entries with no classified flow but with packets in the per-port totals while flow
    /// detail was incomplete: neither used nor unused can be claimed.
    pub usage_unknown: u64,
}

/// How listeners fared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerSummary {
    pub total: u64,
    pub documented: u64,
    pub undocumented: u64,
    /// Bound to loopback only: not reachable from the network, not held against the spec.
    pub loopback_only: u64,
    /// Unconnected UDP sockets in the ephemeral range (client sockets of resolvers, NTP...).
    pub ephemeral_udp: u64,
    /// Listeners whose owning process could not be read (permissions).
    pub without_process: u64,
}

/// Flow duration and size for one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStats {
    /// The entry's service name, or the subject of undocumented traffic
    /// (`undocumented tcp/8080 inbound`).
    pub service: String,
    /// Entry ids the flows matched (empty for undocumented traffic).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<String>,
    /// Flow duration (last seen - first seen), microseconds.
    pub duration_us: Distribution,
    /// Bytes per flow, both directions.
    pub bytes: Distribution,
    /// Bytes and new flows over the window (empty in reports written before it existed).
    #[serde(default, skip_serializing_if = "Series::is_empty")]
    pub series: Series,
}

/// Classifies one window. Pure and deterministic.
pub fn classify(input: &ClassifyInput<'_>) -> Findings {
    engine::run(input)
}

#[cfg(test)]
pub(crate) mod tests;
