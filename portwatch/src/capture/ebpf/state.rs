//! The persisted "last read" baseline of the kernel's cumulative counters: its binary format and
//! where it is kept. It owns nothing else; deciding what to do with a baseline is the
//! collector's job.
//!
//! The baseline is kept next to the maps it belongs to, on bpffs: a pinned array map
//! `PW_BASELINE` holding the encoded bytes. It is replaced atomically, like a file: a new map
//! is filled, pinned as `PW_BASELINE_TMP` (bpffs refuses names with a dot) and renamed over the old pin, so a reader sees the
//! old baseline or the new one, never a mix. Keeping it on bpffs gives it exactly the maps'
//! lifetime (both vanish at reboot) and needs no other writable directory. The encoding names
//! the maps it belongs to (kernel map ids and the boot id), so a baseline is never applied to
//! maps that were re-created.
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::sys;
use super::totals::PortTotals;

use portwatch_common::{COUNTERS_LEN, PortCounters, PortKey};

use crate::clock::UnixNanos;

/// The format written: per-port entries as a 5-byte key and seven LEB128 varints (counters
/// are mostly small or zero, so an entry takes about 20 bytes instead of 64; the baseline is
/// written to the history and to bpffs every interval, and SQLite copies it several times).
const MAGIC: &[u8; 8] = b"PWBASE02";
/// The earlier format, still read (a baseline pinned or recorded by an older agent): fixed
/// 64-byte entries.
const MAGIC_V1: &[u8; 8] = b"PWBASE01";
const BOOT_ID_LEN: usize = 36;
/// Bytes before the entries: magic, boot id, two map ids, seq, last end, counter count,
/// counters, entry count.
const HEADER_LEN: usize = 8 + BOOT_ID_LEN + 4 + 4 + 8 + 8 + 4 + 8 * COUNTERS_LEN + 8;
/// A version-1 entry.
const ENTRY_LEN_V1: usize = 8 + 7 * 8;
/// The shortest version-2 entry (key, seven one-byte varints).
const ENTRY_MIN_LEN: usize = 5 + 7;
/// The longest varint of a u64.
const VARINT_MAX: usize = 10;

fn put_varint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

/// How many bytes [`put_varint`] writes for `x`.
fn varint_len(x: u64) -> usize {
    (64 - x.leading_zeros()).max(1).div_ceil(7) as usize
}

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
    pub totals: PortTotals,
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

/// The header every version shares: magic, identity, sequence, health counters and the
/// number of per-port entries that follow.
fn put_header(out: &mut Vec<u8>, magic: &[u8], id: &Identity, b: &Baseline) {
    out.extend_from_slice(magic);
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
    out.extend_from_slice(&(b.totals.len() as u64).to_le_bytes());
}

/// Serialises `id` and `b` (little-endian, FNV-1a checksum at the end).
pub(crate) fn encode(id: &Identity, b: &Baseline) -> Vec<u8> {
    // Sized exactly (one cheap pass over the values) so the buffer is never reallocated (a
    // doubling copy of a 65,537-port baseline was the largest allocation of an interval) and
    // holds no more than it needs (the worst case is about four times the usual size).
    let body: usize = b
        .totals
        .iter()
        .map(|(_, v)| {
            5 + [
                v.packets, v.segments, v.bytes, v.syn, v.synack, v.fin, v.rst,
            ]
            .into_iter()
            .map(varint_len)
            .sum::<usize>()
        })
        .sum();
    let mut out = Vec::with_capacity(HEADER_LEN + body + 8);
    put_header(&mut out, MAGIC, id, b);
    // In key order, so equal baselines give equal files.
    for (k, v) in b.totals.iter() {
        out.extend_from_slice(&k.port.to_le_bytes());
        out.extend_from_slice(&[k.proto, k.side, k.dir]);
        for x in [
            v.packets, v.segments, v.bytes, v.syn, v.synack, v.fin, v.rst,
        ] {
            put_varint(&mut out, x);
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
    /// A LEB128 varint of at most ten bytes whose bits fit a u64.
    fn varint(&mut self) -> Option<u64> {
        let mut x = 0u64;
        for i in 0..VARINT_MAX {
            let b = *self.take(1)?.first()?;
            let bits = u64::from(b & 0x7f);
            if i == VARINT_MAX - 1 && bits > 1 {
                return None;
            }
            x |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Some(x);
            }
        }
        None
    }
}

/// Parses what [`encode`] wrote.
pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<(Identity, Baseline), StateError> {
    let corrupt = |what: &str| StateError::Corrupt {
        path: path.to_owned(),
        what: what.to_owned(),
    };
    if bytes.len() < MAGIC.len() + 8 {
        return Err(corrupt("expected the PWBASE02 or PWBASE01 header"));
    }
    let v1 = match &bytes[..MAGIC.len()] {
        m if m == MAGIC => false,
        m if m == MAGIC_V1 => true,
        _ => return Err(corrupt("expected the PWBASE02 or PWBASE01 header")),
    };
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
    let min_len = if v1 { ENTRY_LEN_V1 } else { ENTRY_MIN_LEN };
    if n > (body.len() / min_len) as u64 {
        return Err(corrupt("entry count larger than the file"));
    }
    let mut totals = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let e = r.take(if v1 { 8 } else { 5 }).ok_or_else(short)?;
        let key = PortKey {
            port: u16::from_le_bytes([e[0], e[1]]),
            proto: e[2],
            side: e[3],
            dir: e[4],
            _pad: [0; 3],
        };
        let mut f = [0u64; 7];
        for x in &mut f {
            *x = if v1 {
                r.u64().ok_or_else(short)?
            } else {
                r.varint().ok_or_else(|| corrupt("bad varint"))?
            };
        }
        let [packets, segments, bytes, syn, synack, fin, rst] = f;
        let v = PortCounters {
            packets,
            segments,
            bytes,
            syn,
            synack,
            fin,
            rst,
        };
        totals.push((key, v));
    }
    let totals = PortTotals::from_sums(totals);
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

/// Where encoded baselines are kept (bpffs in production, memory in tests).
pub(crate) trait BaselineStore: Send {
    /// The stored bytes, `None` when nothing was stored yet.
    fn read(&self) -> Result<Option<Vec<u8>>, StateError>;
    /// Replaces the stored bytes atomically.
    fn write(&self, bytes: &[u8]) -> Result<(), StateError>;
    /// Where it is, for messages.
    fn location(&self) -> PathBuf;
}

/// Reads and decodes the stored baseline.
pub(crate) fn load(store: &dyn BaselineStore) -> Result<Option<(Identity, Baseline)>, StateError> {
    match store.read()? {
        Some(bytes) => decode(&store.location(), &bytes).map(Some),
        None => Ok(None),
    }
}

/// Encodes and stores `b` for the maps `id`.
pub(crate) fn save(
    store: &dyn BaselineStore,
    id: &Identity,
    b: &Baseline,
) -> Result<(), StateError> {
    store.write(&encode(id, b))
}

/// Name of the pinned baseline map in the pin directory.
pub(crate) const PIN_NAME: &str = "PW_BASELINE";
const CHUNK: usize = 64 * 1024;

/// How many `CHUNK`-byte values [`fill_chunk`] makes of `len` bytes (at least one).
fn chunk_count(len: usize) -> usize {
    (len + 8).div_ceil(CHUNK)
}

/// Fills `chunk` (`CHUNK` bytes) with value `i` of the baseline array holding `bytes`: an
/// 8-byte little-endian length, the bytes, zero padding to a whole number of chunks. One
/// chunk at a time, so writing needs no framed copy of the whole baseline.
fn fill_chunk(bytes: &[u8], i: usize, chunk: &mut [u8]) {
    chunk.fill(0);
    // The chunk covers bytes [i * CHUNK, (i + 1) * CHUNK) of length ++ bytes (CHUNK > 8).
    let start = i * CHUNK;
    if i == 0 {
        chunk[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    }
    let from = start.saturating_sub(8);
    let to = (start + CHUNK).saturating_sub(8).min(bytes.len());
    if from < to {
        let dst = (from + 8) - start;
        chunk[dst..dst + (to - from)].copy_from_slice(&bytes[from..to]);
    }
}

/// `bytes` as the values of the baseline array (see [`fill_chunk`]).
#[cfg(test)]
fn frame(bytes: &[u8]) -> Vec<Vec<u8>> {
    (0..chunk_count(bytes.len()))
        .map(|i| {
            let mut c = vec![0u8; CHUNK];
            fill_chunk(bytes, i, &mut c);
            c
        })
        .collect()
}

/// The bytes [`frame`] framed, once `framed` (the chunks read so far, concatenated) holds them
/// all; `None` while it is shorter than its recorded length.
fn unframe(framed: &[u8]) -> Option<&[u8]> {
    let len = u64::from_le_bytes(framed.get(..8)?.try_into().ok()?);
    let end = usize::try_from(len).ok()?.checked_add(8)?;
    framed.get(8..end)
}

/// The baseline as a pinned BPF array map of 64 KiB chunks: an 8-byte length, then the bytes.
pub(crate) struct BpffsStore {
    dir: PathBuf,
}

impl BpffsStore {
    /// A store in the pin directory `dir` (on bpffs).
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    fn tmp(&self) -> PathBuf {
        self.dir.join(format!("{PIN_NAME}_TMP"))
    }

    fn io(&self, op: &'static str) -> impl FnOnce(io::Error) -> StateError + '_ {
        move |source| StateError::Io {
            path: self.location(),
            op,
            source,
        }
    }
}

impl BaselineStore for BpffsStore {
    fn read(&self) -> Result<Option<Vec<u8>>, StateError> {
        // A temporary pin left by a process killed while saving is garbage: the rename did not
        // happen, so the current pin is the truth.
        let _ = fs::remove_file(self.tmp());
        let fd = match sys::obj_get(&self.location()) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("BPF_OBJ_GET")(e)),
        };
        let corrupt = |what: &str| StateError::Corrupt {
            path: self.location(),
            what: what.to_owned(),
        };
        let mut framed = Vec::new();
        let mut chunk = vec![0u8; CHUNK];
        let mut index = 0u32;
        loop {
            match sys::array_get(fd.as_fd(), index, &mut chunk) {
                Ok(()) => framed.extend_from_slice(&chunk),
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(self.io("read chunk")(e)),
            }
            index += 1;
            if let Some(bytes) = unframe(&framed) {
                return Ok(Some(bytes.to_vec()));
            }
        }
        Err(corrupt("shorter than its recorded length"))
    }

    fn write(&self, bytes: &[u8]) -> Result<(), StateError> {
        let n = chunk_count(bytes.len());
        let fd = sys::array_create("pw_baseline", CHUNK as u32, n as u32)
            .map_err(self.io("BPF_MAP_CREATE"))?;
        let mut chunk = vec![0u8; CHUNK];
        for i in 0..n {
            fill_chunk(bytes, i, &mut chunk);
            sys::array_set(fd.as_fd(), i as u32, &chunk).map_err(self.io("write chunk"))?;
        }
        let tmp = self.tmp();
        let _ = fs::remove_file(&tmp);
        sys::obj_pin(fd.as_fd(), &tmp).map_err(self.io("BPF_OBJ_PIN"))?;
        fs::rename(&tmp, self.location()).map_err(self.io("rename"))
    }

    fn location(&self) -> PathBuf {
        self.dir.join(PIN_NAME)
    }
}

/// A store in memory, for tests.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct MemStore(pub std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>);

#[cfg(test)]
impl BaselineStore for MemStore {
    fn read(&self) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.0.lock().unwrap().clone())
    }
    fn write(&self, bytes: &[u8]) -> Result<(), StateError> {
        *self.0.lock().unwrap() = Some(bytes.to_vec());
        Ok(())
    }
    fn location(&self) -> PathBuf {
        PathBuf::from("memory")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Identity, Baseline) {
        let mut totals = PortTotals::default();
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
    fn framing_spans_chunks_and_needs_every_one() {
        // 10,000 keys of about 23 bytes (a 10-byte varint each): about 230 KB, four chunks.
        let (id, mut b) = sample();
        for port in 0..10_000u16 {
            let k = PortKey {
                port,
                proto: 6,
                side: (port % 2) as u8,
                dir: 0,
                _pad: [0; 3],
            };
            b.totals.insert(
                k,
                PortCounters {
                    packets: u64::from(port) * 3,
                    bytes: u64::MAX - u64::from(port),
                    ..PortCounters::default()
                },
            );
        }
        let bytes = encode(&id, &b);
        let chunks = frame(&bytes);
        assert_eq!(chunks.len(), (bytes.len() + 8).div_ceil(CHUNK));
        assert!(chunks.len() >= 3);
        assert!(chunks.iter().all(|c| c.len() == CHUNK));
        let all = chunks.concat();
        // Every chunk but the last is not enough.
        for n in 0..chunks.len() {
            assert_eq!(unframe(&all[..n * CHUNK]), None, "{n} chunks");
        }
        let back = unframe(&all).expect("complete");
        assert_eq!(back, &bytes[..]);
        let (id2, b2) = decode(Path::new("x"), back).unwrap();
        assert_eq!((id2, b2), (id, b));
    }

    /// `b` in the version-1 layout (fixed 64-byte entries), as agents before PWBASE02 wrote it.
    fn encode_v1(id: &Identity, b: &Baseline) -> Vec<u8> {
        let mut out = Vec::new();
        put_header(&mut out, MAGIC_V1, id, b);
        for (k, v) in b.totals.iter() {
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

    #[test]
    fn a_version_1_baseline_is_still_read_and_the_new_one_is_smaller() {
        let (id, mut b) = sample();
        for port in 0..1_000u16 {
            b.totals.insert(
                PortKey {
                    port,
                    proto: 17,
                    side: 1,
                    dir: 0,
                    _pad: [0; 3],
                },
                PortCounters {
                    packets: u64::from(port) * 28,
                    segments: u64::from(port) * 28,
                    bytes: u64::from(port) * 28 * 64,
                    ..PortCounters::default()
                },
            );
        }
        let old = encode_v1(&id, &b);
        assert_eq!(
            decode(Path::new("x"), &old).unwrap(),
            (id.clone(), b.clone())
        );
        let new = encode(&id, &b);
        assert_eq!(&new[..8], b"PWBASE02");
        assert_eq!(decode(Path::new("x"), &new).unwrap(), (id, b));
        assert!(
            new.len() * 3 < old.len(),
            "{} bytes against {} in version 1",
            new.len(),
            old.len()
        );
    }

    #[test]
    fn the_encoding_is_sized_exactly() {
        let (id, mut b) = sample();
        // Values of every varint length, 1 to 10 bytes.
        for port in 0..2_000u16 {
            b.totals.insert(
                PortKey {
                    port,
                    proto: 6,
                    side: 0,
                    dir: 1,
                    _pad: [0; 3],
                },
                PortCounters {
                    packets: u64::from(port),
                    bytes: u64::from(port) << (port % 57),
                    rst: u64::MAX >> (port % 64),
                    ..PortCounters::default()
                },
            );
        }
        let bytes = encode(&id, &b);
        assert_eq!(bytes.capacity(), bytes.len());
        assert_eq!(decode(Path::new("t"), &bytes).unwrap().1, b);
    }

    #[test]
    fn varints_cover_the_whole_range_and_overlong_ones_are_refused() {
        for x in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, x);
            assert!(buf.len() <= VARINT_MAX);
            assert_eq!(varint_len(x), buf.len(), "{x}");
            let mut r = Reader { buf: &buf, at: 0 };
            assert_eq!(r.varint(), Some(x), "{x}");
            assert_eq!(r.at, buf.len());
        }
        // Eleven bytes, or a tenth byte carrying more than the 64th bit.
        let mut r = Reader {
            buf: &[0x80; 11],
            at: 0,
        };
        assert_eq!(r.varint(), None);
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        let mut r = Reader {
            buf: &too_big,
            at: 0,
        };
        assert_eq!(r.varint(), None);
        let mut r = Reader {
            buf: &[0x80, 0x80],
            at: 0,
        };
        assert_eq!(r.varint(), None, "ends inside a varint");
    }

    #[test]
    fn framing_at_chunk_boundaries_and_of_nothing() {
        for len in [0, CHUNK - 8, CHUNK - 7, CHUNK, 2 * CHUNK - 8] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let chunks = frame(&bytes);
            assert_eq!(chunks.len(), (len + 8).div_ceil(CHUNK), "len {len}");
            assert_eq!(unframe(&chunks.concat()), Some(&bytes[..]), "len {len}");
        }
        // A recorded length beyond what is there (a lost chunk) is never accepted.
        let mut short = frame(&[1u8; 100]).concat();
        short[..8].copy_from_slice(&(CHUNK as u64).to_le_bytes());
        assert_eq!(unframe(&short), None);
        assert_eq!(unframe(&[0u8; 7]), None);
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
}
