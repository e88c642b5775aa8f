//! The history database's schema as an ordered list of forward migrations, and the code that
//! applies them. A database records which versions it has in `schema_version`; opening applies
//! the missing ones, each in its own transaction. Never edit a released migration: add one.
use rusqlite::{Connection, OptionalExtension, Transaction};

/// One forward step of the schema.
pub(crate) struct Migration {
    pub version: u32,
    pub description: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. The schema version of a database is the highest version applied.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "intervals, per-port totals and flow detail per bucket",
        sql: r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per recorded interval, with the health and loss counters of that interval.
CREATE TABLE intervals (
    id                 INTEGER PRIMARY KEY,
    start_ns           INTEGER NOT NULL,
    end_ns             INTEGER NOT NULL,
    node               TEXT    NOT NULL,
    backend            TEXT    NOT NULL,
    packets_seen       INTEGER NOT NULL,
    flow_table_full    INTEGER NOT NULL,
    flow_update_errors INTEGER NOT NULL,
    port_table_full    INTEGER NOT NULL,
    malformed          INTEGER NOT NULL,
    truncated          INTEGER NOT NULL,
    non_ip             INTEGER NOT NULL,
    capture_drops      INTEGER NOT NULL,
    collect_errors     INTEGER NOT NULL,
    -- Rows this interval wrote, so a reader can check that an interval is whole.
    port_rows          INTEGER NOT NULL,
    flows              INTEGER NOT NULL,
    flows_dropped      INTEGER NOT NULL
);
CREATE INDEX intervals_by_end ON intervals(end_ns);

-- Lossless per-port totals of each interval. transport is the IP protocol number.
CREATE TABLE port_totals (
    interval_id INTEGER NOT NULL REFERENCES intervals(id) ON DELETE CASCADE,
    transport   INTEGER NOT NULL,
    port        INTEGER NOT NULL,
    side        TEXT    NOT NULL CHECK (side IN ('local', 'remote')),
    dir         TEXT    NOT NULL CHECK (dir IN ('in', 'out')),
    packets     INTEGER NOT NULL,
    segments    INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    syn         INTEGER NOT NULL,
    synack      INTEGER NOT NULL,
    fin         INTEGER NOT NULL,
    rst         INTEGER NOT NULL,
    PRIMARY KEY (interval_id, transport, port, side, dir)
) WITHOUT ROWID;

-- Flow detail is merged per time bucket (one hour by default) and bounded per bucket.
CREATE TABLE flow_buckets (
    start_ns INTEGER PRIMARY KEY,
    end_ns   INTEGER NOT NULL,
    flows    INTEGER NOT NULL,
    dropped  INTEGER NOT NULL
);
CREATE TABLE flows (
    bucket_ns     INTEGER NOT NULL REFERENCES flow_buckets(start_ns) ON DELETE CASCADE,
    transport     INTEGER NOT NULL,
    local_addr    TEXT    NOT NULL,
    local_port    INTEGER NOT NULL,
    remote_addr   TEXT    NOT NULL,
    remote_port   INTEGER NOT NULL,
    in_packets    INTEGER NOT NULL,
    in_bytes      INTEGER NOT NULL,
    out_packets   INTEGER NOT NULL,
    out_bytes     INTEGER NOT NULL,
    flags_in      INTEGER NOT NULL,
    flags_out     INTEGER NOT NULL,
    syn_in        INTEGER NOT NULL,
    syn_out       INTEGER NOT NULL,
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    vantage_known INTEGER NOT NULL,
    PRIMARY KEY (bucket_ns, transport, local_addr, local_port, remote_addr, remote_port)
) WITHOUT ROWID;
"#,
    },
    Migration {
        version: 2,
        description: "findings per interval, first and last seen per spec entry and per port",
        sql: r#"
ALTER TABLE intervals ADD COLUMN finding_rows INTEGER NOT NULL DEFAULT 0;

-- What classifying each interval found (entry-bound or not), with its traffic.
CREATE TABLE interval_findings (
    interval_id INTEGER NOT NULL REFERENCES intervals(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    entry_id    TEXT,
    service     TEXT,
    transport   INTEGER,
    port        INTEGER,
    role        TEXT,
    flows       INTEGER NOT NULL,
    packets_in  INTEGER NOT NULL,
    bytes_in    INTEGER NOT NULL,
    packets_out INTEGER NOT NULL,
    bytes_out   INTEGER NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    peers_total INTEGER NOT NULL,
    PRIMARY KEY (interval_id, seq)
) WITHOUT ROWID;
CREATE INDEX interval_findings_by_entry ON interval_findings(entry_id, kind);

-- Summaries that retention never deletes.
CREATE TABLE entry_seen (
    entry_id   TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    service    TEXT    NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    intervals  INTEGER NOT NULL,
    PRIMARY KEY (entry_id, kind)
) WITHOUT ROWID;
CREATE TABLE port_seen (
    transport  INTEGER NOT NULL,
    port       INTEGER NOT NULL,
    side       TEXT    NOT NULL,
    dir        TEXT    NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    packets    INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    PRIMARY KEY (transport, port, side, dir)
) WITHOUT ROWID;

-- Version 1 databases already hold per-port totals: summarise them.
INSERT INTO port_seen (transport, port, side, dir, first_seen, last_seen, packets, bytes)
SELECT p.transport, p.port, p.side, p.dir, MIN(i.start_ns), MAX(i.end_ns), SUM(p.packets), SUM(p.bytes)
FROM port_totals p JOIN intervals i ON i.id = p.interval_id
WHERE p.packets > 0
GROUP BY p.transport, p.port, p.side, p.dir;
"#,
    },
    Migration {
        version: 3,
        description: "the capture backend's checkpoint, written with each interval",
        sql: r#"
-- Where the capture backend stood after the last recorded interval (the eBPF backend's
-- baseline of the kernel counters), written in the interval's transaction so a restarted
-- agent neither reports a recorded interval again nor loses one.
CREATE TABLE capture_checkpoint (
    backend TEXT PRIMARY KEY,
    bytes   BLOB NOT NULL
) WITHOUT ROWID;
"#,
    },
    Migration {
        version: 4,
        description: "per-port summaries folded in when intervals are pruned, not per interval",
        sql: r#"
-- Whether an interval's per-port totals are already counted in port_seen. Intervals written
-- from now on are not (upserting a summary row per port and interval cost as much as the rest
-- of the interval under a flood of distinct ports): port_seen plus the unfolded intervals'
-- port_totals is the summary, and pruning folds intervals in before deleting them. Intervals
-- written before (and by an older portwatch, which upserts port_seen itself) are folded.
ALTER TABLE intervals ADD COLUMN seen_folded INTEGER NOT NULL DEFAULT 1;
CREATE INDEX intervals_unfolded ON intervals(seen_folded) WHERE seen_folded = 0;
"#,
    },
    Migration {
        version: 5,
        description: "an interval's per-port totals packed into one row",
        sql: r#"
-- Every per-port total of an interval in one BLOB (store/packed.rs): under a flood a total is
-- kept per remote port, and a row per port and interval was most of the history's cost.
-- Intervals written before stay in port_totals; readers take both.
CREATE TABLE port_blobs (
    interval_id INTEGER PRIMARY KEY REFERENCES intervals(id) ON DELETE CASCADE,
    totals      BLOB NOT NULL
);
"#,
    },
];

/// The schema version this build writes.
pub(crate) fn latest() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The highest version applied to `conn` (0 for an empty database).
pub(crate) fn current(conn: &Connection) -> rusqlite::Result<u32> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version')",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(0);
    }
    let v: Option<u32> = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(v.unwrap_or(0))
}

/// Whether the database holds tables but no version table: not a portwatch history.
pub(crate) fn is_foreign(conn: &Connection) -> rusqlite::Result<bool> {
    let tables: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
        [],
        |r| r.get(0),
    )?;
    Ok(tables > 0 && current(conn)? == 0)
}

/// Applies every migration above the current version up to `target`, one transaction each.
/// Returns the migration that failed, with its error.
pub(crate) fn migrate(
    conn: &mut Connection,
    target: u32,
) -> Result<u32, (&'static Migration, rusqlite::Error)> {
    let from = current(conn).map_err(|e| (&MIGRATIONS[0], e))?;
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.version > from && m.version <= target)
    {
        let apply = |tx: &Transaction<'_>| -> rusqlite::Result<()> {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_version (
                     version     INTEGER PRIMARY KEY,
                     description TEXT NOT NULL
                 )",
            )?;
            tx.execute_batch(m.sql)?;
            tx.execute(
                "INSERT INTO schema_version (version, description) VALUES (?1, ?2)",
                (m.version, m.description),
            )?;
            Ok(())
        };
        let tx = conn.transaction().map_err(|e| (m, e))?;
        apply(&tx).map_err(|e| (m, e))?;
        tx.commit().map_err(|e| (m, e))?;
    }
    current(conn).map_err(|e| (&MIGRATIONS[0], e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "migration {}", m.description);
        }
    }

    #[test]
    fn migrating_step_by_step_equals_migrating_at_once() {
        let mut a = Connection::open_in_memory().unwrap();
        for v in 1..=latest() {
            assert_eq!(migrate(&mut a, v).map_err(|(_, e)| e).unwrap(), v);
        }
        let mut b = Connection::open_in_memory().unwrap();
        assert_eq!(
            migrate(&mut b, latest()).map_err(|(_, e)| e).unwrap(),
            latest()
        );
        let dump = |c: &Connection| -> Vec<String> {
            let mut st = c
                .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
                .unwrap();
            st.query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(dump(&a), dump(&b));
        // Applying again is a no-op.
        assert_eq!(
            migrate(&mut a, latest()).map_err(|(_, e)| e).unwrap(),
            latest()
        );
    }
}
