//! The port spec's data model: what a vendor's port table says, as typed values (entries, ports,
//! transports, directions, peers, provenance). Plain data with pure helpers; it does no I/O and
//! knows nothing of TOML (see `parse.rs`) or of any deployment (see `crate::inventory`).
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use ipnet::IpNet;
use serde::Serialize;

use crate::flow::key::Transport;

/// The zone every spec may use for "every node of the cluster". An inventory binds it explicitly
/// or, failing that, by its node list.
pub const ZONE_ALL_NODES: &str = "all-nodes";
/// The zone that contains every address. It needs no binding and cannot be bound.
pub const ZONE_ANY: &str = "any";

/// A position in a text file: 1-based line and column (in characters).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Location {
    pub file: PathBuf,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One product's port documentation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Spec {
    /// Short name, e.g. `sisense-multinode`.
    pub name: String,
    /// Which vendor document the spec transcribes.
    pub document: Document,
    /// Zones the spec uses, with what they mean (`[zones]` table), in file order.
    pub zones: Vec<ZoneDecl>,
    /// The spec file this was read from (as given to [`Spec::load`]/[`Spec::parse`]).
    pub path: PathBuf,
    /// The entries in file order. Ids are unique.
    pub entries: Vec<Entry>,
}

/// The vendor document a spec transcribes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Document {
    /// Vendor name, e.g. `Sisense`.
    pub vendor: String,
    /// Product name.
    pub product: String,
    /// Title of the document.
    pub title: String,
    /// Where the document was published, if known.
    pub url: Option<String>,
    /// A copy of the document, relative to the spec file, if shipped alongside.
    pub copy: Option<PathBuf>,
}

/// A zone name the spec uses and its meaning in the vendor's words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ZoneDecl {
    pub name: String,
    pub description: String,
    pub location: Location,
}

/// One documented rule: a service reachable on some ports with some transport, direction and
/// peers. One row of a vendor table gives one entry (rarely two, when a row says two things).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Stable identifier, unique within the spec (used in findings and metrics labels).
    pub id: String,
    /// The vendor's service name.
    pub service: String,
    /// The documented ports; [`Ports::None`] for ICMP or where the vendor says N/A.
    pub ports: Ports,
    /// Labels of [`Ports::Variants`] that are alternatives to each other (a site uses one of
    /// them); the other variants are used alongside. Empty: every variant is an alternative.
    pub alternatives: Vec<String>,
    /// The transport; `None` where the vendor gives none (a process with no network use).
    pub transport: Option<TransportSpec>,
    /// The application protocol label the vendor gives (HTTP, AMQP, SMB, RPC, SSH, ...).
    pub app: Option<String>,
    /// Direction relative to the node; `None` where the vendor gives none.
    pub direction: Option<DirectionSpec>,
    /// Who opens the connection (the clients).
    pub sources: Vec<Peer>,
    /// Who listens on [`Entry::ports`] (the servers).
    pub destinations: Vec<Peer>,
    /// Process names the vendor gives for the listening (or connecting) side.
    pub processes: Vec<String>,
    /// The vendor's description.
    pub description: String,
    pub flags: Flags,
    /// Where in the vendor document this came from.
    pub origin: Origin,
    /// Where the entry starts in the spec file.
    pub location: Location,
}

impl Entry {
    /// Whether the entry can match traffic at all (it has a transport and ports, or is ICMP).
    pub fn is_network(&self) -> bool {
        match self.transport {
            None => false,
            Some(t) if t.is_portless() => true,
            Some(_) => !self.ports.is_none(),
        }
    }

    /// Every zone name used in sources and destinations.
    pub fn zones(&self) -> impl Iterator<Item = &str> {
        self.sources
            .iter()
            .chain(&self.destinations)
            .filter_map(Peer::zone)
    }
}

/// Flags a vendor attaches to a row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Flags {
    /// Needed only during installation or upgrade (e.g. Sisense's 5986).
    pub install_only: bool,
    /// The ports are a dynamically allocated range: services pick any port in it.
    pub dynamic_range: bool,
    /// The vendor calls the port optional or recommended rather than required.
    pub optional: bool,
}

impl Flags {
    /// The flag names as written in a spec file, in a fixed order.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.install_only {
            v.push("install-only");
        }
        if self.dynamic_range {
            v.push("dynamic-range");
        }
        if self.optional {
            v.push("optional");
        }
        v
    }
}

/// Provenance: where in the vendor document an entry came from, and what was changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// The table (or note) of the document, e.g. "Required ports for IPMI".
    pub table: Option<String>,
    /// First line of the row in the shipped copy of the document (1-based).
    pub line: Option<u32>,
    /// Last line when the row spans several lines.
    pub line_end: Option<u32>,
    /// What the spec changed or interpreted relative to the document, and why.
    pub note: Option<String>,
    /// The ports as the document writes them, where the spec corrected them (the linter still
    /// checks these, so a corrected mistake stays visible).
    pub document_ports: Option<Ports>,
    /// The process names as the document writes them, where the spec corrected them.
    pub document_processes: Option<Vec<String>>,
}

/// The transport an entry documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportSpec {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv6,
    /// Any transport (the vendor does not say).
    Any,
}

impl TransportSpec {
    /// All variants, in the order their names are listed in hints.
    pub const ALL: [TransportSpec; 6] = [
        Self::Tcp,
        Self::Udp,
        Self::Sctp,
        Self::Icmp,
        Self::Icmpv6,
        Self::Any,
    ];

    /// Whether an observed transport satisfies this one.
    pub fn admits(self, t: Transport) -> bool {
        match self {
            Self::Any => true,
            Self::Tcp => t == Transport::Tcp,
            Self::Udp => t == Transport::Udp,
            Self::Sctp => t == Transport::Sctp,
            Self::Icmp => t == Transport::Icmp,
            Self::Icmpv6 => t == Transport::Icmpv6,
        }
    }

    /// ICMP and ICMPv6 carry no ports.
    pub fn is_portless(self) -> bool {
        matches!(self, Self::Icmp | Self::Icmpv6)
    }

    /// The name used in spec files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
            Self::Icmp => "icmp",
            Self::Icmpv6 => "icmpv6",
            Self::Any => "any",
        }
    }
}

impl fmt::Display for TransportSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TransportSpec {
    type Err = ();
    /// Case-insensitive; `icmpv4` is accepted for `icmp`.
    fn from_str(s: &str) -> Result<Self, ()> {
        let s = s.trim().to_ascii_lowercase();
        if s == "icmpv4" {
            return Ok(Self::Icmp);
        }
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or(())
    }
}

/// Direction relative to the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectionSpec {
    /// The node is the server: peers connect to it on the ports.
    Inbound,
    /// The node is the client: it connects to the ports on a peer.
    Outbound,
    /// Either way (cluster peers talking to each other, or the vendor says "bidirectional").
    Bidirectional,
}

impl DirectionSpec {
    pub const ALL: [DirectionSpec; 3] = [Self::Inbound, Self::Outbound, Self::Bidirectional];

    /// The name used in spec files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
            Self::Bidirectional => "bidirectional",
        }
    }

    /// Whether the node may be the server (listen on the ports).
    pub fn allows_inbound(self) -> bool {
        matches!(self, Self::Inbound | Self::Bidirectional)
    }

    /// Whether the node may be the client (connect to the ports on a peer).
    pub fn allows_outbound(self) -> bool {
        matches!(self, Self::Outbound | Self::Bidirectional)
    }
}

impl fmt::Display for DirectionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DirectionSpec {
    type Err = ();
    /// Case-insensitive; `in`, `out` and `both` are accepted too.
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim().to_ascii_lowercase().as_str() {
            "inbound" | "in" => Ok(Self::Inbound),
            "outbound" | "out" => Ok(Self::Outbound),
            "bidirectional" | "both" => Ok(Self::Bidirectional),
            _ => Err(()),
        }
    }
}

/// An inclusive port range; a single port has `start == end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    /// A range; `None` if `start > end` or `start == 0`.
    pub fn new(start: u16, end: u16) -> Option<Self> {
        (start != 0 && start <= end).then_some(Self { start, end })
    }

    /// A single port; `None` for port 0.
    pub fn single(port: u16) -> Option<Self> {
        Self::new(port, port)
    }

    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }

    /// Number of ports in the range.
    pub fn len(&self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }

    /// Always false: a range holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
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

/// A non-empty list of ports and ranges, in the vendor's order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PortSet(Vec<PortRange>);

impl PortSet {
    /// `None` if `ranges` is empty.
    pub fn new(ranges: Vec<PortRange>) -> Option<Self> {
        (!ranges.is_empty()).then_some(Self(ranges))
    }

    pub fn ranges(&self) -> &[PortRange] {
        &self.0
    }

    /// The range containing `port`, if any.
    pub fn find(&self, port: u16) -> Option<PortRange> {
        self.0.iter().copied().find(|r| r.contains(port))
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// A labelled group of ports ("TLS: 5671, 15671").
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct PortVariant {
    pub label: String,
    pub ports: PortSet,
}

/// The ports of an entry.
///
/// Written in a spec as an integer (`443`), a string (`"445, 137-139"`, `"25 or 587"`,
/// `"default: 5672, 15672; tls: 5671, 15671"`, `"none"`) or an array of integers and strings
/// (`[811, "9000-9010"]`). `Display` writes the string form, which parses back to the same value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", content = "groups", rename_all = "kebab-case")]
pub enum Ports {
    /// No port: ICMP, or the vendor says N/A.
    None,
    /// Every listed port and range belongs to the entry.
    All(PortSet),
    /// Any one alternative satisfies the entry ("25 or 587"): a site uses one of them.
    AnyOf(Vec<PortSet>),
    /// Labelled groups ("Default: 5672, 15672 / TLS: 5671, 15671 / Dist: 25672"). Every group
    /// is documented; the label says what each is for.
    Variants(Vec<PortVariant>),
}

/// Which part of a [`Ports`] value a port matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMatch<'a> {
    /// Index of the group (0 for [`Ports::All`], the alternative or variant index otherwise).
    pub group: usize,
    /// The variant's label, for [`Ports::Variants`].
    pub label: Option<&'a str>,
    /// The range (or single port) that contains the port.
    pub range: PortRange,
}

impl Ports {
    pub fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }

    /// The groups with their labels: one for `All`, one per alternative or variant, none for
    /// `None`.
    pub fn groups(&self) -> Vec<(Option<&str>, &PortSet)> {
        match self {
            Self::None => Vec::new(),
            Self::All(s) => vec![(None, s)],
            Self::AnyOf(v) => v.iter().map(|s| (None, s)).collect(),
            Self::Variants(v) => v
                .iter()
                .map(|pv| (Some(pv.label.as_str()), &pv.ports))
                .collect(),
        }
    }

    /// The first group and range containing `port`.
    pub fn matches(&self, port: u16) -> Option<PortMatch<'_>> {
        self.groups()
            .into_iter()
            .enumerate()
            .find_map(|(group, (label, set))| {
                set.find(port).map(|range| PortMatch {
                    group,
                    label,
                    range,
                })
            })
    }

    /// Every range of every group, with the group's label.
    pub fn iter_ranges(&self) -> impl Iterator<Item = (Option<&str>, PortRange)> + '_ {
        self.groups()
            .into_iter()
            .flat_map(|(label, set)| set.ranges().iter().map(move |r| (label, *r)))
    }

    /// Number of distinct ports covered.
    pub fn port_count(&self) -> u32 {
        let mut ranges: Vec<PortRange> = self.iter_ranges().map(|(_, r)| r).collect();
        ranges.sort();
        let mut count = 0u32;
        let mut next = 0u32; // first port not yet counted
        for r in ranges {
            let start = u32::from(r.start).max(next);
            let end = u32::from(r.end);
            if end >= start {
                count += end - start + 1;
                next = end + 1;
            }
        }
        count
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::All(s) => write!(f, "{s}"),
            Self::AnyOf(v) => {
                for (i, s) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" or ")?;
                    }
                    write!(f, "{s}")?;
                }
                Ok(())
            }
            Self::Variants(v) => {
                for (i, pv) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{}: {}", pv.label, pv.ports)?;
                }
                Ok(())
            }
        }
    }
}

/// Why a ports string did not parse. `found` is the offending piece of the string, verbatim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortsSyntaxError {
    pub expected: &'static str,
    pub found: String,
}

fn parse_port(s: &str) -> Result<u16, PortsSyntaxError> {
    let t = s.trim();
    let err = || PortsSyntaxError {
        expected: "a port number from 1 to 65535",
        found: t.to_string(),
    };
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    match t.parse::<u16>() {
        Ok(0) | Err(_) => Err(err()),
        Ok(p) => Ok(p),
    }
}

/// Parses `"80"` or `"20123-32768"` (spaces allowed around the dash).
pub fn parse_range(s: &str) -> Result<PortRange, PortsSyntaxError> {
    match s.split_once('-') {
        None => parse_port(s).map(|p| PortRange { start: p, end: p }),
        Some((a, b)) => {
            let (start, end) = (parse_port(a)?, parse_port(b)?);
            PortRange::new(start, end).ok_or_else(|| PortsSyntaxError {
                expected: "a range whose start is not above its end",
                found: s.trim().to_string(),
            })
        }
    }
}

/// Parses `"445, 137-139"`.
pub fn parse_set(s: &str) -> Result<PortSet, PortsSyntaxError> {
    let ranges = s
        .split(',')
        .map(parse_range)
        .collect::<Result<Vec<_>, _>>()?;
    PortSet::new(ranges).ok_or(PortsSyntaxError {
        expected: "at least one port",
        found: String::new(),
    })
}

impl FromStr for Ports {
    type Err = PortsSyntaxError;

    fn from_str(s: &str) -> Result<Self, PortsSyntaxError> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("none") || t.eq_ignore_ascii_case("n/a") {
            return Ok(Self::None);
        }
        if t.contains(':') {
            let variants = t
                .split(';')
                .map(|part| {
                    let (label, ports) = part.split_once(':').ok_or_else(|| PortsSyntaxError {
                        expected: "a variant written `label: ports`",
                        found: part.trim().to_string(),
                    })?;
                    let label = label.trim();
                    if label.is_empty() || label.contains([';', ':', '"', '\n']) {
                        return Err(PortsSyntaxError {
                            expected: "a non-empty variant label",
                            found: label.to_string(),
                        });
                    }
                    Ok(PortVariant {
                        label: label.to_string(),
                        ports: parse_set(ports)?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Self::Variants(variants));
        }
        let lower = t.to_ascii_lowercase();
        let alternatives: Vec<&str> = split_or(t, &lower);
        if alternatives.len() > 1 {
            return alternatives
                .into_iter()
                .map(parse_set)
                .collect::<Result<Vec<_>, _>>()
                .map(Self::AnyOf);
        }
        parse_set(t).map(Self::All)
    }
}

/// Splits on the word "or" (case-insensitive, surrounded by spaces).
fn split_or<'a>(orig: &'a str, lower: &str) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let mut last = 0;
    let mut from = 0;
    while let Some(i) = lower[from..].find(" or ") {
        let at = from + i;
        parts.push(&orig[last..at]);
        last = at + 4;
        from = last;
    }
    parts.push(&orig[last..]);
    parts
}

/// A source or destination of an entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Peer {
    /// A named zone (`all-nodes`, `admin`, `all-users`, `vendor-support`, ...), bound to
    /// addresses by an inventory.
    Zone(String),
    /// A network.
    Net(IpNet),
    /// One address.
    Addr(IpAddr),
    /// A host name (an external endpoint such as `listener.logz.io`).
    Host(String),
}

impl Peer {
    /// The zone name, for [`Peer::Zone`].
    pub fn zone(&self) -> Option<&str> {
        match self {
            Self::Zone(z) => Some(z),
            _ => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Zone(z) => f.write_str(z),
            Self::Net(n) => write!(f, "{n}"),
            Self::Addr(a) => write!(f, "{a}"),
            // Plain only where the plain form reads back as this host name ("listener.logz.io");
            // otherwise prefixed ("host:localhost", "host:42", "host:10.0.0.1").
            Self::Host(h) if h.parse::<Peer>().as_ref() == Ok(self) => f.write_str(h),
            Self::Host(h) => write!(f, "host:{h}"),
        }
    }
}

/// Whether `s` is a valid zone name: lowercase ASCII letters, digits, `-` and `_`, starting
/// with a letter, at most 64 characters.
pub fn is_zone_name(s: &str) -> bool {
    s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Whether `s` is a plausible DNS host name (letters, digits, `-` and dots; labels of 1 to 63
/// characters; at most 253 characters).
pub fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Why a peer did not parse (`found` is the text, verbatim).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSyntaxError {
    pub found: String,
}

impl FromStr for Peer {
    type Err = PeerSyntaxError;

    /// An address (`10.0.0.5`, `fd00::5`), a network (`10.0.0.0/8`), a host name with a dot
    /// (`listener.logz.io`) or a zone name (`all-nodes`). Prefixes `zone:` and `host:` force
    /// the kind (`host:localhost`).
    fn from_str(s: &str) -> Result<Self, PeerSyntaxError> {
        let t = s.trim();
        let err = || PeerSyntaxError {
            found: t.to_string(),
        };
        if let Some(z) = t.strip_prefix("zone:") {
            return is_zone_name(z)
                .then(|| Self::Zone(z.to_string()))
                .ok_or_else(err);
        }
        if let Some(h) = t.strip_prefix("host:") {
            return is_host_name(h)
                .then(|| Self::Host(h.to_ascii_lowercase()))
                .ok_or_else(err);
        }
        if let Ok(a) = t.parse::<IpAddr>() {
            return Ok(Self::Addr(a));
        }
        if let Ok(n) = t.parse::<IpNet>() {
            return Ok(Self::Net(n));
        }
        if is_zone_name(t) {
            return Ok(Self::Zone(t.to_string()));
        }
        if t.contains('.') && is_host_name(t) && !t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        {
            return Ok(Self::Host(t.to_ascii_lowercase()));
        }
        Err(err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: u16, b: u16) -> PortRange {
        PortRange::new(a, b).unwrap()
    }

    #[test]
    fn ports_parse_every_form() {
        assert_eq!(
            "443".parse::<Ports>().unwrap(),
            Ports::All(PortSet(vec![r(443, 443)]))
        );
        assert_eq!(
            "445, 137-139".parse::<Ports>().unwrap(),
            Ports::All(PortSet(vec![r(445, 445), r(137, 139)]))
        );
        assert_eq!(
            "20123 - 32768".parse::<Ports>().unwrap(),
            Ports::All(PortSet(vec![r(20123, 32768)]))
        );
        assert_eq!(
            "25 or 587".parse::<Ports>().unwrap(),
            Ports::AnyOf(vec![PortSet(vec![r(25, 25)]), PortSet(vec![r(587, 587)])])
        );
        assert_eq!("N/A".parse::<Ports>().unwrap(), Ports::None);
        let v: Ports = "default: 5672, 15672; TLS: 5671,15671; Dist: 25672; Discovery (ERL): 4369"
            .parse()
            .unwrap();
        let Ports::Variants(ref vs) = v else {
            panic!("expected variants, got {v:?}")
        };
        assert_eq!(vs.len(), 4);
        assert_eq!(vs[3].label, "Discovery (ERL)");
        assert_eq!(vs[1].ports.ranges(), &[r(5671, 5671), r(15671, 15671)]);
    }

    #[test]
    fn ports_reject_bad_values() {
        for bad in [
            "0", "65536", "", "80-", "90-80", "http", "1,,2", "a: ", ": 80", "25 or",
        ] {
            assert!(bad.parse::<Ports>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn ports_display_round_trips() {
        for s in [
            "443",
            "445, 137-139",
            "25 or 587",
            "none",
            "default: 5672, 15672; TLS: 5671, 15671; Discovery (ERL): 4369",
        ] {
            let p: Ports = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
            assert_eq!(p.to_string().parse::<Ports>().unwrap(), p);
        }
    }

    #[test]
    fn matches_names_the_variant_and_range() {
        let v: Ports = "default: 5672, 15672; tls: 5671, 15671".parse().unwrap();
        let m = v.matches(15671).unwrap();
        assert_eq!(
            (m.group, m.label, m.range),
            (1, Some("tls"), r(15671, 15671))
        );
        assert_eq!(v.matches(5673), None);
        let a: Ports = "25 or 587".parse().unwrap();
        assert_eq!(a.matches(587).map(|m| m.group), Some(1));
        let s: Ports = "8095, 9000-9010".parse().unwrap();
        assert_eq!(s.matches(9005).unwrap().range, r(9000, 9010));
        assert_eq!(Ports::None.matches(1), None);
        assert_eq!(s.iter_ranges().count(), 2);
        assert_eq!(s.port_count(), 12);
        let overlapping: Ports = "14996, 15000-15050, 15010".parse().unwrap();
        assert_eq!(overlapping.port_count(), 52);
    }

    #[test]
    fn peers_parse_by_shape() {
        assert_eq!("all-nodes".parse(), Ok(Peer::Zone("all-nodes".into())));
        assert_eq!(
            "listener.logz.io".parse(),
            Ok(Peer::Host("listener.logz.io".into()))
        );
        assert_eq!(
            "208.83.110.20".parse(),
            Ok(Peer::Addr("208.83.110.20".parse().unwrap()))
        );
        assert_eq!(
            "10.0.0.0/8".parse(),
            Ok(Peer::Net("10.0.0.0/8".parse().unwrap()))
        );
        assert_eq!("host:localhost".parse(), Ok(Peer::Host("localhost".into())));
        assert_eq!(Peer::Host("localhost".into()).to_string(), "host:localhost");
        assert_eq!(Peer::Host("logz.io".into()).to_string(), "logz.io");
    }

    /// Found by the spec_values fuzz target: `host:42` parsed to a host name that printed as
    /// `42`, which reads back as nothing (and `host:10.0.0.1` would have read back as an address).
    #[test]
    fn regression_host_names_print_back_to_host_names() {
        for s in ["host:42", "host:10.0.0.1", "host:all-nodes", "host:a.b"] {
            let p: Peer = s.parse().unwrap();
            assert!(matches!(p, Peer::Host(_)), "{s}");
            assert_eq!(
                p.to_string().parse::<Peer>(),
                Ok(p.clone()),
                "{s} printed {p}"
            );
        }
        for bad in ["All Nodes", "", "1.2.3.4.5", "-x.com", "zone:Bad", "a..b"] {
            assert!(bad.parse::<Peer>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn transport_admits_observed_protocols() {
        assert!(TransportSpec::Tcp.admits(Transport::Tcp));
        assert!(!TransportSpec::Tcp.admits(Transport::Udp));
        assert!(TransportSpec::Any.admits(Transport::Other(47)));
        assert_eq!("ICMPv4".parse(), Ok(TransportSpec::Icmp));
        assert!("smtp".parse::<TransportSpec>().is_err());
    }
}
