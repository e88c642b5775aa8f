//! Reports built in memory through the real classifier (spec and inventory from TOML text,
//! flows and listeners as values) for the browser test of the HTML report and its benchmark.
//! Deterministic: no clock, no randomness, no I/O.
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use portwatch::classify::{ClassifyInput, NodeInfo};
use portwatch::flow::{
    Counts, Direction, Endpoint, FlowKey, FlowRecord, FlowStats, Health, PortCounts, PortTotal,
    Side, Snapshot, Transport,
};
use portwatch::host::{Listener, PortRange, Process};
use portwatch::inventory::Inventory;
use portwatch::report::{CaptureInfo, Report, ReportMeta};
use portwatch::spec::Spec;

/// 2026-03-02T09:00:00Z.
pub const T0: u64 = 1_772_442_000 * SEC;
const SEC: u64 = 1_000_000_000;
/// The window: one hour.
pub const WINDOW_S: u64 = 3600;

/// A small product spec with the shapes real tables have (alternatives, ranges, variants,
/// zones, processes, an N/A row).
pub const SPEC: &str = r#"
[spec]
name = "acme-bi"
vendor = "Acme"
product = "Acme BI (multi-node)"

[zones]
admin = "Administrators"
all-nodes = "All nodes"
all-users = "All users"

[[entry]]
id = "web-https"
service = "Web application"
ports = 443
transport = "tcp"
direction = "inbound"
sources = ["all-users"]
processes = ["nginx"]

[[entry]]
id = "ssh"
service = "SSH"
ports = 22
transport = "tcp"
direction = "inbound"
sources = ["admin"]
processes = ["sshd"]

[[entry]]
id = "app-rpc"
service = "Application RPC"
ports = 31112
transport = "tcp"
direction = "inbound"
sources = ["all-nodes"]
processes = ["java"]

[[entry]]
id = "broker"
service = "Message broker"
ports = "default: 5672; tls: 5671"
transport = "tcp"
direction = "inbound"
sources = ["all-nodes"]

[[entry]]
id = "db"
service = "Database"
ports = 5432
transport = "tcp"
direction = "outbound"
destinations = ["all-nodes"]

[[entry]]
id = "smtp"
service = "Mail"
ports = "25 or 587"
transport = "tcp"
direction = "outbound"

[[entry]]
id = "ntp"
service = "Time"
ports = 123
transport = "udp"
direction = "outbound"

[[entry]]
id = "cluster-range"
service = "Cluster services"
ports = "15000-15050"
transport = "tcp"
direction = "inbound"
sources = ["all-nodes"]

[[entry]]
id = "winrm"
service = "Installer"
ports = 5986
transport = "tcp"
direction = "inbound"
flags = ["install-only"]

[[entry]]
id = "licence"
service = "Licence server"
ports = "none"
transport = "none"
direction = "none"
"#;

/// The site: admin network, users, the three nodes.
pub const INVENTORY: &str = r#"
[inventory]
name = "lab"

[zones]
admin = ["192.168.50.0/24"]
all-users = ["10.20.0.0/16"]

[[node]]
name = "node-a"
addresses = ["10.0.0.1"]

[[node]]
name = "node-b"
addresses = ["10.0.0.2"]

[[node]]
name = "node-c"
addresses = ["10.0.0.3"]
"#;

fn ep(addr: IpAddr, port: u16) -> Endpoint {
    Endpoint { addr, port }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// A TCP flow; `inbound` says who sent the SYN. Starts `start_s` into the window, lasts `dur_s`.
#[allow(clippy::too_many_arguments)]
fn tcp(
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    inbound: bool,
    start_s: u64,
    dur_s: u64,
    bytes_in: u64,
    bytes_out: u64,
) -> FlowRecord {
    FlowRecord {
        key: FlowKey {
            transport: Transport::Tcp,
            local: ep(local.0, local.1),
            remote: ep(remote.0, remote.1),
        },
        stats: FlowStats {
            inbound: Counts {
                packets: bytes_in / 1000 + 3,
                bytes: bytes_in,
            },
            outbound: Counts {
                packets: bytes_out / 1000 + 3,
                bytes: bytes_out,
            },
            syn_in: u32::from(inbound),
            syn_out: u32::from(!inbound),
            first_seen: T0 + start_s * SEC,
            last_seen: T0 + (start_s + dur_s) * SEC,
            ..FlowStats::default()
        },
        vantage_known: true,
    }
}

fn udp_out(local: (IpAddr, u16), remote: (IpAddr, u16), start_s: u64) -> FlowRecord {
    FlowRecord {
        key: FlowKey {
            transport: Transport::Udp,
            local: ep(local.0, local.1),
            remote: ep(remote.0, remote.1),
        },
        stats: FlowStats {
            inbound: Counts {
                packets: 1,
                bytes: 90,
            },
            outbound: Counts {
                packets: 1,
                bytes: 90,
            },
            first_seen: T0 + start_s * SEC,
            last_seen: T0 + start_s * SEC,
            ..FlowStats::default()
        },
        vantage_known: true,
    }
}

/// Per-port totals as a backend would count them.
fn totals(flows: &[FlowRecord]) -> Vec<PortTotal> {
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
    m.into_iter()
        .map(|((transport, port, side, dir), counts)| PortTotal {
            transport,
            port,
            side,
            dir,
            counts,
        })
        .collect()
}

fn listener(port: u16, name: &str) -> Listener {
    Listener {
        transport: Transport::Tcp,
        addr: v4(0, 0, 0, 0),
        port,
        inode: u64::from(port),
        processes: vec![Process {
            pid: 1000 + u32::from(port % 1000),
            name: name.to_owned(),
            cmdline: vec![format!("/usr/sbin/{name}")],
        }],
    }
}

/// The flows of node-a's hour: users on the web port all along, admin and non-admin SSH, RPC
/// between nodes, database and mail outbound, an RPC connection opened the wrong way,
/// undocumented traffic, and `extra` more undocumented inbound ports (one finding each).
fn flows(extra: usize) -> Vec<FlowRecord> {
    let me = v4(10, 0, 0, 1);
    let mut v = Vec::new();
    for i in 0..120u64 {
        // Users on HTTPS, busier mid-window.
        let load = 1 + (i % 60).min(60 - i % 60) / 6;
        v.push(tcp(
            (me, 443),
            (
                v4(10, 20, (i % 7) as u8, (i % 200) as u8 + 1),
                40_000 + i as u16,
            ),
            true,
            i * 30,
            20 + i % 40,
            20_000 * load,
            400_000 * load,
        ));
    }
    for i in 0..40u64 {
        v.push(tcp(
            (me, 31112),
            (v4(10, 0, 0, 2 + (i % 2) as u8), 45_000 + i as u16),
            true,
            i * 90,
            60,
            150_000,
            90_000,
        ));
        v.push(tcp(
            (me, 50_000 + i as u16),
            (v4(10, 0, 0, 2), 5432),
            false,
            i * 90 + 10,
            30,
            800_000,
            30_000,
        ));
    }
    // SSH from the admin network, and from a user's laptop (peer outside zone).
    v.push(tcp(
        (me, 22),
        (v4(192, 168, 50, 7), 51_000),
        true,
        300,
        900,
        40_000,
        60_000,
    ));
    v.push(tcp(
        (me, 22),
        (v4(10, 20, 3, 99), 51_001),
        true,
        2400,
        120,
        9_000,
        12_000,
    ));
    // Mail out on 587.
    v.push(tcp(
        (me, 41_000),
        (v4(10, 9, 0, 25), 587),
        false,
        1800,
        4,
        2_000,
        30_000,
    ));
    // This node opened a connection to the RPC port of a host outside the cluster: the entry
    // documents the port inbound on the nodes only (node to node it would be documented).
    v.push(tcp(
        (me, 42_000),
        (v4(10, 0, 9, 3), 31112),
        false,
        1200,
        30,
        5_000,
        5_000,
    ));
    // NTP.
    v.push(udp_out((me, 40_123), (v4(10, 9, 0, 123), 123), 60));
    // Undocumented: Redis from two nodes, a debug HTTP port from users, an outbound HTTP proxy.
    for i in 0..25u64 {
        v.push(tcp(
            (me, 6379),
            (v4(10, 0, 0, 2 + (i % 2) as u8), 46_000 + i as u16),
            true,
            i * 140,
            100,
            600_000,
            2_400_000,
        ));
    }
    for i in 0..6u64 {
        v.push(tcp(
            (me, 8080),
            (v4(10, 20, 1, 10 + i as u8), 47_000 + i as u16),
            true,
            2000 + i * 200,
            15,
            30_000,
            900_000,
        ));
    }
    v.push(tcp(
        (me, 43_000),
        (v4(10, 9, 8, 8), 3128),
        false,
        3000,
        300,
        5_000_000,
        200_000,
    ));
    // Many undocumented ports (the benchmark's 10,000 findings).
    for i in 0..extra {
        let port = 20_000 + (i % 40_000) as u16;
        let peer = v4(10, 30, (i / 250 % 250) as u8, (i % 250) as u8 + 1);
        v.push(tcp(
            (me, port),
            (peer, 33_000 + (i % 20_000) as u16),
            true,
            (i as u64 * 7) % (WINDOW_S - 10),
            5,
            1_000 + i as u64 % 5_000,
            2_000,
        ));
    }
    v
}

fn listeners() -> Vec<Listener> {
    vec![
        listener(443, "nginx"),
        listener(22, "sshd"),
        // The spec names java; a python process holds the port.
        listener(31112, "python3"),
        listener(6379, "redis-server"),
        listener(8080, "python3"),
        listener(9100, "node_exporter"),
    ]
}

/// node-a's report for one hour, with `extra` more undocumented ports (each one finding).
pub fn node_report(extra: usize) -> Report {
    let spec = Spec::parse(SPEC, "specs/acme-bi.toml").expect("fixture spec parses");
    let inv = Inventory::parse(INVENTORY, "site/lab.toml").expect("fixture inventory parses");
    let flows = flows(extra);
    let window = Snapshot {
        start: T0,
        end: T0 + WINDOW_S * SEC,
        ports: totals(&flows),
        flows,
        health: Health {
            packets_seen: 48_213,
            ..Health::default()
        },
    };
    let ls = listeners();
    let node = NodeInfo {
        name: "node-a".into(),
        addrs: vec![v4(10, 0, 0, 1)],
    };
    Report::analyze(
        &ClassifyInput {
            spec: &spec,
            inventory: Some(&inv),
            window: &window,
            listeners: Some(&ls),
            connections: None,
            ephemeral: PortRange::LINUX_DEFAULT,
            node: &node,
        },
        ReportMeta {
            generated_at: T0 + (WINDOW_S + 1) * SEC,
            capture: CaptureInfo {
                backend: Some("ebpf".into()),
                interfaces: vec!["eth0".into()],
                listeners_unavailable: None,
            },
        },
    )
}
