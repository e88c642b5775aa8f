//! Unit tests for classification: one or more per kind of finding, plus ranges, alternatives,
//! variants, the dynamic range, zones, IPv6 and IPv4-mapped IPv6. Everything is built in
//! memory (spec and inventory from TOML text, flows by hand, listeners as values).
use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::flow::{
    Counts, Direction, Endpoint, FlowKey, FlowRecord, FlowStats, Health, PortCounts, PortTotal,
    Side, Transport,
};
use crate::host::{Connection, Process};

pub(crate) const SPEC: &str = r#"
[spec]
name = "test"
vendor = "Acme"

[zones]
admin = "Administrators"
all-nodes = "All nodes"
vendor = "Vendor support"

[[entry]]
id = "oxygen-in"
service = "Oxygen"
ports = 31112
transport = "tcp"
direction = "inbound"
sources = ["all-nodes"]
processes = ["Sisense.Oxygen.exe"]

[[entry]]
id = "oxygen-out"
service = "Oxygen"
ports = 443
transport = "tcp"
direction = "outbound"
destinations = ["vendor", "listener.logz.io"]
processes = ["Sisense.Oxygen.exe"]

[[entry]]
id = "ssh"
service = "SSH"
ports = 22
transport = "tcp"
direction = "inbound"
sources = ["admin"]
processes = ["sshd"]

[[entry]]
id = "smtp"
service = "Mail"
ports = "25 or 587"
transport = "tcp"
direction = "outbound"

[[entry]]
id = "broker"
service = "Broker"
ports = "default: 5672, 15672; tls: 5671, 15671"
transport = "tcp"
direction = "inbound"

[[entry]]
id = "ecm"
service = "ECM"
ports = "15000-15050"
transport = "tcp"
direction = "inbound"
processes = ["Sisense.Service.exe"]

[[entry]]
id = "galaxy"
service = "Galaxy"
ports = "15000-15050"
transport = "tcp"
direction = "inbound"
processes = ["Sisense.Galaxy.exe"]

[[entry]]
id = "dynamic"
service = "Dynamic"
ports = "20123-32768"
transport = "tcp"
direction = "bidirectional"
sources = ["all-nodes"]
destinations = ["all-nodes"]
flags = ["dynamic-range"]

[[entry]]
id = "icmp"
service = "Health"
ports = "none"
transport = "icmp"
direction = "bidirectional"
sources = ["all-nodes"]
destinations = ["all-nodes"]

[[entry]]
id = "winrm"
service = "Install"
ports = 5986
transport = "tcp"
direction = "inbound"
flags = ["install-only"]

[[entry]]
id = "ntp"
service = "NTP"
ports = 123
transport = "udp"
direction = "outbound"

[[entry]]
id = "smb"
service = "SMB"
ports = "445, 137-139"
transport = "tcp"
direction = "inbound"

[[entry]]
id = "collector"
service = "Collector"
ports = "none"
transport = "none"
direction = "none"
"#;

pub(crate) const INVENTORY: &str = r#"
[inventory]
name = "lab"

[zones]
admin = ["192.168.50.0/24", "fd50::/64"]

[[node]]
name = "node-a"
addresses = ["10.0.0.1", "fd00::1"]

[[node]]
name = "node-b"
addresses = ["10.0.0.2", "fd00::2"]
"#;

pub(crate) fn spec() -> Spec {
    Spec::parse(SPEC, "t.toml").unwrap()
}

pub(crate) fn inventory() -> Inventory {
    Inventory::parse(INVENTORY, "inv.toml").unwrap()
}

pub(crate) fn ep(s: &str) -> Endpoint {
    let sa: SocketAddr = s.parse().unwrap();
    Endpoint {
        addr: sa.ip(),
        port: sa.port(),
    }
}

const SEC: u64 = 1_000_000_000;

/// A flow with 10 packets/1000 bytes in and 8 packets/5000 bytes out over two seconds.
pub(crate) fn flow(t: Transport, local: &str, remote: &str) -> FlowRecord {
    FlowRecord {
        key: FlowKey {
            transport: t,
            local: ep(local),
            remote: ep(remote),
        },
        stats: FlowStats {
            inbound: Counts {
                packets: 10,
                bytes: 1000,
            },
            outbound: Counts {
                packets: 8,
                bytes: 5000,
            },
            first_seen: 100 * SEC,
            last_seen: 102 * SEC,
            ..FlowStats::default()
        },
        vantage_known: true,
    }
}

/// A TCP flow the peer opened (SYN seen inbound).
pub(crate) fn tcp_in(local: &str, remote: &str) -> FlowRecord {
    let mut f = flow(Transport::Tcp, local, remote);
    f.stats.syn_in = 1;
    f
}

/// A TCP flow the node opened (SYN seen outbound).
pub(crate) fn tcp_out(local: &str, remote: &str) -> FlowRecord {
    let mut f = flow(Transport::Tcp, local, remote);
    f.stats.syn_out = 1;
    f
}

/// The per-port totals a backend would count for these flows.
pub(crate) fn totals(flows: &[FlowRecord]) -> Vec<PortTotal> {
    let mut m: BTreeMap<(Transport, u16, Side, Direction), PortCounts> = BTreeMap::new();
    for f in flows {
        for (side, port) in [
            (Side::Local, f.key.local.port),
            (Side::Remote, f.key.remote.port),
        ] {
            for (dir, c) in [
                (Direction::In, f.stats.inbound),
                (Direction::Out, f.stats.outbound),
            ] {
                if c.packets > 0 {
                    m.entry((f.key.transport, port, side, dir))
                        .or_default()
                        .add(&PortCounts {
                            packets: c.packets,
                            segments: c.packets,
                            bytes: c.bytes,
                            ..PortCounts::default()
                        });
                }
            }
        }
    }
    m.into_iter()
        .map(|(key, counts)| PortTotal::from_key(key, counts))
        .collect()
}

pub(crate) fn window(flows: Vec<FlowRecord>) -> Snapshot {
    Snapshot {
        start: 0,
        end: 600 * SEC,
        ports: totals(&flows),
        flows,
        health: Health::default(),
    }
}

pub(crate) fn listener(t: Transport, addr: &str, port: u16, proc_name: Option<&str>) -> Listener {
    Listener {
        transport: t,
        addr: addr.parse().unwrap(),
        port,
        inode: u64::from(port),
        processes: proc_name
            .map(|n| {
                vec![Process {
                    pid: 100,
                    name: n.to_owned(),
                    cmdline: vec![format!("/opt/{n}")],
                }]
            })
            .into_iter()
            .flatten()
            .collect(),
    }
}

pub(crate) fn node() -> NodeInfo {
    NodeInfo {
        name: "node-a".into(),
        addrs: vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
    }
}

fn run(
    flows: Vec<FlowRecord>,
    inv: Option<&Inventory>,
    listeners: Option<&[Listener]>,
) -> Findings {
    run_with(flows, inv, listeners, None)
}

fn run_with(
    flows: Vec<FlowRecord>,
    inv: Option<&Inventory>,
    listeners: Option<&[Listener]>,
    connections: Option<&[Connection]>,
) -> Findings {
    let spec = spec();
    let w = window(flows);
    let n = node();
    classify(&ClassifyInput {
        spec: &spec,
        inventory: inv,
        window: &w,
        listeners,
        connections,
        ephemeral: PortRange::LINUX_DEFAULT,
        node: &n,
    })
}

fn of_kind<'a>(f: &'a Findings, kind: &str) -> Vec<&'a Finding> {
    f.findings
        .iter()
        .filter(|x| x.kind.name() == kind)
        .collect()
}

fn entry_ids(v: &[&Finding]) -> Vec<String> {
    v.iter()
        .filter_map(|f| f.entry.as_ref().map(|e| e.id.clone()))
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn documented_inbound_traffic_names_the_entry_with_counts_and_peers() {
    let f = run(
        vec![
            tcp_in("10.0.0.1:31112", "10.0.0.2:50000"),
            tcp_in("10.0.0.1:31112", "10.0.0.2:50001"),
            tcp_in("10.0.0.1:31112", "10.0.0.3:50000"),
        ],
        None,
        None,
    );
    let d = of_kind(&f, "documented");
    assert_eq!(d.len(), 1);
    let d = d[0];
    let e = d.entry.as_ref().unwrap();
    assert_eq!((e.id.as_str(), e.file.as_str()), ("oxygen-in", "t.toml"));
    assert_eq!(
        e.line,
        Spec::parse(SPEC, "t.toml").unwrap().entries[0]
            .location
            .line
    );
    assert_eq!(d.subject(), "tcp/31112 inbound");
    assert_eq!(d.traffic.flows, 3);
    assert_eq!((d.traffic.packets_in, d.traffic.bytes_out), (30, 15000));
    assert_eq!(
        (d.traffic.first_seen, d.traffic.last_seen),
        (100 * SEC, 102 * SEC)
    );
    // Exact per-port totals on the service side.
    let pt = d.port_totals.unwrap();
    assert_eq!((pt.packets_in, pt.packets_out), (30, 24));
    assert_eq!(d.peers_total, 2);
    assert_eq!(d.peers[0].addr, ip("10.0.0.2"));
    assert_eq!(d.peers[0].flows, 2);
    assert_eq!(f.summary.flows.documented, 3);
    assert_eq!(f.summary.kinds["documented"], 1);
    // The entry is used; its outbound sibling is not.
    let unused = entry_ids(&of_kind(&f, "unused"));
    assert!(!unused.contains(&"oxygen-in".to_owned()));
    assert!(unused.contains(&"oxygen-out".to_owned()));
    // Per-service distributions: 3 flows of 2 s and 6000 bytes each.
    let s = f.services.iter().find(|s| s.service == "Oxygen").unwrap();
    assert_eq!(s.entries, vec!["oxygen-in"]);
    assert_eq!(s.duration_us.count, 3);
    assert!(
        (1_980_000..=2_020_000).contains(&s.duration_us.p50),
        "{:?}",
        s.duration_us
    );
    assert!((5_940..=6_060).contains(&s.bytes.max), "{:?}", s.bytes);
}

#[test]
fn undocumented_traffic_is_keyed_by_port_transport_and_role() {
    let f = run(
        vec![
            tcp_in("10.0.0.1:8080", "10.0.0.9:40000"),
            tcp_out("10.0.0.1:40001", "10.0.0.9:8080"),
            flow(Transport::Udp, "10.0.0.1:514", "10.0.0.9:50514"),
        ],
        None,
        None,
    );
    let u: Vec<String> = of_kind(&f, "undocumented")
        .iter()
        .map(|x| x.subject())
        .collect();
    assert_eq!(
        u,
        ["tcp/8080 inbound", "tcp/8080 outbound", "udp/514 inbound"]
    );
    assert!(
        of_kind(&f, "undocumented")
            .iter()
            .all(|x| x.entry.is_none())
    );
    assert_eq!(f.summary.flows.undocumented, 3);
    assert!(
        f.services
            .iter()
            .any(|s| s.service == "undocumented tcp/8080 inbound")
    );
}

#[test]
fn wrong_direction_names_the_entry() {
    // The node opened a connection to a peer's 31112: the spec says 31112 is inbound.
    let f = run(
        vec![tcp_out("10.0.0.1:45000", "10.0.0.2:31112")],
        None,
        None,
    );
    let w = of_kind(&f, "wrong_direction");
    assert_eq!(entry_ids(&w), ["oxygen-in"]);
    assert_eq!(
        w[0].kind,
        FindingKind::WrongDirection {
            expected: "inbound".into(),
            observed: Role::Client
        }
    );
    assert_eq!(w[0].severity, Severity::Violation);
    assert_eq!(f.summary.flows.violating, 1);
    // Wrong-direction traffic does not make the documented rule "used".
    assert!(entry_ids(&of_kind(&f, "unused")).contains(&"oxygen-in".to_owned()));
}

#[test]
fn a_cluster_link_seen_from_its_client_node_is_documented_by_the_inbound_entry() {
    let inv = inventory();
    let flows = vec![
        // node-a opens node-b's Oxygen port: oxygen-in lets all nodes in, on any node.
        tcp_out("10.0.0.1:45000", "10.0.0.2:31112"),
        // ... and the same port on a host that is not a node: not what the entry documents.
        tcp_out("10.0.0.1:45001", "10.9.9.9:31112"),
        // node-a opens node-b's SSH: ssh admits only the admin zone as clients.
        tcp_out("10.0.0.1:45002", "10.0.0.2:22"),
        // node-b opens node-a's NTP port: ntp is outbound to anywhere, never mirrored.
        flow(Transport::Udp, "10.0.0.1:123", "10.0.0.2:50000"),
    ];
    let f = run(flows.clone(), Some(&inv), None);
    let d = of_kind(&f, "documented");
    assert_eq!(entry_ids(&d), ["oxygen-in"]);
    assert_eq!(d[0].role, Some(Role::Client));
    assert_eq!(d[0].peers[0].addr, ip("10.0.0.2"));
    assert_eq!(f.summary.flows.documented, 1);
    let w = of_kind(&f, "wrong_direction");
    let mut ids = entry_ids(&w);
    ids.sort();
    assert_eq!(ids, ["ntp", "oxygen-in", "ssh"]);
    // The inbound entry's processes name the listening side: the program connecting from
    // node-a is listed, not held against it.
    let conns = [connection("10.0.0.1:45000", "10.0.0.2:31112", "java")];
    let f = run_with(flows.clone(), Some(&inv), None, Some(&conns));
    assert_eq!(of_kind(&f, "documented")[0].processes, ["java"]);
    assert!(of_kind(&f, "process_mismatch").is_empty());
    // The mirror needs the inventory to know where the nodes are.
    let f = run(flows, None, None);
    assert!(of_kind(&f, "documented").is_empty());
}

#[test]
fn wrong_transport_names_the_entry() {
    // UDP to 445 (inbound by port scoring): the spec documents 445 over TCP.
    let f = run(
        vec![flow(Transport::Udp, "10.0.0.1:445", "10.0.0.5:50000")],
        None,
        None,
    );
    let w = of_kind(&f, "wrong_transport");
    assert_eq!(entry_ids(&w), ["smb"]);
    assert_eq!(
        w[0].kind,
        FindingKind::WrongTransport {
            expected: "tcp".into(),
            observed: Transport::Udp
        }
    );
    let line = spec().entry("smb").unwrap().location.line;
    assert_eq!(
        w[0].to_string(),
        format!(
            "violation: udp/445 inbound wrong transport: udp, spec says tcp - smb [tcp 445, 137-139 inbound] (t.toml:{line})"
        )
    );
}

#[test]
fn peers_outside_the_zone_need_the_inventory() {
    let flows = vec![
        tcp_in("10.0.0.1:22", "192.168.50.7:50000"),
        tcp_in("10.0.0.1:22", "10.9.9.9:50000"),
        tcp_in("10.0.0.1:22", "10.9.9.8:50000"),
    ];
    // Without an inventory zones cannot be judged: all documented.
    let f = run(flows.clone(), None, None);
    assert_eq!(f.summary.flows.documented, 3);
    assert!(of_kind(&f, "peer_outside_zone").is_empty());
    let inv = inventory();
    let f = run(flows, Some(&inv), None);
    let o = of_kind(&f, "peer_outside_zone");
    assert_eq!(entry_ids(&o), ["ssh"]);
    assert_eq!(
        o[0].kind,
        FindingKind::PeerOutsideZone {
            allowed: vec!["admin".into()],
            outside: vec![ip("10.9.9.8"), ip("10.9.9.9")],
            outside_total: 2,
        }
    );
    assert_eq!(o[0].traffic.flows, 2);
    let d = of_kind(&f, "documented");
    assert_eq!(d[0].peers[0].addr, ip("192.168.50.7"));
    assert_eq!(f.summary.flows.violating, 2);
}

#[test]
fn ipv6_and_ipv4_mapped_peers_are_judged_like_their_addresses() {
    let inv = inventory();
    let f = run(
        vec![
            tcp_in("[fd00::1]:22", "[fd50::7]:50000"),
            tcp_in("[fd00::1]:22", "[::ffff:192.168.50.8]:50001"),
            tcp_in("[fd00::1]:22", "[fd99::1]:50002"),
            tcp_in("[::ffff:10.0.0.1]:22", "[::ffff:10.9.9.9]:50003"),
        ],
        Some(&inv),
        None,
    );
    let d = of_kind(&f, "documented");
    assert_eq!(d.len(), 1);
    let mut peers: Vec<IpAddr> = d[0].peers.iter().map(|p| p.addr).collect();
    peers.sort();
    // The mapped address is reported as IPv4.
    assert_eq!(peers, [ip("192.168.50.8"), ip("fd50::7")]);
    let o = of_kind(&f, "peer_outside_zone");
    assert_eq!(
        o[0].kind,
        FindingKind::PeerOutsideZone {
            allowed: vec!["admin".into()],
            outside: vec![ip("10.9.9.9"), ip("fd99::1")],
            outside_total: 2,
        }
    );
}

#[test]
fn peers_the_inventory_cannot_place_are_counted_not_flagged() {
    // "vendor" is not bound by the inventory and the host name has no [hosts] binding.
    let inv = inventory();
    let f = run(
        vec![tcp_out("10.0.0.1:45000", "203.0.113.5:443")],
        Some(&inv),
        None,
    );
    assert_eq!(entry_ids(&of_kind(&f, "documented")), ["oxygen-out"]);
    assert_eq!(f.summary.flows.peer_unverifiable, 1);
}

#[test]
fn the_node_itself_is_never_outside_a_zone() {
    let inv = inventory();
    let f = run(
        vec![
            tcp_in("127.0.0.1:22", "127.0.0.1:50000"),
            tcp_in("10.0.0.1:22", "10.0.0.1:50001"),
        ],
        Some(&inv),
        None,
    );
    assert!(of_kind(&f, "peer_outside_zone").is_empty());
    assert_eq!(f.summary.flows.documented, 2);
}

#[test]
fn unused_entries_carry_their_flag_and_non_network_entries_are_not_observable() {
    let f = run(vec![], None, None);
    let unused = of_kind(&f, "unused");
    let winrm = unused
        .iter()
        .find(|u| u.entry.as_ref().unwrap().id == "winrm")
        .unwrap();
    assert_eq!(
        winrm.kind,
        FindingKind::Unused {
            note: Some("install-only".into())
        }
    );
    let dynamic = unused
        .iter()
        .find(|u| u.entry.as_ref().unwrap().id == "dynamic")
        .unwrap();
    assert_eq!(
        dynamic.kind,
        FindingKind::Unused {
            note: Some("dynamic range".into())
        }
    );
    assert_eq!(f.summary.entries.total, 13);
    assert_eq!(f.summary.entries.not_observable, 1);
    assert_eq!(f.summary.entries.unused, 12);
    assert!(!entry_ids(&unused).contains(&"collector".to_owned()));
}

#[test]
fn alternatives_variants_and_ranges_match_any_of_their_ports() {
    let f = run(
        vec![
            tcp_out("10.0.0.1:45000", "10.0.0.20:587"),
            tcp_in("10.0.0.1:15671", "10.0.0.2:50000"),
            tcp_in("10.0.0.1:15010", "10.0.0.2:50001"),
            tcp_in("10.0.0.1:15020", "10.0.0.2:50002"),
            tcp_in("10.0.0.1:138", "10.0.0.2:50003"),
        ],
        None,
        None,
    );
    let d = of_kind(&f, "documented");
    // 15000-15050 is shared by two entries: without a process to tell them apart, both.
    assert_eq!(entry_ids(&d), ["broker", "ecm", "galaxy", "smb", "smtp"]);
    let ecm = d[1];
    assert_eq!(ecm.port, None);
    assert_eq!(ecm.ports_seen, [15010, 15020]);
    assert_eq!(ecm.port_totals.unwrap().packets_in, 20);
    assert_eq!(d[4].port, Some(587));
    let unused = entry_ids(&of_kind(&f, "unused"));
    assert!(
        !unused
            .iter()
            .any(|u| ["smtp", "broker", "ecm", "galaxy", "smb"].contains(&u.as_str()))
    );
}

#[test]
fn the_owning_process_picks_between_entries_sharing_a_range() {
    let ls = [listener(
        Transport::Tcp,
        "0.0.0.0",
        15010,
        Some("Sisense.Galaxy."), // comm is truncated to 15 bytes
    )];
    let f = run(
        vec![tcp_in("10.0.0.1:15010", "10.0.0.2:50001")],
        None,
        Some(&ls),
    );
    let d = of_kind(&f, "documented");
    assert_eq!(entry_ids(&d), ["galaxy"]);
    assert_eq!(d[0].processes, ["Sisense.Galaxy."]);
    assert!(of_kind(&f, "process_mismatch").is_empty());
}

/// A TCP connection from `local` to `remote` held by a process called `comm`.
fn connection(local: &str, remote: &str, comm: &str) -> Connection {
    let (l, r) = (ep(local), ep(remote));
    Connection {
        transport: Transport::Tcp,
        local: l.addr,
        local_port: l.port,
        remote: r.addr,
        remote_port: r.port,
        inode: u64::from(l.port),
        processes: vec![Process {
            pid: u32::from(l.port),
            name: comm.to_owned(),
            cmdline: vec![format!("/usr/bin/{comm}")],
        }],
    }
}

#[test]
fn outbound_flows_from_a_process_the_entry_does_not_name_are_a_process_mismatch() {
    let flows = vec![
        tcp_out("10.0.0.1:50100", "203.0.113.5:443"),
        tcp_out("10.0.0.1:50101", "203.0.113.6:443"),
        // Closed before the scan: no known owner, never held against the entry.
        tcp_out("10.0.0.1:50102", "203.0.113.7:443"),
    ];
    let conns = [
        connection("10.0.0.1:50100", "203.0.113.5:443", "curl"),
        // IPv4-mapped in /proc/net/tcp6; comm truncated to 15 bytes.
        connection(
            "[::ffff:10.0.0.1]:50101",
            "[::ffff:203.0.113.6]:443",
            "Sisense.Oxygen.",
        ),
        // A connection without traffic in the window changes nothing.
        connection("10.0.0.1:50200", "203.0.113.9:8443", "wget"),
    ];
    let f = run_with(flows.clone(), None, None, Some(&conns));
    let d = of_kind(&f, "documented");
    assert_eq!(entry_ids(&d), ["oxygen-out"]);
    assert_eq!(d[0].traffic.flows, 3, "every flow stays documented");
    assert_eq!(d[0].processes, ["Sisense.Oxygen.", "curl"]);
    let pm = of_kind(&f, "process_mismatch");
    assert_eq!(entry_ids(&pm), ["oxygen-out"]);
    assert_eq!(
        pm[0].kind,
        FindingKind::ProcessMismatch {
            expected: vec!["Sisense.Oxygen.exe".into()],
            found: vec!["curl".into()]
        }
    );
    assert_eq!(pm[0].subject(), "tcp/443 outbound");
    assert_eq!(pm[0].traffic.flows, 1);
    assert_eq!(pm[0].peers.len(), 1);
    assert_eq!(pm[0].peers[0].addr, ip("203.0.113.5"));
    assert_eq!(f.summary.kinds["process_mismatch"], 1);

    // Without the scan (offline capture, no /proc) nothing is judged.
    let f = run_with(flows, None, None, None);
    assert!(of_kind(&f, "process_mismatch").is_empty());
    assert!(of_kind(&f, "documented")[0].processes.is_empty());
}

#[test]
fn an_outbound_entry_without_processes_accepts_any_owner() {
    // smtp names no process: whoever sends mail is not judged.
    let flows = vec![tcp_out("10.0.0.1:50300", "198.51.100.1:587")];
    let conns = [connection("10.0.0.1:50300", "198.51.100.1:587", "postfix")];
    let f = run_with(flows, None, None, Some(&conns));
    assert!(of_kind(&f, "process_mismatch").is_empty());
    let d = of_kind(&f, "documented");
    assert_eq!(entry_ids(&d), ["smtp"]);
    assert_eq!(d[0].processes, ["postfix"]);
}

#[test]
fn the_dynamic_range_documents_high_ports_between_nodes() {
    let inv = inventory();
    let f = run(
        vec![
            tcp_in("10.0.0.1:25000", "10.0.0.2:41000"),
            tcp_out("10.0.0.1:41001", "10.0.0.2:30000"),
            tcp_in("10.0.0.1:26000", "10.5.5.5:41002"),
        ],
        Some(&inv),
        None,
    );
    let d = of_kind(&f, "documented");
    assert_eq!(entry_ids(&d), ["dynamic", "dynamic"]);
    assert_eq!(
        d.iter().map(|x| x.role.unwrap()).collect::<Vec<_>>(),
        [Role::Server, Role::Client]
    );
    // A peer outside the cluster on the dynamic range is outside all-nodes.
    assert_eq!(entry_ids(&of_kind(&f, "peer_outside_zone")), ["dynamic"]);
    // A more specific entry wins over the dynamic range when both cover the port.
    let f = run(vec![tcp_in("10.0.0.1:31112", "10.0.0.2:41000")], None, None);
    assert_eq!(entry_ids(&of_kind(&f, "documented")), ["oxygen-in"]);
}

#[test]
fn unknown_direction_is_counted_shown_and_keeps_candidates_from_being_unused() {
    let f = run(
        vec![
            flow(Transport::Udp, "10.0.0.1:40000", "10.0.0.2:41000"),
            flow(Transport::Udp, "10.0.0.1:123", "10.0.0.7:123"),
        ],
        None,
        None,
    );
    let u = of_kind(&f, "unknown_direction");
    assert_eq!(u.len(), 2);
    assert_eq!(f.summary.flows.unknown_direction, 2);
    assert_eq!(f.summary.flows.documented + f.summary.flows.undocumented, 0);
    let ntp = u.iter().find(|x| x.port == Some(123)).unwrap();
    let FindingKind::UnknownDirection {
        reason,
        remote_port,
        candidates,
    } = &ntp.kind
    else {
        unreachable!()
    };
    assert_eq!(*reason, UnknownReason::AmbiguousPorts);
    assert_eq!(*remote_port, Some(123));
    assert_eq!(
        candidates.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["ntp"]
    );
    assert!(!entry_ids(&of_kind(&f, "unused")).contains(&"ntp".to_owned()));
    assert!(ntp.role.is_none());
}

#[test]
fn unknown_direction_groups_beyond_the_limit_are_summed() {
    let flows: Vec<FlowRecord> = (0..(engine::MAX_UNKNOWN_GROUPS as u16 + 5))
        .map(|i| {
            flow(
                Transport::Udp,
                &format!("10.0.0.1:{}", 40000 + i),
                "10.0.0.2:41000",
            )
        })
        .collect();
    let f = run(flows, None, None);
    let u = of_kind(&f, "unknown_direction");
    assert_eq!(u.len(), engine::MAX_UNKNOWN_GROUPS + 1);
    let rest = u.iter().find(|x| x.port.is_none()).unwrap();
    assert_eq!(rest.traffic.flows, 5);
    assert_eq!(
        f.summary.flows.unknown_direction,
        engine::MAX_UNKNOWN_GROUPS as u64 + 5
    );
}

#[test]
fn listeners_undocumented_missing_and_with_the_wrong_process() {
    let ls = [
        listener(Transport::Tcp, "0.0.0.0", 9999, Some("nc")),
        listener(Transport::Tcp, "::", 9999, Some("nc")),
        listener(Transport::Tcp, "127.0.0.1", 5432, Some("postgres")),
        listener(Transport::Udp, "0.0.0.0", 45000, Some("chronyd")),
        listener(Transport::Tcp, "0.0.0.0", 31112, Some("java")),
        listener(Transport::Tcp, "0.0.0.0", 22, Some("sshd")),
        listener(Transport::Tcp, "0.0.0.0", 5671, None),
        listener(Transport::Tcp, "0.0.0.0", 15671, None),
        listener(Transport::Tcp, "0.0.0.0", 15003, Some("Sisense.Service")),
        listener(Transport::Tcp, "127.0.0.1", 445, None),
    ];
    let f = run(vec![], None, Some(&ls));
    let u = of_kind(&f, "undocumented_listener");
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].subject(), "tcp/9999 inbound");
    assert_eq!(
        u[0].kind,
        FindingKind::UndocumentedListener {
            addrs: vec![ip("0.0.0.0"), ip("::")]
        }
    );
    assert_eq!(u[0].processes, ["nc"]);
    let pm = of_kind(&f, "process_mismatch");
    assert_eq!(entry_ids(&pm), ["oxygen-in"]);
    assert_eq!(
        pm[0].kind,
        FindingKind::ProcessMismatch {
            expected: vec!["Sisense.Oxygen.exe".into()],
            found: vec!["java".into()]
        }
    );
    // Nothing listens for SMB except on loopback, nor on 5672/15672 (but TLS does, which
    // satisfies the variants); ranges need one port; install-only and dynamic are exempt.
    let nl = of_kind(&f, "not_listening");
    assert_eq!(entry_ids(&nl), ["smb"]);
    assert_eq!(
        nl[0].kind,
        FindingKind::NotListening {
            missing: vec!["445".into(), "137-139".into()]
        }
    );
    let s = f.summary.listeners.unwrap();
    assert_eq!(
        (
            s.total,
            s.documented,
            s.undocumented,
            s.loopback_only,
            s.ephemeral_udp,
            s.without_process
        ),
        (10, 5, 2, 2, 1, 3)
    );
}

#[test]
fn not_listening_for_alternatives_lists_every_alternative() {
    let ls = [listener(Transport::Tcp, "0.0.0.0", 22, Some("sshd"))];
    let f = run(vec![], None, Some(&ls));
    let nl = of_kind(&f, "not_listening");
    let broker = nl
        .iter()
        .find(|x| x.entry.as_ref().unwrap().id == "broker")
        .unwrap();
    assert_eq!(
        broker.kind,
        FindingKind::NotListening {
            missing: vec!["5672".into(), "15672".into(), "5671".into(), "15671".into()]
        }
    );
    // Without a listener scan there are no listener findings at all.
    let f = run(vec![], None, None);
    assert!(of_kind(&f, "not_listening").is_empty());
    assert!(f.summary.listeners.is_none());
}

#[test]
fn variants_named_as_alternatives_need_one_of_them_and_every_other_variant() {
    let text = SPEC.replace(
        "ports = \"default: 5672, 15672; tls: 5671, 15671\"",
        "ports = \"default: 5672, 15672; tls: 5671, 15671; dist: 25672; epmd: 4369\"\nalternatives = [\"default\", \"tls\"]",
    );
    assert_ne!(
        text, SPEC,
        "the fixture's broker entry changed: update this test"
    );
    let spec = Spec::parse(&text, "t.toml").unwrap();
    let w = window(vec![]);
    let n = node();
    let broker_missing = |ls: &[Listener]| -> Option<Vec<String>> {
        let f = classify(&ClassifyInput {
            spec: &spec,
            inventory: None,
            window: &w,
            listeners: Some(ls),
            connections: None,
            ephemeral: PortRange::LINUX_DEFAULT,
            node: &n,
        });
        of_kind(&f, "not_listening")
            .into_iter()
            .find(|x| x.entry.as_ref().unwrap().id == "broker")
            .map(|x| match &x.kind {
                FindingKind::NotListening { missing } => missing.clone(),
                other => panic!("{other:?}"),
            })
    };
    let tcp = |port| listener(Transport::Tcp, "0.0.0.0", port, Some("beam.smp"));
    // TLS alone satisfies the alternatives, not the variants used alongside.
    assert_eq!(
        broker_missing(&[tcp(5671), tcp(15671)]),
        Some(vec!["25672".into(), "4369".into()])
    );
    assert_eq!(
        broker_missing(&[tcp(5671), tcp(15671), tcp(4369)]),
        Some(vec!["25672".into()])
    );
    assert_eq!(
        broker_missing(&[tcp(5672), tcp(15672), tcp(25672), tcp(4369)]),
        None
    );
    // Neither alternative complete: every missing piece of both, then the rest.
    assert_eq!(
        broker_missing(&[tcp(5672), tcp(25672), tcp(4369)]),
        Some(vec!["15672".into(), "5671".into(), "15671".into()])
    );
    // Without `alternatives`, any one variant satisfies the entry (the fixture's broker).
    let f = run(vec![], None, Some(&[tcp(5671), tcp(15671)]));
    assert!(
        !entry_ids(&of_kind(&f, "not_listening")).contains(&"broker".to_owned()),
        "{f:#?}"
    );
}

#[test]
fn when_flow_detail_overflowed_port_totals_keep_entries_from_being_called_unused() {
    let spec = spec();
    let n = node();
    let dropped = tcp_in("10.0.0.1:22", "192.168.50.7:50000");
    let mut w = window(vec![dropped]);
    w.flows.clear();
    w.health.flow_table_full = 1;
    let f = classify(&ClassifyInput {
        spec: &spec,
        inventory: None,
        window: &w,
        listeners: None,
        connections: None,
        ephemeral: PortRange::LINUX_DEFAULT,
        node: &n,
    });
    assert!(f.summary.flows_approximate);
    assert!(!entry_ids(&of_kind(&f, "unused")).contains(&"ssh".to_owned()));
    assert_eq!(f.summary.entries.usage_unknown, 1);
}

#[test]
fn ports_of_a_used_entry_without_traffic_are_listed_with_their_labels() {
    let spec = spec();
    let n = node();
    let unused_ports = |w: &Snapshot| -> Vec<(String, Vec<String>)> {
        let f = classify(&ClassifyInput {
            spec: &spec,
            inventory: None,
            window: w,
            listeners: None,
            connections: None,
            ephemeral: PortRange::LINUX_DEFAULT,
            node: &n,
        });
        of_kind(&f, "unused_ports")
            .into_iter()
            .map(|x| match &x.kind {
                FindingKind::UnusedPorts { ports } => {
                    (x.entry.as_ref().unwrap().id.clone(), ports.clone())
                }
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let smb = tcp_in("10.0.0.1:445", "192.168.50.7:50000");
    let tls = tcp_in("10.0.0.1:5671", "192.168.50.7:50001");
    let smtp = tcp_out("10.0.0.1:40000", "192.168.50.9:587");
    let w = window(vec![smb, tls, smtp]);
    assert_eq!(
        unused_ports(&w),
        [
            (
                "broker".to_owned(),
                vec![
                    "5672 (default)".to_owned(),
                    "15672 (default)".to_owned(),
                    "15671 (tls)".to_owned()
                ]
            ),
            ("smb".to_owned(), vec!["137-139".to_owned()]),
            ("smtp".to_owned(), vec!["25".to_owned()]),
        ]
    );
    // One port of a range is use of the range; an entry with one port has nothing to add.
    let w = window(vec![smb, tcp_in("10.0.0.1:138", "192.168.50.7:50002")]);
    assert!(unused_ports(&w).is_empty(), "{:?}", unused_ports(&w));
    // Flow detail overflowed: traffic the per-port totals show on 139 counts as use; with no
    // traffic on 137-139 in the totals either, the range stays unused.
    let mut w = window(vec![smb, tcp_in("10.0.0.1:139", "192.168.50.7:50003")]);
    w.flows.retain(|f| f.key.local.port == 445);
    w.health.flow_table_full = 1;
    assert!(unused_ports(&w).is_empty(), "{:?}", unused_ports(&w));
    let mut w = window(vec![smb]);
    w.health.flow_table_full = 1;
    assert_eq!(
        unused_ports(&w),
        [("smb".to_owned(), vec!["137-139".to_owned()])]
    );
}

#[test]
fn icmp_echo_is_documented_and_neighbour_discovery_is_infrastructure() {
    let inv = inventory();
    // Backends put `type << 8 | code` in the destination's port, 0 in the source's.
    let mut ping = flow(Transport::Icmp, "10.0.0.1:2048", "10.0.0.2:0");
    ping.stats.outbound = Counts::default();
    // The node sends a neighbour solicitation: the type is on the remote end.
    let mut ns = flow(Transport::Icmpv6, "[fe80::1]:0", "[fe80::2]:34560");
    ns.stats.inbound = Counts::default();
    // The node pings another node.
    let mut ping_out = flow(Transport::Icmp, "10.0.0.1:0", "10.0.0.2:2048");
    ping_out.stats.inbound = Counts::default();
    let mut ping6 = flow(Transport::Icmpv6, "[fd00::1]:32768", "[fd00::2]:0");
    ping6.stats.outbound = Counts::default();
    let f = run(vec![ping, ns, ping6, ping_out], Some(&inv), None);
    let d = of_kind(&f, "documented");
    assert_eq!(entry_ids(&d), ["icmp", "icmp"]);
    assert_eq!(d[0].subject(), "icmp inbound");
    assert_eq!(d[1].subject(), "icmp outbound");
    assert_eq!(f.summary.flows.infrastructure, 1);
    // ICMPv6 echo against an ICMPv4-only entry: wrong transport.
    assert_eq!(entry_ids(&of_kind(&f, "wrong_transport")), ["icmp"]);
}

#[test]
fn output_is_deterministic_whatever_the_input_order() {
    let mut flows = vec![
        tcp_in("10.0.0.1:31112", "10.0.0.2:50000"),
        tcp_in("10.0.0.1:8080", "10.0.0.9:40000"),
        tcp_out("10.0.0.1:45000", "10.0.0.2:31112"),
        flow(Transport::Udp, "10.0.0.1:40000", "10.0.0.2:41000"),
        tcp_in("10.0.0.1:22", "10.9.9.9:50000"),
    ];
    let inv = inventory();
    let a = run(flows.clone(), Some(&inv), None);
    flows.reverse();
    let b = run(flows, Some(&inv), None);
    assert_eq!(a, b);
    // Most serious first.
    let ranks: Vec<u8> = a.findings.iter().map(|f| f.kind.rank()).collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
}

#[test]
fn process_names_match_across_exe_suffix_case_and_truncation() {
    let names = vec!["Sisense.Oxygen.exe".to_owned()];
    assert!(engine::process_matches(&names, &["sisense.oxygen"]));
    assert!(engine::process_matches(&names, &["Sisense.Oxygen."]));
    assert!(!engine::process_matches(&names, &["Sisense.Oxygen2"]));
    assert!(!engine::process_matches(&names, &["java"]));
}
