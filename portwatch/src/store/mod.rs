//! The embedded history (SQLite): per-interval per-port totals, health counters and findings,
//! flow detail merged per time bucket, first and last seen per port and per spec entry; schema
//! migrations, retention and crash safety (WAL, one transaction per interval). It never reads
//! the clock (times come in as arguments) and never classifies (findings come in ready-made).
mod history;
mod packed;
mod read;
mod record;
mod schema;
mod sink;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};
use serde::{Deserialize, Serialize};

pub use history::apply_history;
pub use sink::HistorySink;

use crate::capture::BackendKind;
use crate::classify::direction::Role;
use crate::classify::findings::{Finding, Traffic};
use crate::clock::UnixNanos;
use crate::flow::{Direction, FlowKey, Side, Snapshot, Transport};

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
}

#[cfg(test)]
mod tests;
