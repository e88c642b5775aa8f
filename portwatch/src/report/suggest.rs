//! Draft spec entries from reports: every undocumented traffic role (and undocumented listener)
//! seen on any node becomes an entry, its peers summarised into inventory zones or CIDRs.
//! Pure: reports and inventory in, TOML text out.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::model::{Report, rfc3339};
use super::units;
use crate::classify::{FindingKind, Role, Traffic};
use crate::flow::Transport;
use crate::host::canonical;
use crate::inventory::Inventory;
use crate::spec::ZONE_ALL_NODES;

/// At most this many networks are listed per entry before they are widened.
const MAX_NETS: usize = 8;

/// One suggested entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suggestion {
    pub transport: Transport,
    /// None for port-less transports (ICMP).
    pub port: Option<u16>,
    pub role: Role,
    pub nodes: BTreeSet<String>,
    pub traffic: Traffic,
    /// Peers listed in the reports (each report lists its top peers only).
    pub peers: BTreeSet<IpAddr>,
    /// The largest distinct-peer count any one report gave.
    pub peers_total: u64,
    pub processes: BTreeSet<String>,
    /// Seen only as a listener, without traffic.
    pub listener_only: bool,
}

/// Collects the undocumented traffic and listeners of every report, one suggestion per
/// (transport, port, role), sorted.
pub fn suggest(reports: &[Report]) -> Vec<Suggestion> {
    let mut m: BTreeMap<(Transport, Option<u16>, Role), Suggestion> = BTreeMap::new();
    for r in reports {
        for f in &r.findings {
            let listener = matches!(f.kind, FindingKind::UndocumentedListener { .. });
            if !(listener || f.kind == FindingKind::Undocumented) {
                continue;
            }
            let (Some(t), Some(role)) = (f.transport, f.role) else {
                continue;
            };
            let s = m.entry((t, f.port, role)).or_insert_with(|| Suggestion {
                transport: t,
                port: f.port,
                role,
                nodes: BTreeSet::new(),
                traffic: Traffic::default(),
                peers: BTreeSet::new(),
                peers_total: 0,
                processes: BTreeSet::new(),
                listener_only: true,
            });
            s.nodes.insert(r.node.name.clone());
            s.processes.extend(f.processes.iter().cloned());
            if !listener {
                s.listener_only = false;
                s.traffic.add(&f.traffic);
                s.peers.extend(f.peers.iter().map(|p| canonical(p.addr)));
                s.peers_total = s.peers_total.max(f.peers_total);
            }
        }
    }
    m.into_values().collect()
}

/// Peers as spec peers: the smallest inventory zone holding all of them if there is one; else
/// each peer's smallest zone, and the rest as networks (/24 and /64 groups, single addresses
/// as they are, widened to /16 and /48 past [`MAX_NETS`]).
pub fn summarise_peers(peers: &BTreeSet<IpAddr>, inv: Option<&Inventory>) -> Vec<String> {
    let peers: BTreeSet<IpAddr> = peers.iter().map(|p| canonical(*p)).collect();
    let mut zones: Vec<(u128, String)> = Vec::new();
    if let Some(inv) = inv {
        for (name, z) in &inv.zones {
            let size = z
                .nets
                .iter()
                .map(net_size)
                .fold(0u128, u128::saturating_add);
            zones.push((size, name.clone()));
        }
        if !inv.zones.contains_key(ZONE_ALL_NODES) && !inv.nodes.is_empty() {
            let n: usize = inv.nodes.iter().map(|n| n.addresses.len()).sum();
            zones.push((n as u128, ZONE_ALL_NODES.to_owned()));
        }
        zones.sort();
    }
    let within =
        |zone: &str, ip: IpAddr| inv.and_then(|i| i.zone_contains(zone, ip)).unwrap_or(false);
    if !peers.is_empty()
        && let Some((_, z)) = zones
            .iter()
            .find(|(_, z)| peers.iter().all(|p| within(z, *p)))
    {
        return vec![z.clone()];
    }
    let mut out: BTreeSet<String> = BTreeSet::new();
    let mut rest: Vec<IpAddr> = Vec::new();
    for p in &peers {
        match zones.iter().find(|(_, z)| within(z, *p)) {
            Some((_, z)) => {
                out.insert(z.clone());
            }
            None => rest.push(*p),
        }
    }
    let mut nets = group(&rest, 24, 64);
    if nets.len() > MAX_NETS {
        nets = group(&rest, 16, 48);
    }
    let mut v: Vec<String> = out.into_iter().collect();
    v.extend(nets);
    v
}

fn net_size(n: &IpNet) -> u128 {
    let host_bits = u32::from(n.max_prefix_len() - n.prefix_len());
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

/// Groups addresses by /v4 and /v6 networks; a group of one stays an address.
fn group(addrs: &[IpAddr], v4: u8, v6: u8) -> Vec<String> {
    let mut m: BTreeMap<IpNet, BTreeSet<IpAddr>> = BTreeMap::new();
    for a in addrs {
        let net = match a {
            IpAddr::V4(x) => IpNet::V4(Ipv4Net::new(*x, v4).expect("prefix <= 32").trunc()),
            IpAddr::V6(x) => IpNet::V6(Ipv6Net::new(*x, v6).expect("prefix <= 128").trunc()),
        };
        m.entry(net).or_default().insert(*a);
    }
    m.into_iter()
        .map(|(net, set)| {
            if set.len() == 1 {
                set.into_iter()
                    .next()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            } else {
                net.to_string()
            }
        })
        .collect()
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn list(v: &[String]) -> String {
    let q: Vec<String> = v.iter().map(|s| quote(s)).collect();
    format!("[{}]", q.join(", "))
}

/// The draft spec file for `suggestions` (parses with `Spec::parse`).
pub fn to_toml(
    suggestions: &[Suggestion],
    reports: &[Report],
    inv: Option<&Inventory>,
    name: &str,
) -> String {
    let mut s = String::new();
    let nodes: BTreeSet<&str> = reports.iter().map(|r| r.node.name.as_str()).collect();
    let specs: BTreeSet<&str> = reports.iter().map(|r| r.spec.name.as_str()).collect();
    let _ = writeln!(
        s,
        "# Draft spec entries suggested by `portwatch spec suggest` from {} report(s) of node(s) {}\n\
         # against spec(s) {}: one entry per undocumented port, transport and direction seen.\n\
         # Peers are summarised into inventory zones or networks from the top peers each report\n\
         # lists. Review every entry (is this traffic meant to happen?), give it a real service\n\
         # name, then merge it into the spec and run `portwatch spec check`.\n",
        reports.len(),
        nodes.into_iter().collect::<Vec<_>>().join(", "),
        specs.into_iter().collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(s, "[spec]\nname = {}", quote(name));
    let _ = writeln!(
        s,
        "document = \"observed traffic (portwatch spec suggest)\"\n"
    );
    let mut entries = String::new();
    let mut zones_used: BTreeSet<String> = BTreeSet::new();
    let zone_names: BTreeSet<String> = inv
        .map(|i| {
            let mut z: BTreeSet<String> = i.zones.keys().cloned().collect();
            if !i.nodes.is_empty() {
                z.insert(ZONE_ALL_NODES.to_owned());
            }
            z
        })
        .unwrap_or_default();
    for sg in suggestions {
        let dir = sg.role.as_direction();
        let port_part = sg.port.map(|p| format!("-{p}")).unwrap_or_default();
        let id = format!("observed-{}{port_part}-{dir}", sg.transport)
            .replace(|c: char| !(c.is_ascii_alphanumeric() || c == '-'), "-");
        let subject = match sg.port {
            Some(p) => format!("{}/{p} {dir}", sg.transport),
            None => format!("{} {dir}", sg.transport),
        };
        let nodes: Vec<&str> = sg.nodes.iter().map(String::as_str).collect();
        let t = &sg.traffic;
        if sg.listener_only {
            let _ = writeln!(
                entries,
                "# Listening on {} without traffic in the window.",
                nodes.join(", ")
            );
        } else {
            let _ = writeln!(
                entries,
                "# Seen on {}: {} flow(s), {}, {} to {}; {} distinct peer(s) at most per node, {} listed.",
                nodes.join(", "),
                t.flows,
                units::bytes(t.bytes()),
                rfc3339(t.first_seen),
                rfc3339(t.last_seen),
                sg.peers_total,
                sg.peers.len()
            );
        }
        let _ = writeln!(entries, "[[entry]]\nid = {}", quote(&id));
        let service = match sg.processes.iter().next() {
            Some(p) => format!("{p} ({subject})"),
            None => format!("unknown ({subject})"),
        };
        let _ = writeln!(entries, "service = {}", quote(&service));
        match sg.port {
            Some(p) => {
                let _ = writeln!(entries, "ports = {p}");
            }
            None => entries.push_str("ports = \"none\"\n"),
        }
        let _ = writeln!(entries, "transport = {}", quote(&sg.transport.to_string()));
        let _ = writeln!(entries, "direction = {}", quote(dir));
        let peers = summarise_peers(&sg.peers, inv);
        for p in &peers {
            if zone_names.contains(p) {
                zones_used.insert(p.clone());
            }
        }
        let key = match sg.role {
            Role::Server => "sources",
            Role::Client => "destinations",
        };
        if !peers.is_empty() {
            let _ = writeln!(entries, "{key} = {}", list(&peers));
        }
        if !sg.processes.is_empty() {
            let p: Vec<String> = sg.processes.iter().cloned().collect();
            let _ = writeln!(entries, "processes = {}", list(&p));
        }
        let _ = writeln!(
            entries,
            "description = {}",
            quote(&format!("Observed {subject}; not in the vendor document"))
        );
        entries.push_str("origin = { note = \"suggested from observed traffic\" }\n\n");
    }
    if !zones_used.is_empty() {
        s.push_str("[zones]\n");
        for z in &zones_used {
            let _ = writeln!(
                s,
                "{z} = {}",
                quote(&format!("bound by the inventory: {z}"))
            );
        }
        s.push('\n');
    }
    s.push_str(&entries);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::tests::inventory;

    fn ips(v: &[&str]) -> BTreeSet<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn peers_fold_into_the_smallest_zone_or_networks() {
        let inv = inventory();
        assert_eq!(
            summarise_peers(&ips(&["10.0.0.1", "fd00::2"]), Some(&inv)),
            ["all-nodes"]
        );
        // IPv4-mapped IPv6 peers count as IPv4.
        assert_eq!(
            summarise_peers(&ips(&["192.168.50.3", "::ffff:192.168.50.9"]), Some(&inv)),
            ["admin"]
        );
        assert_eq!(
            summarise_peers(
                &ips(&["192.168.50.3", "10.0.0.1", "203.0.113.7"]),
                Some(&inv)
            ),
            ["admin", "all-nodes", "203.0.113.7"]
        );
        assert_eq!(
            summarise_peers(
                &ips(&[
                    "203.0.113.7",
                    "203.0.113.9",
                    "198.51.100.1",
                    "fd77::1",
                    "fd77::2"
                ]),
                None
            ),
            ["198.51.100.1", "203.0.113.0/24", "fd77::/64"]
        );
        let many: BTreeSet<IpAddr> = (0..20u8).map(|i| IpAddr::from([10, 9, i, 1])).collect();
        assert_eq!(summarise_peers(&many, None), ["10.9.0.0/16"]);
        assert!(summarise_peers(&BTreeSet::new(), Some(&inv)).is_empty());
    }
}
