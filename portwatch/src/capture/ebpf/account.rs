//! Turns one reading of the kernel maps into an interval's [`Snapshot`]: per-port and health
//! deltas against the persisted baseline, drained flows converted to the observation model
//! (kernel monotonic time via [`MonotonicOffset`]). Pure: no I/O, no clock reads.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use portwatch_common as common;
use portwatch_common::{COUNTERS_LEN, FlowKey as KFlowKey, FlowValue, PortCounters};

use super::state::Baseline;
pub(crate) use super::totals::PortTotals;
use super::totals::order;
use crate::clock::{MonotonicOffset, UnixNanos};
use crate::flow::{
    Counts, Direction, Endpoint, FlowKey, FlowRecord, FlowStats, Health, PortCounts, PortTotal,
    Side, Snapshot, TcpFlags, Transport,
};

/// Cumulative values read from the kernel at the end of an interval.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reading {
    /// Per-port totals summed over CPUs.
    pub totals: PortTotals,
    /// Health counters summed over CPUs.
    pub counters: [u64; COUNTERS_LEN],
    /// Flows drained (looked up and deleted) from the flow map and the flow cache.
    pub flows: Vec<(KFlowKey, FlowValue)>,
    /// Flows drained but not kept: beyond the flow capacity (counted as flow-table-full).
    pub flows_over_capacity: u64,
    /// Failed drains of the flow map (counted as flow update errors): `flows` holds what was
    /// drained before the failure.
    pub flow_drain_errors: u64,
}

/// The snapshot for `[start, end]` and the baseline to persist once it is handed out.
pub(crate) fn account(
    base: &Baseline,
    reading: Reading,
    offset: &MonotonicOffset,
    start: UnixNanos,
    end: UnixNanos,
) -> (Snapshot, Baseline) {
    // The drained flows first, and their kernel form freed before the per-port deltas are
    // built: both are as large as the flow table.
    let mut flows: Vec<FlowRecord> = reading
        .flows
        .into_iter()
        .map(|(k, v)| flow_record(&k, &v, offset))
        .collect();
    flows.sort_by_key(|a| a.key);

    // At most one delta per key: reserved once (a growing vector's doubling copy would be as
    // large as the per-port table), the unused tail given back.
    let mut ports: Vec<PortTotal> = Vec::with_capacity(reading.totals.len());
    // Both sides are sorted by key: a merge join.
    let mut old = base.totals.iter().peekable();
    for (k, v) in reading.totals.iter() {
        while old.next_if(|(o, _)| order(o) < order(k)).is_some() {}
        let before = old
            .next_if(|(o, _)| o == k)
            .map(|(_, c)| *c)
            .unwrap_or_default();
        let counts = delta(v, &before);
        if !counts.is_zero() {
            ports.push(PortTotal {
                transport: Transport::from_proto(k.proto),
                port: k.port,
                side: side(k.side),
                dir: dir(k.dir),
                counts,
            });
        }
    }
    ports.shrink_to_fit();
    ports.sort_by_key(|p| (p.transport, p.port, p.side, p.dir));

    let d = |i: usize| reading.counters[i].saturating_sub(base.counters[i]);
    let health = Health {
        flow_table_full: d(common::CNT_FLOW_FULL) + reading.flows_over_capacity,
        flow_update_errors: d(common::CNT_FLOW_ERR) + reading.flow_drain_errors,
        port_table_full: d(common::CNT_PORT_FULL) + d(common::CNT_PORT_ERR),
        malformed: d(common::CNT_MALFORMED) + d(common::CNT_EXT_LIMIT),
        truncated: d(common::CNT_TRUNCATED) + d(common::CNT_PULL_FAILED),
        non_ip: d(common::CNT_NON_IP),
        capture_drops: 0,
        packets_seen: d(common::CNT_PACKETS),
    };
    let next = Baseline {
        seq: base.seq + 1,
        last_end: end,
        counters: reading.counters,
        totals: reading.totals,
    };
    (
        Snapshot {
            start,
            end,
            flows,
            ports,
            health,
        },
        next,
    )
}

/// `now - old`, field by field. Counters only grow while the maps live (the baseline is bound
/// to the maps' ids), so saturation only guards against a bug.
fn delta(now: &PortCounters, old: &PortCounters) -> PortCounts {
    PortCounts {
        packets: now.packets.saturating_sub(old.packets),
        segments: now.segments.saturating_sub(old.segments),
        bytes: now.bytes.saturating_sub(old.bytes),
        syn: now.syn.saturating_sub(old.syn),
        synack: now.synack.saturating_sub(old.synack),
        fin: now.fin.saturating_sub(old.fin),
        rst: now.rst.saturating_sub(old.rst),
    }
}

fn side(s: u8) -> Side {
    if s == common::SIDE_LOCAL {
        Side::Local
    } else {
        Side::Remote
    }
}

fn dir(d: u8) -> Direction {
    if d == common::DIR_INGRESS {
        Direction::In
    } else {
        Direction::Out
    }
}

/// An address as the kernel stored it (network byte order words).
pub(crate) fn addr(family: u8, words: &[u32; 4]) -> IpAddr {
    if family == common::FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes()))
    } else {
        let mut b = [0u8; 16];
        for (chunk, w) in b.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(b))
    }
}

fn flow_record(k: &KFlowKey, v: &FlowValue, offset: &MonotonicOffset) -> FlowRecord {
    FlowRecord {
        key: FlowKey {
            transport: Transport::from_proto(k.proto),
            local: Endpoint {
                addr: addr(k.family, &k.local_addr),
                port: k.local_port,
            },
            remote: Endpoint {
                addr: addr(k.family, &k.remote_addr),
                port: k.remote_port,
            },
        },
        stats: FlowStats {
            inbound: Counts {
                packets: v.packets_in,
                bytes: v.bytes_in,
            },
            outbound: Counts {
                packets: v.packets_out,
                bytes: v.bytes_out,
            },
            flags_in: TcpFlags(v.flags_in),
            flags_out: TcpFlags(v.flags_out),
            syn_in: v.syns_in,
            syn_out: v.syns_out,
            first_seen: offset.to_unix(v.first_seen_ns),
            last_seen: offset.to_unix(v.last_seen_ns),
        },
        vantage_known: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwatch_common::PortKey;

    fn key(proto: u8, port: u16, side: u8, dir: u8) -> PortKey {
        PortKey {
            port,
            proto,
            side,
            dir,
            _pad: [0; 3],
        }
    }

    fn pc(packets: u64, bytes: u64) -> PortCounters {
        PortCounters {
            packets,
            segments: packets,
            bytes,
            ..PortCounters::default()
        }
    }

    const OFF: MonotonicOffset = MonotonicOffset { offset: 1_000 };

    #[test]
    fn totals_are_reported_as_deltas_and_quiet_ports_are_left_out() {
        let mut base = Baseline::default();
        base.totals.insert(key(17, 53, 0, 0), pc(10, 1000));
        base.totals.insert(key(6, 22, 0, 0), pc(4, 400));
        base.counters[common::CNT_PACKETS] = 14;
        let mut r = Reading::default();
        r.totals.insert(key(17, 53, 0, 0), pc(15, 1600));
        r.totals.insert(key(6, 22, 0, 0), pc(4, 400));
        r.totals.insert(key(17, 40000, 1, 0), pc(5, 600));
        r.counters[common::CNT_PACKETS] = 19;
        r.counters[common::CNT_FLOW_FULL] = 2;
        r.flows_over_capacity = 3;
        let (s, next) = account(&base, r, &OFF, 10, 20);
        assert_eq!((s.start, s.end), (10, 20));
        let got: Vec<_> = s
            .ports
            .iter()
            .map(|p| {
                (
                    p.transport,
                    p.port,
                    p.side,
                    p.counts.packets,
                    p.counts.bytes,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Transport::Udp, 53, Side::Local, 5, 600),
                (Transport::Udp, 40000, Side::Remote, 5, 600),
            ]
        );
        assert_eq!(s.health.packets_seen, 5);
        assert_eq!(
            s.health.flow_table_full, 5,
            "the kernel's map-full count and the drained flows beyond the capacity"
        );
        assert!(s.health.flows_approximate());
        assert_eq!(next.seq, 1);
        assert_eq!(next.last_end, 20);
        assert_eq!(next.totals[&key(17, 53, 0, 0)].packets, 15);
    }

    #[test]
    fn a_second_reading_against_the_new_baseline_is_empty() {
        let mut r = Reading::default();
        r.totals.insert(key(17, 53, 0, 1), pc(3, 300));
        r.counters[common::CNT_PACKETS] = 3;
        let (s1, b1) = account(&Baseline::default(), r.clone(), &OFF, 0, 1);
        assert_eq!(s1.ports.len(), 1);
        r.flows.clear();
        let (s2, _) = account(&b1, r, &OFF, 1, 2);
        assert!(s2.ports.is_empty());
        assert_eq!(s2.health, Health::default());
    }

    #[test]
    fn flows_keep_orientation_flags_and_convert_kernel_time() {
        let k = KFlowKey {
            local_addr: [u32::from_ne_bytes([10, 0, 0, 1]), 0, 0, 0],
            remote_addr: [u32::from_ne_bytes([10, 0, 0, 2]), 0, 0, 0],
            local_port: 80,
            remote_port: 40000,
            proto: 6,
            family: common::FAMILY_V4,
            _pad: [0; 2],
        };
        let v = FlowValue {
            packets_in: 3,
            bytes_in: 300,
            packets_out: 2,
            bytes_out: 2000,
            first_seen_ns: 5,
            last_seen_ns: 9,
            syns_in: 1,
            syns_out: 2,
            flags_in: 0x02 | 0x10,
            flags_out: 0x12,
            _pad: [0; 2],
            last_tick: 77,
        };
        let r = Reading {
            flows: vec![(k, v)],
            ..Reading::default()
        };
        let (s, _) = account(&Baseline::default(), r, &OFF, 0, 1);
        let f = &s.flows[0];
        assert_eq!(f.key.local.to_string(), "10.0.0.1:80");
        assert_eq!(f.key.remote.to_string(), "10.0.0.2:40000");
        assert_eq!(f.stats.inbound.bytes, 300);
        assert_eq!(f.stats.outbound.packets, 2);
        assert!(f.stats.flags_in.has(TcpFlags::SYN));
        assert!(f.stats.flags_out.has(TcpFlags::SYN | TcpFlags::ACK));
        assert_eq!((f.stats.first_seen, f.stats.last_seen), (1_005, 1_009));
        assert_eq!((f.stats.syn_in, f.stats.syn_out), (1, 2));
        assert!(f.vantage_known);
    }

    #[test]
    fn a_counter_below_its_baseline_reports_nothing_rather_than_wrapping() {
        // Maps re-created under a stale baseline (the collector prevents this; saturation is
        // the last guard): a smaller cumulative value must not turn into 2^64 - n.
        let mut base = Baseline::default();
        base.totals.insert(key(17, 53, 0, 0), pc(100, 10_000));
        base.counters[common::CNT_PACKETS] = 100;
        base.counters[common::CNT_MALFORMED] = 5;
        let mut r = Reading::default();
        r.totals.insert(
            key(17, 53, 0, 0),
            PortCounters {
                packets: 3,
                segments: 3,
                bytes: 20_000,
                ..PortCounters::default()
            },
        );
        r.counters[common::CNT_PACKETS] = 3;
        let (s, next) = account(&base, r, &OFF, 0, 1);
        let p = &s.ports[0];
        assert_eq!(
            (p.counts.packets, p.counts.segments, p.counts.bytes),
            (0, 0, 10_000),
            "each field saturates on its own"
        );
        assert_eq!(s.health.packets_seen, 0);
        assert_eq!(s.health.malformed, 0);
        // The next baseline is the reading itself: later intervals count from there.
        assert_eq!(next.totals[&key(17, 53, 0, 0)].packets, 3);
        assert_eq!(next.counters[common::CNT_PACKETS], 3);
    }

    #[test]
    fn counters_near_u64_max_give_exact_deltas() {
        let big = u64::MAX - 10;
        let mut base = Baseline::default();
        base.totals.insert(key(6, 443, 0, 1), pc(big, big));
        let mut r = Reading::default();
        r.totals.insert(key(6, 443, 0, 1), pc(big + 7, u64::MAX));
        let (s, _) = account(&base, r, &OFF, 0, 1);
        assert_eq!(
            (s.ports[0].counts.packets, s.ports[0].counts.bytes),
            (7, 10)
        );
        assert_eq!(
            (s.ports[0].side, s.ports[0].dir),
            (Side::Local, Direction::Out)
        );
    }

    #[test]
    fn kernel_health_counters_map_onto_health() {
        let mut r = Reading::default();
        for (i, v) in [
            (common::CNT_PACKETS, 1000),
            (common::CNT_FLOW_FULL, 1),
            (common::CNT_FLOW_ERR, 2),
            (common::CNT_PORT_FULL, 4),
            (common::CNT_PORT_ERR, 8),
            (common::CNT_MALFORMED, 16),
            (common::CNT_EXT_LIMIT, 32),
            (common::CNT_TRUNCATED, 64),
            (common::CNT_PULL_FAILED, 128),
            (common::CNT_NON_IP, 256),
            // Informational counters that are not losses.
            (common::CNT_FRAGMENTS, 512),
            (common::CNT_VLAN, 1024),
            (common::CNT_PULLED, 2048),
        ] {
            r.counters[i] = v;
        }
        let (s, _) = account(&Baseline::default(), r, &OFF, 0, 1);
        assert_eq!(
            s.health,
            Health {
                flow_table_full: 1,
                flow_update_errors: 2,
                port_table_full: 4 + 8,
                malformed: 16 + 32,
                truncated: 64 + 128,
                non_ip: 256,
                capture_drops: 0,
                packets_seen: 1000,
            }
        );
    }

    #[test]
    fn protocols_and_sides_map_onto_the_model() {
        let mut r = Reading::default();
        for (proto, port) in [(1u8, 0x0800u16), (58, 0x8000), (132, 2905), (47, 0)] {
            r.totals.insert(key(proto, port, 0, 0), pc(1, 100));
        }
        r.totals.insert(key(17, 9, 1, 1), pc(2, 64));
        let (s, _) = account(&Baseline::default(), r, &OFF, 0, 1);
        let got: Vec<_> = s
            .ports
            .iter()
            .map(|p| (p.transport, p.port, p.side, p.dir))
            .collect();
        let mut want = vec![
            (Transport::Icmp, 0x0800, Side::Local, Direction::In),
            (Transport::Icmpv6, 0x8000, Side::Local, Direction::In),
            (Transport::Sctp, 2905, Side::Local, Direction::In),
            (Transport::Other(47), 0, Side::Local, Direction::In),
            (Transport::Udp, 9, Side::Remote, Direction::Out),
        ];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn drained_flows_are_sorted_and_ipv6_keys_keep_their_addresses() {
        let a: Ipv6Addr = "fd00::a".parse().unwrap();
        let b: Ipv6Addr = "fd00::b".parse().unwrap();
        let words = |x: Ipv6Addr| {
            let o = x.octets();
            let mut w = [0u32; 4];
            for (i, c) in o.chunks_exact(4).enumerate() {
                w[i] = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
            }
            w
        };
        let k = |port: u16| KFlowKey {
            local_addr: words(a),
            remote_addr: words(b),
            local_port: port,
            remote_port: 5000,
            proto: 17,
            family: common::FAMILY_V6,
            _pad: [0; 2],
        };
        let v = FlowValue {
            packets_in: 1,
            ..FlowValue::default()
        };
        let r = Reading {
            flows: vec![(k(300), v), (k(100), v), (k(200), v)],
            ..Reading::default()
        };
        let (s, next) = account(&Baseline::default(), r, &OFF, 0, 1);
        let ports: Vec<u16> = s.flows.iter().map(|f| f.key.local.port).collect();
        assert_eq!(ports, vec![100, 200, 300]);
        assert!(
            s.flows
                .iter()
                .all(|f| f.key.local.addr == IpAddr::V6(a) && f.key.remote.addr == IpAddr::V6(b))
        );
        // Flow detail is drained, never part of the baseline.
        assert!(next.totals.is_empty());
    }

    #[test]
    fn ipv6_addresses_come_back_in_order() {
        let a: Ipv6Addr = "2001:db8::1:2".parse().unwrap();
        let o = a.octets();
        let mut w = [0u32; 4];
        for (i, c) in o.chunks_exact(4).enumerate() {
            w[i] = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
        }
        assert_eq!(addr(common::FAMILY_V6, &w), IpAddr::V6(a));
    }
}
