//! Tests of the engine's internals: the port index, range searches of the totals, the
//! unknown-direction cap and group ports.
use super::groups::{Group, GroupKey, GroupPorts};
use super::*;
use crate::classify::NodeInfo;
use crate::classify::findings::Traffic;
use crate::flow::Snapshot;
use crate::host::PortRange;
use crate::spec::Spec;

fn check_index(spec: &Spec) {
    let w = Snapshot::default();
    let n = NodeInfo::default();
    let input = ClassifyInput {
        spec,
        inventory: None,
        window: &w,
        listeners: None,
        connections: None,
        ephemeral: PortRange::LINUX_DEFAULT,
        node: &n,
    };
    let ctx = Ctx::new(&input);
    // Every range edge and its neighbours, the low ports, and a stride over the rest.
    let mut ports: std::collections::BTreeSet<u16> = (0..=1100).collect();
    ports.extend((0..=u16::MAX).step_by(61));
    for r in &ctx.rules {
        for (_, range) in r.e.ports.iter_ranges() {
            for p in [range.start, range.end] {
                ports.extend([p.saturating_sub(1), p, p.saturating_add(1)]);
            }
        }
    }
    for t in [Transport::Tcp, Transport::Icmp] {
        for &p in &ports {
            let port = Some(p);
            let by_index: Vec<usize> = ctx.covering(t, port).map(|r| r.idx).collect();
            let by_scan: Vec<usize> = ctx
                .rules
                .iter()
                .filter(|r| r.covers(t, port))
                .map(|r| r.idx)
                .collect();
            assert_eq!(by_index, by_scan, "{} port {p} {t}", spec.name);
        }
    }
}

#[test]
fn the_port_index_agrees_with_the_entries_on_every_port() {
    check_index(&crate::classify::tests::spec());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    for f in ["sisense-multinode.toml", "thoughtspot.toml"] {
        check_index(&Spec::load(root.join(f)).unwrap());
    }
}

/// The definition [`totals_show_traffic`] searches by range: any total of the entry's
/// transport, on one of its ports, on the side it serves from.
fn shows_by_scan(r: &Rule<'_>, totals: &PortTotals) -> bool {
    totals.v.iter().any(|&((t, port, side), c)| {
        !c.is_zero()
            && r.admits(t)
            && (if t.has_ports() {
                r.e.ports.matches(port).is_some()
            } else {
                r.e.ports.is_none()
            })
            && match side {
                Side::Local => r.allows(Role::Server),
                Side::Remote => r.allows(Role::Client),
            }
    })
}

#[test]
fn totals_searched_by_range_agree_with_a_scan_for_every_entry() {
    use crate::flow::{PortCounts, PortTotal};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    let specs = [
        crate::classify::tests::spec(),
        Spec::load(root.join("sisense-multinode.toml")).unwrap(),
        Spec::load(root.join("thoughtspot.toml")).unwrap(),
    ];
    let mut next = crate::flow::xorshift(0x9e37_79b9_7f4a_7c15u64);
    let transports = [
        Transport::Tcp,
        Transport::Udp,
        Transport::Sctp,
        Transport::Icmp,
        Transport::Icmpv6,
        Transport::Other(47),
    ];
    let n = NodeInfo::default();
    for spec in &specs {
        for round in 0..40 {
            // Few totals (single ports, edges of ranges) to a flood of remote ports.
            let count = [1, 3, 20, 400, 5000][round % 5];
            let ports: Vec<PortTotal> = (0..count)
                .map(|_| PortTotal {
                    transport: transports[next(6) as usize],
                    port: if next(2) == 0 {
                        next(1100) as u16
                    } else {
                        next(65536) as u16
                    },
                    side: [Side::Local, Side::Remote][next(2) as usize],
                    dir: [Direction::In, Direction::Out][next(2) as usize],
                    counts: PortCounts {
                        packets: next(3),
                        bytes: next(2) * 100,
                        ..PortCounts::default()
                    },
                })
                .collect();
            let w = Snapshot {
                ports,
                ..Snapshot::default()
            };
            let input = ClassifyInput {
                spec,
                inventory: None,
                window: &w,
                listeners: None,
                connections: None,
                ephemeral: PortRange::LINUX_DEFAULT,
                node: &n,
            };
            let ctx = Ctx::new(&input);
            let totals = port_totals(&input);
            for r in &ctx.rules {
                assert_eq!(
                    totals_show_traffic(r, &totals),
                    shows_by_scan(r, &totals),
                    "{} entry {} round {round}",
                    spec.name,
                    r.e.id
                );
                for (_, range) in r.e.ports.iter_ranges() {
                    let scan = totals.v.iter().any(|&((t, port, side), c)| {
                        !c.is_zero()
                            && r.admits(t)
                            && t.has_ports()
                            && range.contains(port)
                            && match side {
                                Side::Local => r.allows(Role::Server),
                                Side::Remote => r.allows(Role::Client),
                            }
                    });
                    assert_eq!(
                        totals_show_traffic_on(r, &totals, range),
                        scan,
                        "{} entry {} range {range} round {round}",
                        spec.name,
                        r.e.id
                    );
                }
            }
        }
    }
}

/// Unknown-direction groups with bytes that tie and differ, one or several ports, and
/// peers shared between groups, and the groups they stand for (by id); the same every call.
fn unknown_groups(n: usize, flat: &[PeerStat]) -> (Vec<UnknownGroup<'_>>, Vec<(GroupKey, Group)>) {
    (0..n)
        .map(|i| {
            let mut g = Group {
                traffic: Traffic {
                    flows: 1 + (i % 3) as u64,
                    packets_in: 1,
                    bytes_in: [64, 64, 128, 1500, 64][i % 5] * (1 + u64::from(i % 7 == 0)),
                    first_seen: 10 + i as u64,
                    last_seen: 20 + i as u64,
                    ..Traffic::default()
                },
                ..Group::default()
            };
            g.ports.insert(7000 + (i % 4) as u16);
            if i % 11 == 0 {
                g.ports.insert(9000);
            }
            // Group i's peers: (i % 9) * 3 .. + 1 + i % 3 of the flat list.
            let at = (i % 9) * 3;
            let peers = &flat[at..at + 1 + i % 3];
            let transport = [Transport::Udp, Transport::Tcp][i % 2];
            let reason = UnknownReason::AmbiguousPorts;
            let key = GroupKey::Unknown {
                transport,
                local: 7000,
                remote: i as u16,
                reason,
            };
            (
                UnknownGroup {
                    transport,
                    remote: i as u16,
                    reason,
                    id: i as u32,
                    peers_total: peers.len() as u64,
                    peers,
                },
                (key, g),
            )
        })
        .unzip()
}

/// How the capped list was made before only the listed groups were built: every finding
/// built, sorted (stable) by bytes then the report's key, the rest summed.
fn cap_by_sorting(mut v: Vec<Finding>) -> Vec<Finding> {
    if v.len() <= MAX_UNKNOWN_GROUPS {
        return v;
    }
    v.sort_by(|a, b| {
        b.traffic
            .bytes()
            .cmp(&a.traffic.bytes())
            .then(a.sort_key().cmp(&b.sort_key()))
    });
    let rest = v.split_off(MAX_UNKNOWN_GROUPS);
    let mut sum = Finding::new(FindingKind::UnknownDirection {
        reason: UnknownReason::AmbiguousPorts,
        remote_port: None,
        candidates: Vec::new(),
    });
    let mut peers: BTreeSet<IpAddr> = BTreeSet::new();
    for f in &rest {
        sum.traffic.add(&f.traffic);
        peers.extend(f.peers.iter().map(|p| p.addr));
    }
    sum.peers_total = peers.len() as u64;
    v.push(sum);
    v
}

#[test]
fn only_the_listed_unknown_groups_are_built_and_the_list_is_unchanged() {
    let spec = crate::classify::tests::spec();
    let w = Snapshot::default();
    let n = NodeInfo::default();
    let input = ClassifyInput {
        spec: &spec,
        inventory: None,
        window: &w,
        listeners: None,
        connections: None,
        ephemeral: PortRange::LINUX_DEFAULT,
        node: &n,
    };
    let ctx = Ctx::new(&input);
    let by_idx: BTreeMap<usize, &Rule> = ctx.rules.iter().map(|r| (r.idx, r)).collect();
    let totals = port_totals(&input);
    for count in [0, 1, MAX_UNKNOWN_GROUPS, MAX_UNKNOWN_GROUPS + 1, 3000] {
        let flat: Vec<PeerStat> = (0..27)
            .map(|k| PeerStat {
                addr: IpAddr::from([10, 1, (k / 3) as u8, (k % 3) as u8]),
                flows: 1,
                packets: 1,
                bytes: 64,
            })
            .collect();
        let (unknown, groups) = unknown_groups(count, &flat);
        let all: Vec<Finding> = unknown
            .into_iter()
            .zip(groups)
            .map(|(u, (_, g))| u.finding(g, &by_idx, &totals))
            .collect();
        let (unknown, mut groups) = unknown_groups(count, &flat);
        assert_eq!(
            unknown_findings(unknown, &mut groups, &by_idx, &totals),
            cap_by_sorting(all),
            "{count} groups"
        );
    }
}

#[test]
fn group_ports_are_a_sorted_set() {
    let mut p = GroupPorts::default();
    assert_eq!((p.iter().count(), p.single()), (0, None));
    for x in [443, 443] {
        p.insert(x);
    }
    assert_eq!(
        (p.iter().collect::<Vec<_>>(), p.single()),
        (vec![443], Some(443))
    );
    for x in [80, 8443, 80, 443] {
        p.insert(x);
    }
    assert_eq!(p.iter().collect::<Vec<_>>(), vec![80, 443, 8443]);
    assert_eq!(p.single(), None);
}
