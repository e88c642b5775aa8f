//! Classification against the shipped ThoughtSpot spec and the example inventory: the rows
//! the vendor document is known for (dynamic range, ICMPv4 health checks, SMTP alternatives,
//! outbound destinations given as an IP address, the IPMI table) behave as documented.
use std::net::SocketAddr;
use std::path::Path;

use portwatch::classify::{ClassifyInput, Finding, Findings, NodeInfo, classify};
use portwatch::flow::{Counts, Endpoint, FlowKey, FlowRecord, FlowStats, Snapshot, Transport};
use portwatch::host::PortRange;
use portwatch::inventory::Inventory;
use portwatch::spec::Spec;

fn ep(s: &str) -> Endpoint {
    let a: SocketAddr = s.parse().unwrap();
    Endpoint {
        addr: a.ip(),
        port: a.port(),
    }
}

fn flow(t: Transport, local: &str, remote: &str, syn_in: u32, syn_out: u32) -> FlowRecord {
    FlowRecord {
        key: FlowKey {
            transport: t,
            local: ep(local),
            remote: ep(remote),
        },
        stats: FlowStats {
            inbound: Counts {
                packets: 3,
                bytes: 300,
            },
            outbound: Counts {
                packets: 3,
                bytes: 300,
            },
            syn_in,
            syn_out,
            first_seen: 1,
            last_seen: 2,
            ..FlowStats::default()
        },
        vantage_known: true,
    }
}

fn inbound(local: &str, remote: &str) -> FlowRecord {
    flow(Transport::Tcp, local, remote, 1, 0)
}

fn outbound(local: &str, remote: &str) -> FlowRecord {
    flow(Transport::Tcp, local, remote, 0, 1)
}

/// An ICMP echo request received (the destination's port holds type 8 << 8).
fn ping_from(remote: &str) -> FlowRecord {
    let mut f = flow(
        Transport::Icmp,
        "10.0.1.11:2048",
        &format!("{remote}:0"),
        0,
        0,
    );
    f.stats.outbound = Counts::default();
    f
}

fn run(flows: Vec<FlowRecord>) -> Findings {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    let spec = Spec::load(root.join("thoughtspot.toml")).unwrap();
    let inv = Inventory::load(root.join("inventory.example.toml")).unwrap();
    let w = Snapshot {
        flows,
        ..Snapshot::default()
    };
    let node = NodeInfo {
        name: "node-1".into(),
        addrs: vec!["10.0.1.11".parse().unwrap()],
    };
    classify(&ClassifyInput {
        spec: &spec,
        inventory: Some(&inv),
        window: &w,
        listeners: None,
        connections: None,
        ephemeral: PortRange::LINUX_DEFAULT,
        node: &node,
    })
}

fn named<'a>(f: &'a Findings, kind: &str) -> Vec<(&'a str, &'a Finding)> {
    f.findings
        .iter()
        .filter(|x| x.kind.name() == kind)
        .filter_map(|x| x.entry.as_ref().map(|e| (e.id.as_str(), x)))
        .collect()
}

fn ids(v: &[(&str, &Finding)]) -> Vec<String> {
    v.iter().map(|(id, _)| (*id).to_owned()).collect()
}

#[test]
fn the_dynamic_range_covers_node_to_node_traffic_only() {
    let f = run(vec![
        inbound("10.0.1.11:25000", "10.0.1.12:41000"),
        outbound("10.0.1.11:41001", "10.0.1.13:30000"),
        // An ordinary user reaching a dynamic port: outside all-nodes.
        inbound("10.0.1.11:26000", "10.0.0.50:41002"),
    ]);
    let d = named(&f, "documented");
    assert_eq!(
        ids(&d),
        ["intra-dynamic-20123-32768", "intra-dynamic-20123-32768"]
    );
    let o = named(&f, "peer_outside_zone");
    assert_eq!(ids(&o), ["intra-dynamic-20123-32768"]);
}

#[test]
fn icmp_health_checks_between_nodes_and_from_elsewhere() {
    let f = run(vec![ping_from("10.0.1.12"), ping_from("10.20.0.5")]);
    assert_eq!(ids(&named(&f, "documented")), ["intra-icmp-health-check"]);
    assert_eq!(
        ids(&named(&f, "peer_outside_zone")),
        ["intra-icmp-health-check"]
    );
}

#[test]
fn smtp_alternatives_and_the_relay_zone() {
    let f = run(vec![
        outbound("10.0.1.11:45000", "10.20.5.25:587"),
        outbound("10.0.1.11:45001", "203.0.113.99:25"),
    ]);
    let d = named(&f, "documented");
    assert_eq!(ids(&d), ["egress-smtp"]);
    assert_eq!(d[0].1.port, Some(587));
    let o = named(&f, "peer_outside_zone");
    assert_eq!(ids(&o), ["egress-smtp"]);
    assert_eq!(o[0].1.port, Some(25));
    // LDAP (389 or 636) saw nothing.
    assert!(ids(&named(&f, "unused")).contains(&"egress-ldap".to_owned()));
}

#[test]
fn outbound_443_goes_to_the_entry_whose_destination_matches() {
    // Several entries document 443; the one naming this address gets the traffic.
    let f = run(vec![outbound("10.0.1.11:45000", "208.83.110.20:443")]);
    assert_eq!(ids(&named(&f, "documented")), ["egress-443-egnyte"]);
    assert!(named(&f, "peer_outside_zone").is_empty());
    // A host name bound by the inventory ([hosts]) admits its addresses.
    let f = run(vec![outbound("10.0.1.11:45000", "192.0.2.10:443")]);
    let d = ids(&named(&f, "documented"));
    assert!(!d.contains(&"egress-443-egnyte".to_owned()), "{d:?}");
}

#[test]
fn ipmi_from_vendor_support_and_undocumented_ports() {
    let f = run(vec![
        flow(Transport::Udp, "10.0.1.11:623", "203.0.113.5:50000", 0, 0),
        inbound("10.0.1.11:6000", "10.20.0.5:50001"),
    ]);
    assert_eq!(ids(&named(&f, "documented")), ["ipmi-623-serial-over-lan"]);
    let u: Vec<String> = f
        .findings
        .iter()
        .filter(|x| x.kind.name() == "undocumented")
        .map(Finding::subject)
        .collect();
    assert_eq!(u, ["tcp/6000 inbound"]);
}
