//! Turns one reading of the kernel maps into an interval's [`Snapshot`]: per-port and health
//! deltas against the persisted baseline, drained flows converted to the observation model
//! (kernel monotonic time via [`MonotonicOffset`]). Pure: no I/O, no clock reads.
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use portwatch_common as common;
use portwatch_common::{COUNTERS_LEN, FlowKey as KFlowKey, FlowValue, PortCounters, PortKey};

use super::state::Baseline;
use crate::clock::{MonotonicOffset, UnixNanos};
use crate::flow::{
    Counts, Direction, Endpoint, FlowKey, FlowRecord, FlowStats, Health, PortCounts, PortTotal,
    Side, Snapshot, TcpFlags, Transport,
};

/// Cumulative values read from the kernel at the end of an interval.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reading {
    /// Per-port totals summed over CPUs.
    pub totals: HashMap<PortKey, PortCounters>,
    /// Health counters summed over CPUs.
    pub counters: [u64; COUNTERS_LEN],
    /// Flows drained (looked up and deleted) from the flow map.
    pub flows: Vec<(KFlowKey, FlowValue)>,
}

/// The snapshot for `[start, end]` and the baseline to persist once it is handed out.
pub(crate) fn account(
    base: &Baseline,
    reading: Reading,
    offset: &MonotonicOffset,
    start: UnixNanos,
    end: UnixNanos,
) -> (Snapshot, Baseline) {
    let mut ports: Vec<PortTotal> = reading
        .totals
        .iter()
        .filter_map(|(k, v)| {
            let old = base.totals.get(k).copied().unwrap_or_default();
            let counts = delta(v, &old);
            (!counts.is_zero()).then(|| PortTotal {
                transport: Transport::from_proto(k.proto),
                port: k.port,
                side: side(k.side),
                dir: dir(k.dir),
                counts,
            })
        })
        .collect();
    ports.sort_by_key(|p| (p.transport, p.port, p.side, p.dir));

    let mut flows: Vec<FlowRecord> = reading
        .flows
        .iter()
        .map(|(k, v)| flow_record(k, v, offset))
        .collect();
    flows.sort_by_key(|a| a.key);

    let d = |i: usize| reading.counters[i].saturating_sub(base.counters[i]);
    let health = Health {
        flow_table_full: d(common::CNT_FLOW_FULL),
        flow_update_errors: d(common::CNT_FLOW_ERR),
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
            flags_in: TcpFlags((v.tcp_flags & 0xff) as u8),
            flags_out: TcpFlags(((v.tcp_flags >> 8) & 0xff) as u8),
            syn_in: v.syns as u32,
            syn_out: (v.syns >> 32) as u32,
            first_seen: offset.to_unix(v.first_seen_ns),
            last_seen: offset.to_unix(v.last_seen_ns),
        },
        vantage_known: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(s.health.flow_table_full, 2);
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
            tcp_flags: 0x02 | 0x10 | (0x12 << 8),
            syns: 1 | (2 << 32),
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
