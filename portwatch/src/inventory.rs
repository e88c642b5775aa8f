//! The inventory of one deployment: binds the spec's zone names to networks, host names to
//! addresses, and lists the cluster's nodes. It is site data kept apart from the vendor spec; it
//! knows nothing of ports or traffic.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::spec::model::{Location, Peer, ZONE_ALL_NODES, ZONE_ANY, is_host_name, is_zone_name};
use crate::spec::parse::{LineIndex, toml_error, toml_hint};

/// Why an inventory file could not be read. Every variant but `Read` names file:line:column.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read inventory file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{at}: not a valid inventory file: {message}\n  hint: {hint}")]
    Syntax {
        at: Location,
        message: String,
        hint: &'static str,
    },
    #[error("{at}: {field}: expected {expected}, found {found}\n  hint: {hint}")]
    Invalid {
        at: Location,
        field: String,
        expected: &'static str,
        found: String,
        hint: &'static str,
    },
}

impl InventoryError {
    /// Where in the file the problem is (none for a read failure).
    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::Read { .. } => None,
            Self::Syntax { at, .. } | Self::Invalid { at, .. } => Some(at),
        }
    }
}

/// One deployment: zones, host names and nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    /// Site name.
    pub name: String,
    /// The file this was read from.
    pub path: PathBuf,
    /// Zone name to networks. Addresses are stored as /32 or /128 networks; IPv4-mapped IPv6
    /// networks are stored as IPv4.
    pub zones: BTreeMap<String, Zone>,
    /// Host name (lowercase) to the networks it resolves to at this site.
    pub hosts: BTreeMap<String, Vec<IpNet>>,
    /// The cluster's nodes, in file order.
    pub nodes: Vec<Node>,
}

/// A zone bound to networks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    pub name: String,
    pub nets: Vec<IpNet>,
    pub location: Location,
}

/// A cluster node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// Canonical addresses (IPv4-mapped IPv6 stored as IPv4).
    pub addresses: Vec<IpAddr>,
    pub location: Location,
}

/// An address in canonical form: IPv4-mapped IPv6 (`::ffff:10.0.0.1`) becomes IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// A network in canonical form: `::ffff:10.0.0.0/104` becomes `10.0.0.0/8`.
pub fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), n.prefix_len() - 96)
                .map(|n| n.trunc())
                .unwrap_or(net),
            None => net,
        },
        _ => net.trunc(),
    }
}

fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

impl Inventory {
    /// Reads and parses an inventory file.
    pub fn load(path: impl AsRef<Path>) -> Result<Inventory, InventoryError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses inventory text; `path` is used in locations.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Inventory, InventoryError> {
        let path = path.as_ref();
        let idx = LineIndex::new(text, path);
        let raw: RawInventory = toml::from_str(text).map_err(|e| {
            let (at, message) = toml_error(&e, &idx);
            InventoryError::Syntax {
                hint: toml_hint(&message),
                at,
                message,
            }
        })?;
        let nets =
            |field: &str, values: &[Spanned<String>]| -> Result<Vec<IpNet>, InventoryError> {
                values
                    .iter()
                    .map(|v| {
                        let s = v.get_ref().trim();
                        s.parse::<IpNet>()
                            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                            .map(canonical_net)
                            .map_err(|_| InventoryError::Invalid {
                                at: idx.within(v.span(), s),
                                field: field.to_string(),
                                expected: "an address (10.0.0.5, fd00::5) or a CIDR (10.0.0.0/24)",
                                found: format!("{s:?}"),
                                hint: "zones bind to addresses; host names go in [hosts]",
                            })
                    })
                    .collect()
            };
        let mut zones = BTreeMap::new();
        for (k, v) in &raw.zones {
            let name = k.get_ref();
            let at = idx.at(k.span().start);
            if !is_zone_name(name) || name == ZONE_ANY {
                return Err(InventoryError::Invalid {
                    at,
                    field: "zones".into(),
                    expected: "a zone name of lowercase letters, digits, '-' and '_' other than \"any\"",
                    found: format!("{name:?}"),
                    hint: "use the zone names of the spec (portwatch spec check SPEC --inventory FILE lists them)",
                });
            }
            let field = format!("zones.{name}");
            zones.insert(
                name.clone(),
                Zone {
                    name: name.clone(),
                    nets: nets(&field, v)?,
                    location: at,
                },
            );
        }
        let mut hosts = BTreeMap::new();
        for (k, v) in &raw.hosts {
            let name = k.get_ref().trim().to_ascii_lowercase();
            if !is_host_name(&name) {
                return Err(InventoryError::Invalid {
                    at: idx.at(k.span().start),
                    field: "hosts".into(),
                    expected: "a host name (listener.logz.io)",
                    found: format!("{:?}", k.get_ref()),
                    hint: "quote host names with dots: \"listener.logz.io\" = [\"...\"]",
                });
            }
            let field = format!("hosts.{name}");
            hosts.insert(name, nets(&field, v)?);
        }
        let mut nodes: Vec<Node> = Vec::new();
        for n in raw.nodes {
            let location = idx.at(n.span().start);
            let n = n.into_inner();
            let name = n.name.get_ref().trim();
            if name.is_empty() || nodes.iter().any(|o| o.name == name) {
                return Err(InventoryError::Invalid {
                    at: idx.at(n.name.span().start),
                    field: "node.name".into(),
                    expected: "a node name used once",
                    found: format!("{name:?}"),
                    hint: "every [[node]] needs its own name",
                });
            }
            let mut addresses = Vec::new();
            for a in &n.addresses {
                let ip =
                    a.get_ref()
                        .trim()
                        .parse::<IpAddr>()
                        .map_err(|_| InventoryError::Invalid {
                            at: idx.at(a.span().start),
                            field: "node.addresses".into(),
                            expected: "an IP address (10.0.0.11, fd00::11)",
                            found: format!("{:?}", a.get_ref()),
                            hint: "list each address of the node; networks belong in [zones]",
                        })?;
                addresses.push(canonical(ip));
            }
            nodes.push(Node {
                name: name.to_string(),
                addresses,
                location,
            });
        }
        Ok(Inventory {
            name: raw.inventory.map(|i| i.name).unwrap_or_default(),
            path: path.to_path_buf(),
            zones,
            hosts,
            nodes,
        })
    }

    /// Whether the inventory binds `zone` (`any` is always bound; `all-nodes` is bound by an
    /// explicit zone or by a non-empty node list).
    pub fn is_bound(&self, zone: &str) -> bool {
        zone == ZONE_ANY
            || self.zones.contains_key(zone)
            || (zone == ZONE_ALL_NODES && !self.nodes.is_empty())
    }

    /// Whether `ip` is in `zone`; `None` if the zone is not bound.
    pub fn zone_contains(&self, zone: &str, ip: IpAddr) -> Option<bool> {
        if zone == ZONE_ANY {
            return Some(true);
        }
        if let Some(z) = self.zones.get(zone) {
            return Some(contains(&z.nets, ip));
        }
        (zone == ZONE_ALL_NODES && !self.nodes.is_empty()).then(|| self.is_node(ip))
    }

    /// Whether `ip` is one of the nodes' addresses.
    pub fn is_node(&self, ip: IpAddr) -> bool {
        self.node_of(ip).is_some()
    }

    /// The node that owns `ip`.
    pub fn node_of(&self, ip: IpAddr) -> Option<&Node> {
        let ip = canonical(ip);
        self.nodes.iter().find(|n| n.addresses.contains(&ip))
    }

    /// The node with this name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Whether `ip` is covered by `peer`; `None` when the inventory cannot tell (an unbound
    /// zone, a host name without a `[hosts]` binding).
    pub fn peer_contains(&self, peer: &Peer, ip: IpAddr) -> Option<bool> {
        match peer {
            Peer::Zone(z) => self.zone_contains(z, ip),
            Peer::Net(n) => Some(contains(&[canonical_net(*n)], ip)),
            Peer::Addr(a) => Some(canonical(*a) == canonical(ip)),
            Peer::Host(h) => self
                .hosts
                .get(&h.to_ascii_lowercase())
                .map(|nets| contains(nets, ip)),
        }
    }

    /// Whether `ip` is covered by any of `peers`: `Some(true)` if one contains it, `Some(false)`
    /// if every peer could tell and none does, `None` otherwise. An empty list (the vendor names
    /// no peer) gives `Some(true)`.
    pub fn any_peer_contains(&self, peers: &[Peer], ip: IpAddr) -> Option<bool> {
        if peers.is_empty() {
            return Some(true);
        }
        let mut unknown = false;
        for p in peers {
            match self.peer_contains(p, ip) {
                Some(true) => return Some(true),
                Some(false) => {}
                None => unknown = true,
            }
        }
        if unknown { None } else { Some(false) }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    inventory: Option<RawHeader>,
    #[serde(default)]
    zones: BTreeMap<Spanned<String>, Vec<Spanned<String>>>,
    #[serde(default)]
    hosts: BTreeMap<Spanned<String>, Vec<Spanned<String>>>,
    #[serde(default, rename = "node")]
    nodes: Vec<Spanned<RawNode>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Spanned<String>,
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = r#"
[inventory]
name = "lab"

[zones]
admin = ["10.20.0.0/24", "192.168.1.10"]
all-users = ["10.0.0.0/8", "fd00:aa::/32"]
mapped = ["::ffff:172.16.0.0/112"]

[hosts]
"listener.logz.io" = ["52.1.2.3"]

[[node]]
name = "node-a"
addresses = ["10.1.0.11", "fd00::11"]

[[node]]
name = "node-b"
addresses = ["::ffff:10.1.0.12"]
"#;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn zones_nodes_and_hosts() {
        let inv = Inventory::parse(INV, "lab.toml").unwrap();
        assert_eq!(inv.name, "lab");
        assert_eq!(inv.zone_contains("admin", ip("10.20.0.7")), Some(true));
        assert_eq!(inv.zone_contains("admin", ip("192.168.1.10")), Some(true));
        assert_eq!(inv.zone_contains("admin", ip("192.168.1.11")), Some(false));
        assert_eq!(inv.zone_contains("vendor-support", ip("10.20.0.7")), None);
        assert_eq!(inv.zone_contains("any", ip("8.8.8.8")), Some(true));
        assert_eq!(inv.zone_contains("all-nodes", ip("10.1.0.11")), Some(true));
        assert_eq!(inv.zone_contains("all-nodes", ip("10.1.0.13")), Some(false));
        assert!(inv.is_bound("all-nodes") && !inv.is_bound("smtp-relay"));
        assert_eq!(
            inv.node_of(ip("fd00::11")).map(|n| n.name.as_str()),
            Some("node-a")
        );
        assert_eq!(inv.nodes[1].location.line, 17);
        assert_eq!(
            inv.peer_contains(&Peer::Host("listener.logz.io".into()), ip("52.1.2.3")),
            Some(true)
        );
        assert_eq!(
            inv.peer_contains(&Peer::Host("other.example".into()), ip("52.1.2.3")),
            None
        );
        assert_eq!(
            inv.any_peer_contains(
                &[Peer::Zone("admin".into()), Peer::Zone("nope".into())],
                ip("10.20.0.1")
            ),
            Some(true)
        );
        assert_eq!(
            inv.any_peer_contains(
                &[Peer::Zone("admin".into()), Peer::Zone("nope".into())],
                ip("1.1.1.1")
            ),
            None
        );
        assert_eq!(inv.any_peer_contains(&[], ip("1.1.1.1")), Some(true));
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_bindings() {
        let inv = Inventory::parse(INV, "lab.toml").unwrap();
        // A node written mapped is found by its IPv4 form and the other way round.
        assert!(inv.is_node(ip("10.1.0.12")));
        assert!(inv.is_node(ip("::ffff:10.1.0.11")));
        assert_eq!(
            inv.zone_contains("admin", ip("::ffff:10.20.0.9")),
            Some(true)
        );
        assert_eq!(inv.zone_contains("mapped", ip("172.16.3.4")), Some(true));
        assert_eq!(inv.zone_contains("mapped", ip("172.17.0.1")), Some(false));
        assert_eq!(inv.zone_contains("all-users", ip("fd00:aa::1")), Some(true));
        assert_eq!(
            inv.peer_contains(
                &Peer::Net("10.0.0.0/8".parse().unwrap()),
                ip("::ffff:10.9.9.9")
            ),
            Some(true)
        );
    }

    #[test]
    fn explicit_all_nodes_zone_wins_over_node_list() {
        let text = "[zones]\nall-nodes = [\"10.9.0.0/16\"]\n[[node]]\nname = \"a\"\naddresses = [\"10.1.0.1\"]\n";
        let inv = Inventory::parse(text, "x.toml").unwrap();
        assert_eq!(inv.zone_contains("all-nodes", ip("10.9.1.1")), Some(true));
        assert_eq!(inv.zone_contains("all-nodes", ip("10.1.0.1")), Some(false));
        let empty = Inventory::parse("", "e.toml").unwrap();
        assert_eq!(empty.zone_contains("all-nodes", ip("10.1.0.1")), None);
    }

    #[test]
    fn bad_values_are_located_with_a_hint() {
        let e = Inventory::parse(&INV.replace("192.168.1.10", "192.168.1.300"), "lab.toml")
            .unwrap_err();
        let l = e.location().unwrap();
        assert_eq!((l.line, l.column), (6, 27), "{e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("lab.toml:6:27: zones.admin: expected an address"),
            "{msg}"
        );
        assert!(
            msg.contains("found \"192.168.1.300\"") && msg.contains("hint:"),
            "{msg}"
        );
        let e = Inventory::parse(&INV.replace("\"node-b\"", "\"node-a\""), "lab.toml").unwrap_err();
        assert!(
            e.to_string()
                .contains("node.name: expected a node name used once"),
            "{e}"
        );
        let e = Inventory::parse("[zones]\nany = [\"10.0.0.0/8\"]\n", "x.toml").unwrap_err();
        assert!(
            e.to_string().contains("other than \\\"any\\\"")
                || e.to_string().contains("found \"any\""),
            "{e}"
        );
        let e = Inventory::parse("[zone]\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("unknown field `zone`"), "{e}");
    }
}
