//! Writing one interval into the history: its per-port totals, health, findings and flow
//! buckets in one transaction, and the capture checkpoint that goes with it.
use std::collections::HashSet;
use std::net::IpAddr;

use rusqlite::{OptionalExtension, params};

use super::{BucketKeys, IntervalRecord, Recorded, Store, StoreError, i, packed, role_str, u};
use crate::capture::BackendKind;
use crate::classify::findings::{Finding, Traffic};
use crate::clock::UnixNanos;
use crate::flow::{Endpoint, FlowKey, Snapshot, Transport};

impl Store {
    /// Records one interval in a single transaction: either all of it is in the history or
    /// none of it (a crash mid-way leaves the previous intervals intact).
    pub fn record_interval(&mut self, rec: &IntervalRecord<'_>) -> Result<Recorded, StoreError> {
        let s = rec.snapshot;
        if s.end < s.start {
            return Err(StoreError::BadInterval {
                path: self.path.clone(),
                start: s.start,
                end: s.end,
            });
        }
        let path = self.path.clone();
        let opts = self.opts;
        let err = |what: &'static str| {
            let path = path.clone();
            move |source| StoreError::Sql { path, what, source }
        };
        let (packed_ports, port_rows) = packed::encode(&s.ports);
        let tx = self
            .conn
            .transaction()
            .map_err(err("starting a transaction"))?;
        let h = &s.health;
        tx.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('history_start', ?1)",
            [i(s.start)],
        )
        .map_err(err("writing the history start"))?;
        tx.execute(
            "INSERT INTO intervals (start_ns, end_ns, node, backend, packets_seen, flow_table_full,
                 flow_update_errors, port_table_full, malformed, truncated, non_ip, capture_drops,
                 collect_errors, port_rows, flows, flows_dropped, finding_rows, seen_folded)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, 0, ?16,
                 0)",
            params![
                i(s.start),
                i(s.end),
                rec.node,
                rec.backend.to_string(),
                i(h.packets_seen),
                i(h.flow_table_full),
                i(h.flow_update_errors),
                i(h.port_table_full),
                i(h.malformed),
                i(h.truncated),
                i(h.non_ip),
                i(h.capture_drops),
                i(rec.collect_errors),
                port_rows as i64,
                s.flows.len() as i64,
                rec.findings.len() as i64,
            ],
        )
        .map_err(err("writing the interval"))?;
        let id = tx.last_insert_rowid();

        tx.execute(
            "INSERT INTO port_blobs (interval_id, totals) VALUES (?1, ?2)",
            params![id, packed_ports],
        )
        .map_err(err("writing the port totals"))?;

        // Flow detail, merged into the bucket holding the interval's end: a bucket then never
        // ends before an interval it holds flows of, so retention and `window` treat both alike.
        let width = opts.flow_bucket.as_nanos().clamp(1, u128::from(u64::MAX)) as u64;
        let last = s.end.saturating_sub(1);
        let bucket = last - last % width;
        tx.execute(
            "INSERT OR IGNORE INTO flow_buckets (start_ns, end_ns, flows, dropped)
             VALUES (?1, ?2, 0, 0)",
            [i(bucket), i(bucket.saturating_add(width))],
        )
        .map_err(err("creating a flow bucket"))?;
        let mut in_bucket: u64 = tx
            .query_row(
                "SELECT flows FROM flow_buckets WHERE start_ns = ?1",
                [i(bucket)],
                |r| r.get::<_, i64>(0),
            )
            .map(u)
            .map_err(err("reading a flow bucket"))?;
        // The bucket's keys as committed; put back (with this interval's new keys) only once
        // the transaction commits.
        let mut held = match self.bucket_keys.take() {
            Some(k) if k.bucket == bucket => k,
            _ => BucketKeys {
                bucket,
                keys: bucket_keys(&tx, bucket).map_err(err("reading a flow bucket's keys"))?,
            },
        };
        let (mut kept, mut dropped) = (0u64, 0u64);
        {
            let mut upd = tx
                .prepare_cached(
                    "UPDATE flows SET
                         in_packets = in_packets + ?7, in_bytes = in_bytes + ?8,
                         out_packets = out_packets + ?9, out_bytes = out_bytes + ?10,
                         flags_in = flags_in | ?11, flags_out = flags_out | ?12,
                         syn_in = syn_in + ?13, syn_out = syn_out + ?14,
                         first_seen = CASE WHEN first_seen = 0 THEN ?15
                                           WHEN ?15 = 0 THEN first_seen
                                           ELSE MIN(first_seen, ?15) END,
                         last_seen = MAX(last_seen, ?16),
                         vantage_known = vantage_known | ?17
                     WHERE bucket_ns = ?1 AND transport = ?2 AND local_addr = ?3
                       AND local_port = ?4 AND remote_addr = ?5 AND remote_port = ?6",
                )
                .map_err(err("preparing the flow update"))?;
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO flows (bucket_ns, transport, local_addr, local_port,
                         remote_addr, remote_port, in_packets, in_bytes, out_packets, out_bytes,
                         flags_in, flags_out, syn_in, syn_out, first_seen, last_seen,
                         vantage_known)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                         ?16, ?17)",
                )
                .map_err(err("preparing the flow insert"))?;
            let room = u64::from(opts.flows_per_bucket);
            for f in &s.flows {
                let k = &f.key;
                let is_held = held.keys.contains(k);
                if !is_held && in_bucket >= room {
                    dropped += 1;
                    continue;
                }
                let st = &f.stats;
                let p = params![
                    i(bucket),
                    i64::from(k.transport.proto()),
                    k.local.addr.to_string(),
                    i64::from(k.local.port),
                    k.remote.addr.to_string(),
                    i64::from(k.remote.port),
                    i(st.inbound.packets),
                    i(st.inbound.bytes),
                    i(st.outbound.packets),
                    i(st.outbound.bytes),
                    i64::from(st.flags_in.0),
                    i64::from(st.flags_out.0),
                    i64::from(st.syn_in),
                    i64::from(st.syn_out),
                    i(st.first_seen),
                    i(st.last_seen),
                    i64::from(f.vantage_known),
                ];
                let merged = is_held && upd.execute(p).map_err(err("updating a flow"))? > 0;
                if merged {
                    kept += 1;
                } else if in_bucket < room {
                    // Not held (or gone): insert; a row someone else wrote is merged instead.
                    if ins.execute(p).map_err(err("writing a flow"))? == 0 {
                        upd.execute(p).map_err(err("updating a flow"))?;
                    } else {
                        in_bucket += 1;
                    }
                    held.keys.insert(*k);
                    kept += 1;
                } else {
                    dropped += 1;
                }
            }
        }
        tx.execute(
            "UPDATE flow_buckets SET flows = ?2, dropped = dropped + ?3 WHERE start_ns = ?1",
            [i(bucket), i(in_bucket), i(dropped)],
        )
        .map_err(err("updating a flow bucket"))?;
        tx.execute(
            "UPDATE intervals SET flows_dropped = ?2 WHERE id = ?1",
            [id, i(dropped)],
        )
        .map_err(err("updating the interval"))?;

        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO interval_findings (interval_id, seq, kind, entry_id, service,
                         transport, port, role, flows, packets_in, bytes_in, packets_out,
                         bytes_out, first_seen, last_seen, peers_total)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                         ?16)",
                )
                .map_err(err("preparing the findings"))?;
            let mut seen = tx
                .prepare_cached(
                    "INSERT INTO entry_seen (entry_id, kind, service, first_seen, last_seen,
                         intervals)
                     VALUES (?1, ?2, ?3, ?4, ?5, 1)
                     ON CONFLICT (entry_id, kind) DO UPDATE SET
                         service = excluded.service,
                         first_seen = MIN(first_seen, excluded.first_seen),
                         last_seen = MAX(last_seen, excluded.last_seen),
                         intervals = intervals + 1",
                )
                .map_err(err("preparing the entry summaries"))?;
            for (seq, f) in rec.findings.iter().enumerate() {
                let t = &f.traffic;
                let (first, last) = seen_bounds(t, s);
                ins.execute(params![
                    id,
                    seq as i64,
                    f.kind.name(),
                    f.entry.as_ref().map(|e| e.id.as_str()),
                    f.entry.as_ref().map(|e| e.service.as_str()),
                    f.transport.map(|t| i64::from(t.proto())),
                    f.port.map(i64::from),
                    f.role.map(role_str),
                    i(t.flows),
                    i(t.packets_in),
                    i(t.bytes_in),
                    i(t.packets_out),
                    i(t.bytes_out),
                    i(first),
                    i(last),
                    i(f.peers_total),
                ])
                .map_err(err("writing a finding"))?;
                if let Some(e) = &f.entry
                    && has_traffic(f)
                {
                    seen.execute(params![e.id, f.kind.name(), e.service, i(first), i(last)])
                        .map_err(err("updating an entry summary"))?;
                }
            }
        }
        if let Some(bytes) = rec.checkpoint {
            tx.execute(
                "INSERT INTO capture_checkpoint (backend, bytes) VALUES (?1, ?2)
                 ON CONFLICT (backend) DO UPDATE SET bytes = excluded.bytes",
                params![rec.backend.to_string(), bytes],
            )
            .map_err(err("writing the capture checkpoint"))?;
        }
        tx.commit().map_err(err("committing the interval"))?;
        self.bucket_keys = Some(held);
        Ok(Recorded {
            interval_id: id,
            flows_kept: kept,
            flows_dropped: dropped,
        })
    }

    /// The checkpoint `backend` left with the last interval recorded with one.
    pub fn checkpoint(&self, backend: BackendKind) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .query_row(
                "SELECT bytes FROM capture_checkpoint WHERE backend = ?1",
                [backend.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql("reading the capture checkpoint", e))
    }
}

/// The flow keys bucket `bucket` holds (rows whose addresses do not parse cannot match a key
/// and are left out).
fn bucket_keys(
    tx: &rusqlite::Transaction<'_>,
    bucket: u64,
) -> rusqlite::Result<HashSet<FlowKey, foldhash::fast::RandomState>> {
    let mut st = tx.prepare(
        "SELECT transport, local_addr, local_port, remote_addr, remote_port
         FROM flows WHERE bucket_ns = ?1",
    )?;
    let mut rows = st.query([i(bucket)])?;
    let mut keys = HashSet::default();
    while let Some(r) = rows.next()? {
        let (t, la, lp, ra, rp) = (
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
        );
        let (Ok(t), Ok(la), Ok(lp), Ok(ra), Ok(rp)) = (
            u8::try_from(t),
            la.parse::<IpAddr>(),
            u16::try_from(lp),
            ra.parse::<IpAddr>(),
            u16::try_from(rp),
        ) else {
            continue;
        };
        keys.insert(FlowKey {
            transport: Transport::from_proto(t),
            local: Endpoint { addr: la, port: lp },
            remote: Endpoint { addr: ra, port: rp },
        });
    }
    Ok(keys)
}

/// Whether a finding carries traffic (listener and unused findings do not).
fn has_traffic(f: &Finding) -> bool {
    f.traffic.packets() > 0 || f.traffic.flows > 0
}

/// The first and last seen to record for a finding: its traffic's, else the interval's.
fn seen_bounds(t: &Traffic, s: &Snapshot) -> (UnixNanos, UnixNanos) {
    let first = if t.first_seen == 0 {
        s.start
    } else {
        t.first_seen
    };
    let last = if t.last_seen == 0 { s.end } else { t.last_seen };
    (first, last)
}
