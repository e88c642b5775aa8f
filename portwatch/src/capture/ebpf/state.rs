//! The persisted "last read" baseline of the kernel's cumulative counters: a small binary file
//! replaced atomically (write to a temporary file, fsync, rename, fsync the directory). It owns
//! the file format and nothing else; deciding what to do with a baseline is `account`'s job.
//!
//! The file names the maps it belongs to (kernel map ids and the boot id), so a baseline is
//! never applied to maps that were re-created (after a reboot, or a layout change).
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use portwatch_common::{COUNTERS_LEN, PortCounters, PortKey};

use crate::clock::UnixNanos;

const MAGIC: &[u8; 8] = b"PWBASE01";
const BOOT_ID_LEN: usize = 36;
const ENTRY_LEN: usize = 8 + 7 * 8;

/// Which maps a baseline belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    /// `/proc/sys/kernel/random/boot_id` (36 ASCII characters).
    pub boot_id: String,
    /// Kernel id of the pinned per-port totals map.
    pub totals_map_id: u32,
    /// Kernel id of the pinned counters map.
    pub counters_map_id: u32,
}

/// Cumulative values (summed over CPUs) as of the last interval handed out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Baseline {
    /// Number of intervals handed out so far on these maps.
    pub seq: u64,
    /// End of the last interval handed out (Unix nanoseconds; 0 before the first).
    pub last_end: UnixNanos,
    /// Health counters, indexed by `portwatch_common::CNT_*`.
    pub counters: [u64; COUNTERS_LEN],
    /// Per-port totals.
    pub totals: HashMap<PortKey, PortCounters>,
}

/// Why a state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing the file failed.
    #[error("state file {path}: {op} failed")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The file is not a baseline of this format.
    #[error("state file {path} is corrupt: {what}")]
    Corrupt { path: PathBuf, what: String },
}

/// The current boot's id.
pub(crate) fn boot_id() -> io::Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_owned())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Serialises `id` and `b` (little-endian, FNV-1a checksum at the end).
pub(crate) fn encode(id: &Identity, b: &Baseline) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + b.totals.len() * ENTRY_LEN);
    out.extend_from_slice(MAGIC);
    let mut boot = [b' '; BOOT_ID_LEN];
    let src = id.boot_id.as_bytes();
    let n = src.len().min(BOOT_ID_LEN);
    boot[..n].copy_from_slice(&src[..n]);
    out.extend_from_slice(&boot);
    out.extend_from_slice(&id.totals_map_id.to_le_bytes());
    out.extend_from_slice(&id.counters_map_id.to_le_bytes());
    out.extend_from_slice(&b.seq.to_le_bytes());
    out.extend_from_slice(&b.last_end.to_le_bytes());
    out.extend_from_slice(&(COUNTERS_LEN as u32).to_le_bytes());
    for c in b.counters {
        out.extend_from_slice(&c.to_le_bytes());
    }
    // Sorted, so equal baselines give equal files.
    let mut keys: Vec<&PortKey> = b.totals.keys().collect();
    keys.sort_by_key(|k| (k.proto, k.port, k.side, k.dir));
    out.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    for k in keys {
        let v = &b.totals[k];
        out.extend_from_slice(&k.port.to_le_bytes());
        out.extend_from_slice(&[k.proto, k.side, k.dir, 0, 0, 0]);
        for x in [
            v.packets, v.segments, v.bytes, v.syn, v.synack, v.fin, v.rst,
        ] {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// A cursor over the encoded bytes.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Parses what [`encode`] wrote.
pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<(Identity, Baseline), StateError> {
    let corrupt = |what: &str| StateError::Corrupt {
        path: path.to_owned(),
        what: what.to_owned(),
    };
    if bytes.len() < MAGIC.len() + 8 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("expected the PWBASE01 header"));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    let stored = u64::from_le_bytes(sum.try_into().map_err(|_| corrupt("short checksum"))?);
    if fnv1a(body) != stored {
        return Err(corrupt("checksum mismatch"));
    }
    let mut r = Reader {
        buf: body,
        at: MAGIC.len(),
    };
    let short = || corrupt("file ends early");
    let boot = r.take(BOOT_ID_LEN).ok_or_else(short)?;
    let boot_id = String::from_utf8_lossy(boot).trim_end().to_owned();
    let totals_map_id = r.u32().ok_or_else(short)?;
    let counters_map_id = r.u32().ok_or_else(short)?;
    let seq = r.u64().ok_or_else(short)?;
    let last_end = r.u64().ok_or_else(short)?;
    let n_counters = r.u32().ok_or_else(short)? as usize;
    let mut counters = [0u64; COUNTERS_LEN];
    for i in 0..n_counters {
        let c = r.u64().ok_or_else(short)?;
        if let Some(slot) = counters.get_mut(i) {
            *slot = c;
        }
    }
    let n = r.u64().ok_or_else(short)?;
    if n > (body.len() / ENTRY_LEN) as u64 {
        return Err(corrupt("entry count larger than the file"));
    }
    let mut totals = HashMap::with_capacity(n as usize);
    for _ in 0..n {
        let e = r.take(ENTRY_LEN).ok_or_else(short)?;
        let key = PortKey {
            port: u16::from_le_bytes([e[0], e[1]]),
            proto: e[2],
            side: e[3],
            dir: e[4],
            _pad: [0; 3],
        };
        let f = |i: usize| {
            let o = 8 + i * 8;
            u64::from_le_bytes(e[o..o + 8].try_into().unwrap_or_default())
        };
        let v = PortCounters {
            packets: f(0),
            segments: f(1),
            bytes: f(2),
            syn: f(3),
            synack: f(4),
            fin: f(5),
            rst: f(6),
        };
        totals.insert(key, v);
    }
    if r.at != body.len() {
        return Err(corrupt("trailing bytes"));
    }
    Ok((
        Identity {
            boot_id,
            totals_map_id,
            counters_map_id,
        },
        Baseline {
            seq,
            last_end,
            counters,
            totals,
        },
    ))
}

/// Replaces `path` with the encoded baseline so that a reader sees either the old file or the
/// new one, whatever happens (crash, power loss) in between.
pub(crate) fn save(path: &Path, id: &Identity, b: &Baseline) -> Result<(), StateError> {
    let io = |op: &'static str| {
        let path = path.to_owned();
        move |source| StateError::Io { path, op, source }
    };
    let tmp = tmp_path(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create temporary file"))?;
    f.write_all(&encode(id, b)).map_err(io("write"))?;
    f.sync_all().map_err(io("fsync"))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io("rename"))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync directory"))?;
    }
    Ok(())
}

/// Reads the baseline at `path`: `Ok(None)` when there is no file.
pub(crate) fn load(path: &Path) -> Result<Option<(Identity, Baseline)>, StateError> {
    // A temporary file left by a process killed while saving is garbage: the rename did not
    // happen, so the previous file is the truth.
    let _ = fs::remove_file(tmp_path(path));
    match fs::read(path) {
        Ok(bytes) => decode(path, &bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io {
            path: path.to_owned(),
            op: "read",
            source,
        }),
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Identity, Baseline) {
        let mut totals = HashMap::new();
        totals.insert(
            PortKey {
                port: 53,
                proto: 17,
                side: 0,
                dir: 1,
                _pad: [0; 3],
            },
            PortCounters {
                packets: 7,
                segments: 8,
                bytes: 900,
                syn: 1,
                synack: 2,
                fin: 3,
                rst: 4,
            },
        );
        let mut counters = [0; COUNTERS_LEN];
        counters[0] = 42;
        counters[COUNTERS_LEN - 1] = 9;
        (
            Identity {
                boot_id: "0b1c2d3e-0000-4000-8000-123456789abc".into(),
                totals_map_id: 11,
                counters_map_id: 12,
            },
            Baseline {
                seq: 5,
                last_end: 1_700_000_000_000_000_000,
                counters,
                totals,
            },
        )
    }

    #[test]
    fn round_trips() {
        let (id, b) = sample();
        let bytes = encode(&id, &b);
        let (id2, b2) = decode(Path::new("x"), &bytes).unwrap();
        assert_eq!(id, id2);
        assert_eq!(b, b2);
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let (id, b) = sample();
        let bytes = encode(&id, &b);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode(Path::new("x"), &bad).is_err(), "byte {i}");
        }
        for len in 0..bytes.len() {
            assert!(decode(Path::new("x"), &bytes[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn save_replaces_atomically_and_load_ignores_a_stale_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baseline");
        assert!(load(&path).unwrap().is_none());
        let (id, mut b) = sample();
        save(&path, &id, &b).unwrap();
        b.seq = 6;
        save(&path, &id, &b).unwrap();
        // A save interrupted before its rename leaves only a temporary file behind.
        fs::write(tmp_path(&path), b"half-written").unwrap();
        let (_, got) = load(&path).unwrap().unwrap();
        assert_eq!(got.seq, 6);
        assert!(!tmp_path(&path).exists());
    }
}
