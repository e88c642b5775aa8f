//! The embedded history (SQLite): per-interval per-port totals, health counters and findings,
//! flow detail merged per time bucket, first and last seen per port and per spec entry; schema
//! migrations, retention and crash safety (WAL, one transaction per interval). It never reads
//! the clock (times come in as arguments) and never classifies (findings come in ready-made).
mod history;
mod packed;
mod schema;
mod sink;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::{Deserialize, Serialize};

pub use history::apply_history;
pub use sink::HistorySink;

use crate::capture::BackendKind;
use crate::classify::direction::Role;
use crate::classify::findings::{Finding, Traffic};
use crate::clock::UnixNanos;
use crate::flow::{
    Counts, Direction, Endpoint, FlowKey, FlowRecord, FlowStats, Health, PortCounts, PortTotal,
    Side, Snapshot, TcpFlags, Transport,
};

/// Errors of the history store. Each names the database file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open history database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot create history database {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "history database {path} has tables but no schema_version table: it is not a portwatch history"
    )]
    Foreign { path: PathBuf },
    #[error(
        "history database {path} has schema version {found}, newer than the {supported} this portwatch understands: use a newer portwatch"
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "history database {path}: migration to schema version {version} ({description}) failed"
    )]
    Migrate {
        path: PathBuf,
        version: u32,
        description: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("history database {path}: {what} failed")]
    Sql {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("history database {path}: {column} holds {found:?}, expected {expected}")]
    Corrupt {
        path: PathBuf,
        column: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("history database {path}: interval {start}..{end} ends before it starts")]
    BadInterval {
        path: PathBuf,
        start: UnixNanos,
        end: UnixNanos,
    },
}

/// How the store bounds flow detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Flow detail is merged per bucket of this width (flows keep their first and last seen).
    pub flow_bucket: Duration,
    /// At most this many distinct flows per bucket; further new flows are counted as dropped
    /// (per-port totals and findings stay exact).
    pub flows_per_bucket: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            flow_bucket: Duration::from_secs(3600),
            flows_per_bucket: 16_384,
        }
    }
}

/// One interval, as the agent hands it over after classifying it.
#[derive(Clone, Copy, Debug)]
pub struct IntervalRecord<'a> {
    /// The node the interval was observed on.
    pub node: &'a str,
    pub backend: BackendKind,
    /// The interval's observations (its start and end are the interval's).
    pub snapshot: &'a Snapshot,
    /// The findings of classifying this interval's snapshot alone.
    pub findings: &'a [Finding],
    /// Times the backend failed to deliver the interval's observations (e.g. map read errors).
    pub collect_errors: u64,
    /// The backend's position after the interval ([`crate::capture::Backend::checkpoint`]),
    /// stored in the same transaction; read back with [`Store::checkpoint`].
    pub checkpoint: Option<&'a [u8]>,
}

/// What [`Store::record_interval`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub interval_id: i64,
    /// Flows merged into the bucket (new or existing).
    pub flows_kept: u64,
    /// New flows the bucket had no room for.
    pub flows_dropped: u64,
}

/// What [`Store::prune`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub intervals: u64,
    pub flow_buckets: u64,
}

/// First and last seen of a spec entry for one finding kind (documented, wrong direction...),
/// over the whole history, with its traffic inside the requested window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryActivity {
    pub entry_id: String,
    pub service: String,
    /// The finding kind (`documented`, `peer_outside_zone`, `wrong_direction`, ...).
    pub kind: String,
    /// Over the whole history (kept by retention).
    pub first_seen: UnixNanos,
    pub last_seen: UnixNanos,
    /// Traffic inside the window (summed over its intervals: a flow spanning intervals counts
    /// once per interval).
    pub window: Traffic,
    /// Intervals of the window with this entry and kind.
    pub window_intervals: u64,
}

impl EntryActivity {
    /// Whether the kind means the entry's traffic happened (classification counts
    /// `documented` and `peer_outside_zone` as use of the entry).
    pub fn is_use(&self) -> bool {
        matches!(self.kind.as_str(), "documented" | "peer_outside_zone")
    }
}

/// First and last seen of a port, over the whole history (interval granularity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSeen {
    pub transport: Transport,
    pub port: u16,
    pub side: Side,
    pub dir: Direction,
    /// Start of the first interval and end of the last interval with packets on the port.
    pub first_seen: UnixNanos,
    pub last_seen: UnixNanos,
    pub packets: u64,
    pub bytes: u64,
}

/// The stored history since a point in time, ready to classify.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredWindow {
    /// The start asked for.
    pub since: UnixNanos,
    /// Every interval ending after `since`, merged: per-port totals and health summed, flows
    /// merged by key (flow detail has the bucket's granularity, so it may reach up to one
    /// bucket before `since`). Flows the store or the window bound could not keep are counted
    /// in `health.flow_table_full`, which makes classification treat flow counts as lower
    /// bounds.
    pub snapshot: Snapshot,
    pub intervals: u64,
    /// Distinct node names and backends of those intervals, sorted.
    pub nodes: Vec<String>,
    pub backends: Vec<String>,
    pub collect_errors: u64,
    /// Flows dropped because a bucket was full, in the window's buckets.
    pub flows_dropped_by_store: u64,
    /// Flows dropped because the window's own bound was reached.
    pub flows_over_capacity: u64,
    /// Per entry and kind, sorted by entry then kind (only entries that ever had traffic).
    pub entries: Vec<EntryActivity>,
    /// The start of the first interval ever recorded (kept by retention): how long this node
    /// has been observed.
    pub history_start: Option<UnixNanos>,
}

impl StoredWindow {
    /// The last time each entry had traffic that counts as use (any time in the history),
    /// sorted by entry id.
    pub fn entry_last_use(&self) -> Vec<(&str, UnixNanos)> {
        let mut m: std::collections::BTreeMap<&str, UnixNanos> = Default::default();
        for e in self.entries.iter().filter(|e| e.is_use()) {
            let t = m.entry(&e.entry_id).or_default();
            *t = (*t).max(e.last_seen);
        }
        m.into_iter().collect()
    }
}

/// The history database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    opts: StoreOptions,
    /// The keys of the flow bucket last written to, as committed: a flow the bucket does not
    /// hold needs no UPDATE (under a flood of distinct flows nearly none is held, and a
    /// failed UPDATE per flow cost more than the rest of the interval). This process is the
    /// bucket's only writer; a key written by someone else is still merged (the INSERT
    /// finds it and falls back to the UPDATE).
    bucket_keys: Option<BucketKeys>,
}

/// The flow keys one bucket holds.
#[derive(Debug)]
struct BucketKeys {
    bucket: u64,
    keys: HashSet<FlowKey, foldhash::fast::RandomState>,
}

/// A per-port total's key: transport, port, side, direction.
type PortKey = (Transport, u16, Side, Direction);

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn side_str(s: Side) -> &'static str {
    match s {
        Side::Local => "local",
        Side::Remote => "remote",
    }
}

fn dir_str(d: Direction) -> &'static str {
    match d {
        Direction::In => "in",
        Direction::Out => "out",
    }
}

fn role_str(r: Role) -> &'static str {
    match r {
        Role::Server => "server",
        Role::Client => "client",
    }
}

impl Store {
    /// Opens (creating if needed) the history at `path` and applies missing migrations.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, StoreOptions::default())
    }

    /// As [`Store::open`], with explicit bounds.
    pub fn open_with(path: impl AsRef<Path>, opts: StoreOptions) -> Result<Self, StoreError> {
        Self::open_at(path.as_ref(), opts, schema::latest())
    }

    /// Opens and migrates up to `target` (tests build older databases with it).
    fn open_at(path: &Path, opts: StoreOptions, target: u32) -> Result<Self, StoreError> {
        let path = path.to_owned();
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        // The history names peers, ports and processes: create it owner read-write, group read
        // (SQLite gives its -wal and -shm files the database file's permissions).
        #[cfg(unix)]
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o640)
                .open(&path)
                .map_err(|source| StoreError::Create {
                    path: path.clone(),
                    source,
                })?;
        }
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        // auto_vacuum only takes effect on a database without tables; WAL and synchronous=FULL
        // make every committed interval survive a crash of the process or of the machine.
        conn.execute_batch(
            "PRAGMA auto_vacuum = INCREMENTAL;
             PRAGMA foreign_keys = ON;
             PRAGMA synchronous = FULL;",
        )
        .map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(open_err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt {
                path,
                column: "journal_mode",
                expected: "wal",
                found: mode,
            });
        }
        if schema::is_foreign(&conn).map_err(open_err)? {
            return Err(StoreError::Foreign { path });
        }
        let found = schema::current(&conn).map_err(open_err)?;
        if found > schema::latest() {
            return Err(StoreError::TooNew {
                path,
                found,
                supported: schema::latest(),
            });
        }
        schema::migrate(&mut conn, target).map_err(|(m, source)| StoreError::Migrate {
            path: path.clone(),
            version: m.version,
            description: m.description,
            source,
        })?;
        Ok(Self {
            conn,
            path,
            opts,
            bucket_keys: None,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        schema::current(&self.conn).map_err(|e| self.sql("reading the schema version", e))
    }

    fn sql(&self, what: &'static str, source: rusqlite::Error) -> StoreError {
        StoreError::Sql {
            path: self.path.clone(),
            what,
            source,
        }
    }

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

    /// Deletes intervals that ended at or before `before` and flow buckets that ended by then.
    /// First and last seen summaries per port and per entry are kept.
    pub fn prune(&mut self, before: UnixNanos) -> Result<Pruned, StoreError> {
        // What the packed intervals about to go saw, per port (folded in below).
        let mut fold: BTreeMap<PortKey, (u64, u64, u64, u64)> = BTreeMap::new();
        self.each_packed(
            "SELECT i.start_ns, i.end_ns, b.totals
             FROM port_blobs b JOIN intervals i ON i.id = b.interval_id
             WHERE i.end_ns <= ?1 AND i.seen_folded = 0",
            i(before),
            |start, end, p| {
                if p.counts.packets == 0 {
                    return;
                }
                let e = fold
                    .entry((p.transport, p.port, p.side, p.dir))
                    .or_insert((start, end, 0, 0));
                e.0 = e.0.min(start);
                e.1 = e.1.max(end);
                e.2 = e.2.saturating_add(p.counts.packets);
                e.3 = e.3.saturating_add(p.counts.bytes);
            },
        )?;
        let path = self.path.clone();
        let err = |what: &'static str| {
            let path = path.clone();
            move |source| StoreError::Sql { path, what, source }
        };
        let tx = self
            .conn
            .transaction()
            .map_err(err("starting a transaction"))?;
        // The per-port summaries keep what the deleted intervals saw.
        tx.execute(
            "INSERT INTO port_seen (transport, port, side, dir, first_seen, last_seen, packets,
                 bytes)
             SELECT p.transport, p.port, p.side, p.dir, MIN(i.start_ns), MAX(i.end_ns),
                 SUM(p.packets), SUM(p.bytes)
             FROM port_totals p JOIN intervals i ON i.id = p.interval_id
             WHERE i.end_ns <= ?1 AND i.seen_folded = 0 AND p.packets > 0
             GROUP BY p.transport, p.port, p.side, p.dir
             ON CONFLICT (transport, port, side, dir) DO UPDATE SET
                 first_seen = MIN(first_seen, excluded.first_seen),
                 last_seen = MAX(last_seen, excluded.last_seen),
                 packets = packets + excluded.packets,
                 bytes = bytes + excluded.bytes",
            [i(before)],
        )
        .map_err(err("folding old intervals into the port summaries"))?;
        {
            let mut up = tx
                .prepare(
                    "INSERT INTO port_seen (transport, port, side, dir, first_seen, last_seen,
                         packets, bytes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (transport, port, side, dir) DO UPDATE SET
                         first_seen = MIN(first_seen, excluded.first_seen),
                         last_seen = MAX(last_seen, excluded.last_seen),
                         packets = packets + excluded.packets,
                         bytes = bytes + excluded.bytes",
                )
                .map_err(err("preparing the port summaries"))?;
            for ((t, port, side, dir), (first, last, packets, bytes)) in fold {
                up.execute(params![
                    i64::from(t.proto()),
                    i64::from(port),
                    side_str(side),
                    dir_str(dir),
                    i(first),
                    i(last),
                    i(packets),
                    i(bytes)
                ])
                .map_err(err("folding old intervals into the port summaries"))?;
            }
        }
        let intervals = tx
            .execute("DELETE FROM intervals WHERE end_ns <= ?1", [i(before)])
            .map_err(err("deleting old intervals"))?;
        let flow_buckets = tx
            .execute("DELETE FROM flow_buckets WHERE end_ns <= ?1", [i(before)])
            .map_err(err("deleting old flow buckets"))?;
        tx.commit().map_err(err("committing the pruning"))?;
        self.bucket_keys = None;
        // Give the freed pages back to the file system (auto_vacuum = INCREMENTAL).
        self.conn
            .execute_batch("PRAGMA incremental_vacuum;")
            .map_err(|e| self.sql("vacuuming", e))?;
        Ok(Pruned {
            intervals: intervals as u64,
            flow_buckets: flow_buckets as u64,
        })
    }

    /// Applies a retention setting: deletes what ended more than `retention` before `now`.
    pub fn apply_retention(
        &mut self,
        now: UnixNanos,
        retention: Duration,
    ) -> Result<Pruned, StoreError> {
        let keep = u64::try_from(retention.as_nanos()).unwrap_or(u64::MAX);
        self.prune(now.saturating_sub(keep))
    }

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
    fn each_packed(
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

#[cfg(test)]
mod tests;
