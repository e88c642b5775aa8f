//! Reading the history back: interval counts, ports seen, and a stored window merged into
//! one snapshot; rows that do not decode are refused as corrupt with the column named.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use rusqlite::OptionalExtension;

use super::{EntryActivity, PortSeen, Store, StoreError, StoredWindow, i, packed, u};
use crate::classify::findings::Traffic;
use crate::clock::UnixNanos;
use crate::flow::{
    Counts, Direction, Endpoint, FlowKey, FlowRecord, FlowStats, Health, PortCounts, PortTotal,
    Side, TcpFlags, Transport,
};

impl Store {
    /// Number of intervals held.
    pub fn interval_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM intervals", [], |r| r.get::<_, i64>(0))
            .map(u)
            .map_err(|e| self.sql("counting intervals", e))
    }

    /// The start of the first interval ever recorded (kept by retention).
    pub fn history_start(&self) -> Result<Option<UnixNanos>, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'history_start'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|v| v.map(u))
            .map_err(|e| self.sql("reading the history start", e))
    }

    /// First and last seen of every port that ever had packets, sorted.
    pub fn ports_seen(&self) -> Result<Vec<PortSeen>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT transport, port, side, dir, MIN(first), MAX(last), SUM(packets),
                     SUM(bytes)
                 FROM (
                     SELECT transport, port, side, dir, first_seen AS first,
                         last_seen AS last, packets, bytes
                     FROM port_seen
                     UNION ALL
                     SELECT p.transport, p.port, p.side, p.dir, i.start_ns, i.end_ns,
                         p.packets, p.bytes
                     FROM port_totals p JOIN intervals i ON i.id = p.interval_id
                     WHERE i.seen_folded = 0 AND p.packets > 0
                 )
                 GROUP BY transport, port, side, dir
                 ORDER BY transport, port, side, dir",
            )
            .map_err(|e| self.sql("reading port summaries", e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })
            .map_err(|e| self.sql("reading port summaries", e))?;
        // Keyed in the order the query sorts by (protocol number, port, local < remote,
        // in < out).
        let mut out: BTreeMap<(u8, u16, Side, Direction), PortSeen> = BTreeMap::new();
        for row in rows {
            let (t, port, side, dir, first, last, packets, bytes) =
                row.map_err(|e| self.sql("reading port summaries", e))?;
            let p = PortSeen {
                transport: self.transport(t)?,
                port: self.port(port)?,
                side: self.side(&side)?,
                dir: self.dir(&dir)?,
                first_seen: u(first),
                last_seen: u(last),
                packets: u(packets),
                bytes: u(bytes),
            };
            out.insert((p.transport.proto(), p.port, p.side, p.dir), p);
        }
        drop(st);
        // Unfolded intervals written packed.
        self.each_packed(
            "SELECT i.start_ns, i.end_ns, b.totals
             FROM port_blobs b JOIN intervals i ON i.id = b.interval_id
             WHERE i.seen_folded = ?1",
            0,
            |start, end, p| {
                if p.counts.packets == 0 {
                    return;
                }
                out.entry((p.transport.proto(), p.port, p.side, p.dir))
                    .and_modify(|s| {
                        s.first_seen = s.first_seen.min(start);
                        s.last_seen = s.last_seen.max(end);
                        s.packets = s.packets.saturating_add(p.counts.packets);
                        s.bytes = s.bytes.saturating_add(p.counts.bytes);
                    })
                    .or_insert(PortSeen {
                        transport: p.transport,
                        port: p.port,
                        side: p.side,
                        dir: p.dir,
                        first_seen: start,
                        last_seen: end,
                        packets: p.counts.packets,
                        bytes: p.counts.bytes,
                    });
            },
        )?;
        Ok(out.into_values().collect())
    }

    /// Everything stored since `since`, merged into one window of at most `flow_capacity`
    /// distinct flows (the rest are counted, as the flow table does).
    pub fn window(
        &self,
        since: UnixNanos,
        flow_capacity: usize,
    ) -> Result<StoredWindow, StoreError> {
        let mut w = StoredWindow {
            since,
            history_start: self.history_start()?,
            ..StoredWindow::default()
        };
        let q = |what: &'static str| move |e| self.sql(what, e);

        // Intervals: bounds, health, nodes, backends.
        let (start, end, count, nodes, backends) = {
            let mut st = self
                .conn
                .prepare(
                    "SELECT start_ns, end_ns, node, backend, packets_seen, flow_table_full,
                         flow_update_errors, port_table_full, malformed, truncated, non_ip,
                         capture_drops, collect_errors
                     FROM intervals WHERE end_ns > ?1 ORDER BY start_ns",
                )
                .map_err(q("reading intervals"))?;
            let mut rows = st.query([i(since)]).map_err(q("reading intervals"))?;
            let (mut start, mut end, mut count) = (None::<u64>, since, 0u64);
            let mut nodes = BTreeSet::new();
            let mut backends = BTreeSet::new();
            while let Some(r) = rows.next().map_err(q("reading intervals"))? {
                let g = |k: usize| r.get::<_, i64>(k).map(u);
                let s = g(0).map_err(q("reading intervals"))?;
                let e = g(1).map_err(q("reading intervals"))?;
                start = Some(start.map_or(s, |t| t.min(s)));
                end = end.max(e);
                count += 1;
                nodes.insert(r.get::<_, String>(2).map_err(q("reading intervals"))?);
                backends.insert(r.get::<_, String>(3).map_err(q("reading intervals"))?);
                let v = (4..=12)
                    .map(g)
                    .collect::<Result<Vec<u64>, _>>()
                    .map_err(q("reading intervals"))?;
                w.snapshot.health.add(&Health {
                    packets_seen: v[0],
                    flow_table_full: v[1],
                    flow_update_errors: v[2],
                    port_table_full: v[3],
                    malformed: v[4],
                    truncated: v[5],
                    non_ip: v[6],
                    capture_drops: v[7],
                });
                w.collect_errors += v[8];
            }
            (start, end, count, nodes, backends)
        };
        w.snapshot.start = start.unwrap_or(since);
        w.snapshot.end = end;
        w.intervals = count;
        w.nodes = nodes.into_iter().collect();
        w.backends = backends.into_iter().collect();

        // Per-port totals: rows of intervals written before they were packed, then the blobs.
        {
            let mut sums: BTreeMap<(Transport, u16, Side, Direction), PortCounts> = BTreeMap::new();
            let mut st = self
                .conn
                .prepare(
                    "SELECT p.transport, p.port, p.side, p.dir, SUM(p.packets), SUM(p.segments),
                         SUM(p.bytes), SUM(p.syn), SUM(p.synack), SUM(p.fin), SUM(p.rst)
                     FROM port_totals p JOIN intervals i ON i.id = p.interval_id
                     WHERE i.end_ns > ?1
                     GROUP BY p.transport, p.port, p.side, p.dir",
                )
                .map_err(q("reading port totals"))?;
            let mut rows = st.query([i(since)]).map_err(q("reading port totals"))?;
            while let Some(r) = rows.next().map_err(q("reading port totals"))? {
                let g = |k: usize| r.get::<_, i64>(k);
                let side: String = r.get(2).map_err(q("reading port totals"))?;
                let dir: String = r.get(3).map_err(q("reading port totals"))?;
                let v = (4..=10)
                    .map(|k| g(k).map(u))
                    .collect::<Result<Vec<u64>, _>>()
                    .map_err(q("reading port totals"))?;
                let key = (
                    self.transport(g(0).map_err(q("reading port totals"))?)?,
                    self.port(g(1).map_err(q("reading port totals"))?)?,
                    self.side(&side)?,
                    self.dir(&dir)?,
                );
                sums.entry(key).or_default().add(&PortCounts {
                    packets: v[0],
                    segments: v[1],
                    bytes: v[2],
                    syn: v[3],
                    synack: v[4],
                    fin: v[5],
                    rst: v[6],
                });
            }
            self.each_packed(
                "SELECT i.start_ns, i.end_ns, b.totals
                 FROM port_blobs b JOIN intervals i ON i.id = b.interval_id
                 WHERE i.end_ns > ?1",
                i(since),
                |_, _, p| {
                    sums.entry((p.transport, p.port, p.side, p.dir))
                        .or_default()
                        .add(&p.counts);
                },
            )?;
            w.snapshot.ports = sums
                .into_iter()
                .map(|(key, counts)| PortTotal::from_key(key, counts))
                .collect();
        }

        // Flow detail, merged across buckets, bounded.
        {
            w.flows_dropped_by_store = self
                .conn
                .query_row(
                    "SELECT COALESCE(SUM(dropped), 0) FROM flow_buckets WHERE end_ns > ?1",
                    [i(since)],
                    |r| r.get::<_, i64>(0),
                )
                .map(u)
                .map_err(q("reading flow buckets"))?;
            let mut flows: HashMap<FlowKey, (FlowStats, bool)> = HashMap::new();
            let mut st = self
                .conn
                .prepare(
                    "SELECT f.transport, f.local_addr, f.local_port, f.remote_addr,
                         f.remote_port, f.in_packets, f.in_bytes, f.out_packets, f.out_bytes,
                         f.flags_in, f.flags_out, f.syn_in, f.syn_out, f.first_seen,
                         f.last_seen, f.vantage_known
                     FROM flows f JOIN flow_buckets b ON b.start_ns = f.bucket_ns
                     WHERE b.end_ns > ?1
                     ORDER BY f.bucket_ns",
                )
                .map_err(q("reading flows"))?;
            let mut rows = st.query([i(since)]).map_err(q("reading flows"))?;
            while let Some(r) = rows.next().map_err(q("reading flows"))? {
                let g = |k: usize| r.get::<_, i64>(k).map_err(q("reading flows"));
                let la: String = r.get(1).map_err(q("reading flows"))?;
                let ra: String = r.get(3).map_err(q("reading flows"))?;
                let key = FlowKey {
                    transport: self.transport(g(0)?)?,
                    local: Endpoint {
                        addr: self.addr(&la)?,
                        port: self.port(g(2)?)?,
                    },
                    remote: Endpoint {
                        addr: self.addr(&ra)?,
                        port: self.port(g(4)?)?,
                    },
                };
                let stats = FlowStats {
                    inbound: Counts {
                        packets: u(g(5)?),
                        bytes: u(g(6)?),
                    },
                    outbound: Counts {
                        packets: u(g(7)?),
                        bytes: u(g(8)?),
                    },
                    flags_in: TcpFlags(g(9)? as u8),
                    flags_out: TcpFlags(g(10)? as u8),
                    syn_in: u32::try_from(g(11)?).unwrap_or(u32::MAX),
                    syn_out: u32::try_from(g(12)?).unwrap_or(u32::MAX),
                    first_seen: u(g(13)?),
                    last_seen: u(g(14)?),
                };
                let known = g(15)? != 0;
                let full = flows.len() >= flow_capacity;
                match flows.get_mut(&key) {
                    Some((st, k)) => {
                        st.merge(&stats);
                        *k |= known;
                    }
                    None if full => w.flows_over_capacity += 1,
                    None => {
                        flows.insert(key, (stats, known));
                    }
                }
            }
            let mut v: Vec<FlowRecord> = flows
                .into_iter()
                .map(|(key, (stats, vantage_known))| FlowRecord {
                    key,
                    stats,
                    vantage_known,
                })
                .collect();
            v.sort_by_key(|f| f.key);
            w.snapshot.flows = v;
            w.snapshot.health.flow_table_full += w.flows_dropped_by_store + w.flows_over_capacity;
        }

        // Entries: all-time first/last seen, traffic inside the window.
        {
            let mut st = self
                .conn
                .prepare(
                    "SELECT s.entry_id, s.kind, s.service, s.first_seen, s.last_seen,
                         COALESCE(SUM(f.flows), 0), COALESCE(SUM(f.packets_in), 0),
                         COALESCE(SUM(f.bytes_in), 0), COALESCE(SUM(f.packets_out), 0),
                         COALESCE(SUM(f.bytes_out), 0), MIN(f.first_seen), MAX(f.last_seen),
                         COUNT(DISTINCT f.interval_id)
                     FROM entry_seen s
                     LEFT JOIN (
                         SELECT x.* FROM interval_findings x
                         JOIN intervals i ON i.id = x.interval_id WHERE i.end_ns > ?1
                     ) f ON f.entry_id = s.entry_id AND f.kind = s.kind
                     GROUP BY s.entry_id, s.kind
                     ORDER BY s.entry_id, s.kind",
                )
                .map_err(q("reading entry summaries"))?;
            let mut rows = st.query([i(since)]).map_err(q("reading entry summaries"))?;
            while let Some(r) = rows.next().map_err(q("reading entry summaries"))? {
                let g = |k: usize| r.get::<_, i64>(k).map(u);
                let o = |k: usize| r.get::<_, Option<i64>>(k).map(|v| v.map_or(0, u));
                let read = || -> rusqlite::Result<EntryActivity> {
                    Ok(EntryActivity {
                        entry_id: r.get(0)?,
                        kind: r.get(1)?,
                        service: r.get(2)?,
                        first_seen: g(3)?,
                        last_seen: g(4)?,
                        window: Traffic {
                            flows: g(5)?,
                            packets_in: g(6)?,
                            bytes_in: g(7)?,
                            packets_out: g(8)?,
                            bytes_out: g(9)?,
                            first_seen: o(10)?,
                            last_seen: o(11)?,
                        },
                        window_intervals: g(12)?,
                    })
                };
                w.entries
                    .push(read().map_err(q("reading entry summaries"))?);
            }
        }
        Ok(w)
    }

    /// Runs `sql` (one parameter; columns: start_ns, end_ns, a packed per-port blob) and calls
    /// `each` with the interval's bounds for every total in every blob.
    pub(super) fn each_packed(
        &self,
        sql: &str,
        param: i64,
        mut each: impl FnMut(UnixNanos, UnixNanos, PortTotal),
    ) -> Result<(), StoreError> {
        let q = |e| self.sql("reading packed port totals", e);
        let mut st = self.conn.prepare(sql).map_err(q)?;
        let mut rows = st.query([param]).map_err(q)?;
        while let Some(r) = rows.next().map_err(q)? {
            let start = u(r.get::<_, i64>(0).map_err(q)?);
            let end = u(r.get::<_, i64>(1).map_err(q)?);
            let blob = r
                .get_ref(2)
                .map_err(q)?
                .as_blob()
                .map_err(|e| q(e.into()))?;
            packed::decode(blob, |p| each(start, end, p)).map_err(|m| {
                self.corrupt(
                    "port_blobs.totals",
                    "packed per-port totals",
                    format!("{} at byte {} of {}", m.what, m.at, blob.len()),
                )
            })?;
        }
        Ok(())
    }

    fn corrupt(&self, column: &'static str, expected: &'static str, found: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            column,
            expected,
            found,
        }
    }

    fn transport(&self, v: i64) -> Result<Transport, StoreError> {
        u8::try_from(v)
            .map(Transport::from_proto)
            .map_err(|_| self.corrupt("transport", "an IP protocol number", v.to_string()))
    }

    fn port(&self, v: i64) -> Result<u16, StoreError> {
        u16::try_from(v).map_err(|_| self.corrupt("port", "a port number", v.to_string()))
    }

    fn side(&self, v: &str) -> Result<Side, StoreError> {
        match v {
            "local" => Ok(Side::Local),
            "remote" => Ok(Side::Remote),
            _ => Err(self.corrupt("side", "local or remote", v.to_owned())),
        }
    }

    fn dir(&self, v: &str) -> Result<Direction, StoreError> {
        match v {
            "in" => Ok(Direction::In),
            "out" => Ok(Direction::Out),
            _ => Err(self.corrupt("dir", "in or out", v.to_owned())),
        }
    }

    fn addr(&self, v: &str) -> Result<IpAddr, StoreError> {
        v.parse()
            .map_err(|_| self.corrupt("address", "an IP address", v.to_owned()))
    }
}
