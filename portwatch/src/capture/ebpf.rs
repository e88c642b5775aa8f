//! The eBPF capture backend (Linux): loads portwatch's TC programs, attaches them to network
//! interfaces, and turns the kernel's maps into [`Snapshot`]s. It owns everything between the
//! kernel and the observation model; it never consults the spec and never reads the clock
//! except through [`crate::clock`].
//!
//! # Library API
//!
//! ```no_run
//! use portwatch::capture::Backend;
//! use portwatch::capture::ebpf::{EbpfBackend, EbpfConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let mut backend = EbpfBackend::open(EbpfConfig {
//!     ifaces: None,            // every interface that is up, except lo
//!     include_lo: false,
//!     flow_capacity: 65_536,   // flow-detail map size
//!     port_capacity: 131_072,  // per-port totals map size
//!     flow_cache_slots: None,  // flow cache sized for the possible CPUs (or Some(n))
//!     ..EbpfConfig::default()  // pin_dir /sys/fs/bpf/portwatch
//! })?;
//! let now = 0; // from the agent's Clock
//! let snapshot = backend.collect(now)?;        // deltas since the previous collect
//! let attached = backend.refresh_interfaces()?; // interfaces that appeared since
//! backend.close()?;                              // or drop: detaches from every interface
//! # Ok(()) }
//! ```
//!
//! # What the kernel keeps
//! - `PW_PORT_TOTALS`: per-CPU per-port totals keyed by (protocol, port, side, direction). The
//!   program only adds; userspace never deletes. Each [`Backend::collect`] reads them and
//!   reports the difference from a *baseline*, the totals as of the previous interval.
//! - `PW_FLOW_CACHE` and `PW_CACHE_BANK`: 5-tuple detail, first stop. Per CPU, two banks of
//!   flow slots (an open-addressing table, no hash-map helper call on the packet path); the
//!   program adds to the bank `PW_CACHE_BANK` names. Each interval the bank is flipped, the old
//!   one read after every program run that could still use it has ended, and zeroed (see
//!   `cache.rs`). A flow that finds no slot goes to `PW_FLOWS`.
//! - `PW_FLOWS`: bounded 5-tuple detail behind the cache, a per-CPU hash (each CPU adds to its
//!   own copy of an entry), drained each interval (iterate keys, then one
//!   `BPF_MAP_LOOKUP_AND_DELETE_ELEM` per key, which returns every CPU's copy). Every copy of a
//!   flow, from the cache and the map, is merged into one. Insert failures are counted, never
//!   silent; so is a failed drain, which still hands out what the cache and the map gave
//!   before it (the cache's bank is already zeroed by then).
//! - The flow cache's size: `flow_cache_slots`, or by default sized for the possible CPUs
//!   within [`FLOW_CACHE_BUDGET`] ([`CacheSize::pick`]); logged when the backend opens.
//! - `PW_COUNTERS`: per-CPU health counters, read as deltas like the totals.
//!
//! All of them are pinned under `pin_dir`, so a restarted agent continues from them.
//!
//! # Restart without loss or double counting
//! The baseline is kept in the pin directory too, as a pinned array map `PW_BASELINE` replaced
//! atomically (a new map is filled, pinned under a temporary name and renamed over the old
//! pin). [`Backend::collect`] reads the kernel maps, works out the deltas and moves the
//! in-memory baseline on; the new baseline is persisted by [`Backend::commit`], which the agent
//! calls after every sink had the interval. The history stores the same encoded baseline
//! ([`Backend::checkpoint`]) in the transaction that records the interval, and hands it back at
//! start-up ([`EbpfConfig::resume`]); the newer of the two (by sequence number, for the same
//! maps) wins. So a crash before the history's transaction leaves both at the previous
//! baseline: the next agent reports that interval again, with everything newer, and nothing is
//! lost. A crash after it and before the commit leaves the history one interval ahead of the
//! pin: the next agent continues from the history's checkpoint, and nothing is counted twice.
//! The baseline names the kernel ids of the maps and the boot id, so it is never applied to other
//! maps; when the maps are reused but no usable baseline exists, the agent starts from their
//! current totals (it may under-report what preceded it, never over-report). Flow detail drained
//! in the interval of a crash is lost (it is approximate by design; totals stay exact). TCX
//! links die with the agent, so a killed agent leaves nothing attached; the netlink filters of
//! kernels before 6.6 outlive it and are removed when the next agent starts. One agent per pin
//! directory (an exclusive lock on the directory). See docs/ebpf.md.
//!
//! Interfaces are those of the network namespace of the thread that calls [`EbpfBackend::open`]
//! and [`Backend::refresh_interfaces`].
mod account;
mod cache;
pub mod iface;
mod sizing;
mod state;
mod sys;
mod totals;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use aya::maps::{MapData, MapError, MapInfo, MapType, PerCpuArray};
use aya::programs::tc::{self, SchedClassifierLinkId, TcAttachType};
use aya::programs::{ProgramError, SchedClassifier};
use aya::{Ebpf, EbpfLoader};
use portwatch_common as common;
use portwatch_common::{FlowKey as KFlowKey, FlowSlot, FlowValue, PortCounters, PortKey, PortSlot};

use super::{Backend, BackendKind};
use crate::clock::{MonotonicOffset, UnixNanos};
use crate::flow::Snapshot;
use account::{PortTotals, Reading};
use cache::{CacheBanks, CacheDrain, FlowMap};
pub use sizing::{CacheSize, CacheSizeSource, FLOW_CACHE_BUDGET};
pub use state::StateError;
use state::{Baseline, Identity};
pub use sys::TestRun;

/// The eBPF object built by build.rs (empty when built without the eBPF toolchain).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portwatch"));

/// The embedded eBPF object (empty when built without the eBPF toolchain). The kernel benchmark
/// loads it to attach and detach the programs between rate runs without reloading them.
pub fn object() -> &'static [u8] {
    OBJECT
}

/// The capabilities the backend needs, as printed in permission errors.
pub const NEEDED_CAPS: &str = "CAP_BPF and CAP_NET_ADMIN";

/// How to run the eBPF backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EbpfConfig {
    /// Interfaces to observe; `None` means every interface that is up, except loopback.
    pub ifaces: Option<Vec<String>>,
    /// With `ifaces: None`, observe loopback too.
    pub include_lo: bool,
    /// Capacity of the flow-detail map (flows per interval beyond those the flow cache holds).
    pub flow_capacity: u32,
    /// Slots per bank of the per-CPU flow cache in front of the flow map: the flows per CPU
    /// and interval counted without a hash-map lookup. Two banks of 104 bytes per slot and
    /// CPU. `Some(n)`: `n` rounded up to a power of two, at least 1 and at most
    /// [`common::MAX_FLOW_CACHE_SLOTS`] (values outside are clamped). `None` (the default):
    /// sized for the number of possible CPUs within [`FLOW_CACHE_BUDGET`] ([`CacheSize::pick`]:
    /// 16,384 on up to 8 CPUs, 2,048 on 64). The backend logs the size it chose and why.
    pub flow_cache_slots: Option<u32>,
    /// Slots of the per-port totals table (keys of protocol, port, side and direction ever
    /// seen), rounded up to a power of two; 64 bytes per CPU each. Keep it at most about
    /// three-quarters full: a key that finds no slot within 16 probes is counted as
    /// `port_table_full`.
    pub port_capacity: u32,
    /// bpffs directory where the maps are pinned.
    pub pin_dir: PathBuf,
    /// A checkpoint the history stored with its last interval ([`Backend::checkpoint`]): used
    /// instead of the pinned baseline when it belongs to the same maps and is newer (the agent
    /// died after the history recorded an interval and before the baseline was committed).
    pub resume: Option<Vec<u8>>,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        Self {
            ifaces: None,
            include_lo: false,
            flow_capacity: common::DEFAULT_FLOW_CAPACITY,
            flow_cache_slots: None,
            port_capacity: common::DEFAULT_PORT_SLOTS,
            pin_dir: PathBuf::from("/sys/fs/bpf/portwatch"),
            resume: None,
        }
    }
}

/// Errors of the eBPF backend.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// The kernel refused an operation for lack of privileges.
    #[error(
        "{operation} was refused (permission denied){lacking}: the eBPF backend needs {NEEDED_CAPS} \
         (or root). Run as root, or grant them with \
         `sudo setcap cap_bpf,cap_net_admin+ep $(command -v portwatch)`; \
         on kernels before 5.8 CAP_SYS_ADMIN is needed instead"
    )]
    Permission {
        operation: String,
        /// "; this process lacks CAP_..." from its effective set, or empty when none is
        /// missing or the set is unknown.
        lacking: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// This binary was built without the eBPF object.
    #[error(
        "this portwatch was built without its eBPF object (bpf-linker or the pinned nightly \
         was missing, or PORTWATCH_SKIP_EBPF was set): run `cargo xtask setup` and rebuild, \
         or use the pcap backend"
    )]
    NoObject,
    /// The pin directory is not on a bpf filesystem.
    #[error(
        "pin directory {path} is not on a bpf filesystem (found filesystem magic {magic:#x}): \
         mount one with `mount -t bpf bpf /sys/fs/bpf` or choose another pin directory"
    )]
    NotBpffs { path: PathBuf, magic: i64 },
    /// A directory or file the backend needs could not be created or opened.
    #[error("{what} {path}: {op} failed")]
    Fs {
        what: &'static str,
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// Another agent holds the lock of this pin directory.
    #[error("another portwatch agent uses pin directory {pin_dir} (it holds the directory's lock)")]
    AlreadyRunning { pin_dir: PathBuf },
    /// Loading the eBPF object (maps, programs' relocations) failed.
    #[error("loading the eBPF object failed")]
    Load(#[source] aya::EbpfError),
    /// The object lacks a program or map it should have.
    #[error("the eBPF object has no {kind} named {name}")]
    Missing { kind: &'static str, name: String },
    /// A program failed to load (verifier) or to attach/detach.
    #[error("program {program}: {op} failed")]
    Program {
        program: &'static str,
        op: String,
        #[source]
        source: ProgramError,
    },
    /// A map operation failed.
    #[error("map {map}: {op} failed")]
    Map {
        map: &'static str,
        op: &'static str,
        #[source]
        source: MapError,
    },
    /// A raw bpf(2) call on a map failed.
    #[error("map {map}: {op} failed")]
    Syscall {
        map: &'static str,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// A named interface does not exist.
    #[error("interface {name} does not exist (interfaces here: {available})")]
    NoSuchInterface { name: String, available: String },
    /// Listing interfaces failed.
    #[error("listing network interfaces failed")]
    Interfaces(#[source] io::Error),
    /// The baseline file could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Whether `err`'s cause chain says "permission denied": EPERM, or EACCES except from the
/// verifier (which rejects a program with EACCES whatever the caller's capabilities).
fn is_permission(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut verifier = false;
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(ProgramError::LoadError { .. }) = e.downcast_ref::<ProgramError>() {
            verifier = true;
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            match io.raw_os_error() {
                Some(libc::EPERM) => return true,
                Some(libc::EACCES) if !verifier => return true,
                _ => {}
            }
        }
        cur = e.source();
    }
    false
}

/// The needed capabilities as (name, bit number in the capability sets).
const NEEDED_CAP_BITS: [(&str, u32); 2] = [("CAP_BPF", 39), ("CAP_NET_ADMIN", 12)];

/// This process's effective capability set (`CapEff` in /proc/self/status), if readable.
fn own_effective_caps() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// "; this process lacks CAP_X and CAP_Y" for the needed capabilities missing from `effective`;
/// empty when none is missing or the set is unknown.
fn lacking_caps(effective: Option<u64>) -> String {
    let Some(eff) = effective else {
        return String::new();
    };
    let lacking: Vec<&str> = NEEDED_CAP_BITS
        .iter()
        .filter(|(_, bit)| eff & (1u64 << bit) == 0)
        .map(|(name, _)| *name)
        .collect();
    if lacking.is_empty() {
        String::new()
    } else {
        format!("; this process lacks {}", lacking.join(" and "))
    }
}

/// Wraps `err` as a permission error when that is what it is.
fn or_permission<E>(
    operation: impl Into<String>,
    err: E,
    other: impl FnOnce(E) -> EbpfError,
) -> EbpfError
where
    E: std::error::Error + Send + Sync + 'static,
{
    if is_permission(&err) {
        EbpfError::Permission {
            operation: operation.into(),
            lacking: lacking_caps(own_effective_caps()),
            source: Box::new(err),
        }
    } else {
        other(err)
    }
}

/// Cumulative kernel counters since the maps were created (summed over CPUs), for diagnostics
/// and tests; [`Snapshot::health`] carries the per-interval view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Indexed by `portwatch_common::CNT_*`.
    pub c: [u64; common::COUNTERS_LEN],
}

impl KernelCounters {
    /// The counter at `portwatch_common::CNT_*` index `i`.
    pub fn get(&self, i: usize) -> u64 {
        self.c.get(i).copied().unwrap_or(0)
    }
}

/// The seam between the backend and the kernel maps (a fake drives the backend in tests).
pub(crate) trait KernelMaps: Send {
    /// Reads the cumulative totals and counters and drains the flow map.
    fn read(&mut self) -> Result<Reading, EbpfError>;
    /// Reads the cumulative counters only.
    fn counters(&self) -> Result<[u64; common::COUNTERS_LEN], EbpfError>;
    /// Which maps these are.
    fn identity(&self) -> &Identity;
}

/// The real maps.
struct AyaMaps {
    totals: MapData,
    port_slots: u32,
    cpus: usize,
    counters: PerCpuArray<MapData, u64>,
    flows: AyaFlowMap,
    cache: CacheDrain<AyaCache>,
    identity: Identity,
    /// Keys in the per-port table at the last read (a capacity hint for the next one).
    port_keys: std::cell::Cell<usize>,
}

impl KernelMaps for AyaMaps {
    fn read(&mut self) -> Result<Reading, EbpfError> {
        let counters = self.counters()?;
        let totals = self.read_totals()?;
        // Last: nothing after the drains can fail and throw away what they took out.
        let drained =
            cache::drain_flows(&mut self.cache, &self.flows, self.flows.capacity as usize)?;
        Ok(Reading {
            totals,
            counters,
            flows: drained.flows,
            flows_over_capacity: drained.over_capacity,
            flow_drain_errors: drained.map_errors,
        })
    }

    fn counters(&self) -> Result<[u64; common::COUNTERS_LEN], EbpfError> {
        let mut sum = [0u64; common::COUNTERS_LEN];
        for (i, s) in sum.iter_mut().enumerate() {
            let per_cpu = self
                .counters
                .get(&(i as u32), 0)
                .map_err(|source| EbpfError::Map {
                    map: common::MAP_COUNTERS,
                    op: "read",
                    source,
                })?;
            *s = per_cpu.iter().sum();
        }
        Ok(sum)
    }

    fn identity(&self) -> &Identity {
        &self.identity
    }
}

/// Appends the per-port table's used slots (every CPU's, as `BPF_MAP_LOOKUP_BATCH` returns
/// them for one range of slots) to `out`, one entry per key of the range: a key's copies on
/// several CPUs sit near the same slot index (each CPU's table probes from the same hash), so
/// they are summed here and `out` stays about one entry per key. Free slots are skipped.
fn sum_slots(out: &mut Vec<(PortKey, PortCounters)>, raw: &[u8]) {
    let size = std::mem::size_of::<PortSlot>();
    let start = out.len();
    let used = raw
        .chunks_exact(size)
        .filter(|c| {
            PortKey::from_word(u64::from_ne_bytes(c[..8].try_into().unwrap_or_default())).is_some()
        })
        .count();
    // Exact growth: a doubling vector would end up to twice the size of the table's keys.
    out.reserve_exact(used);
    for chunk in raw.chunks_exact(size) {
        let word =
            |i: usize| u64::from_ne_bytes(chunk[8 * i..8 * i + 8].try_into().unwrap_or_default());
        let Some(key) = PortKey::from_word(word(0)) else {
            continue;
        };
        out.push((
            key,
            PortCounters {
                packets: word(1),
                segments: word(2),
                bytes: word(3),
                syn: word(4),
                synack: word(5),
                fin: word(6),
                rst: word(7),
            },
        ));
    }
    totals::sort_and_sum(out, start);
}

/// The real flow cache: `PW_FLOW_CACHE` (banks of `slots` slots) and `PW_CACHE_BANK`.
struct AyaCache {
    slots: MapData,
    bank: aya::maps::Array<MapData, u32>,
    per_bank: u32,
    cpus: usize,
    /// Where `membarrier` is unavailable (nohz_full kernels): the map-in-map wait instead.
    fallback: Option<sys::GracePeriod>,
}

impl CacheBanks for AyaCache {
    fn active(&self) -> Result<u32, EbpfError> {
        self.bank.get(&0, 0).map_err(|source| EbpfError::Map {
            map: common::MAP_CACHE_BANK,
            op: "read",
            source,
        })
    }

    fn set_active(&mut self, bank: u32) -> Result<(), EbpfError> {
        self.bank.set(0, bank, 0).map_err(|source| EbpfError::Map {
            map: common::MAP_CACHE_BANK,
            op: "write",
            source,
        })
    }

    fn quiesce(&mut self) -> Result<(), EbpfError> {
        let err = |op| {
            move |source| EbpfError::Syscall {
                map: common::MAP_CACHE_BANK,
                op,
                source,
            }
        };
        if self.fallback.is_none() {
            match sys::membarrier_global() {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::info!(
                        "membarrier(MEMBARRIER_CMD_GLOBAL) is unavailable (nohz_full?): the flow \
                         cache's drain waits for running programs with a map-in-map update instead"
                    );
                    self.fallback =
                        Some(sys::GracePeriod::new().map_err(err("create map-in-map"))?);
                }
                Err(source) => return Err(err("membarrier")(source)),
            }
        }
        match &self.fallback {
            Some(g) => g.wait().map_err(err("map-in-map update (grace period)")),
            None => Ok(()),
        }
    }

    fn read_bank(
        &self,
        bank: u32,
        flows: &mut Vec<(KFlowKey, FlowValue)>,
        used: &mut Vec<u32>,
    ) -> Result<(), EbpfError> {
        let first = bank * self.per_bank;
        let mut next = first;
        let chunk_len = std::mem::size_of::<FlowSlot>() * self.cpus;
        sys::percpu_array_read_each(
            self.slots.fd().as_fd(),
            first,
            self.per_bank,
            std::mem::size_of::<FlowSlot>(),
            self.cpus,
            |raw| {
                cache::parse_slots(raw, next, self.cpus, flows, used);
                next += (raw.len() / chunk_len) as u32;
            },
        )
        .map_err(|source| EbpfError::Syscall {
            map: common::MAP_FLOW_CACHE,
            op: "BPF_MAP_LOOKUP_BATCH",
            source,
        })
    }

    fn zero(&mut self, indices: &[u32]) -> Result<(), EbpfError> {
        sys::percpu_array_zero(
            self.slots.fd().as_fd(),
            indices,
            std::mem::size_of::<FlowSlot>(),
            self.cpus,
        )
        .map_err(|source| EbpfError::Syscall {
            map: common::MAP_FLOW_CACHE,
            op: "BPF_MAP_UPDATE_BATCH",
            source,
        })
    }
}

/// One flow from every CPU's copy (see [`FlowValue::merge`]).
fn merge_cpus(per_cpu: &[FlowValue]) -> FlowValue {
    let mut v = FlowValue::default();
    for c in per_cpu {
        v.merge(c);
    }
    v
}

impl AyaMaps {
    /// Sums every CPU's slots by key. The same key may sit in different slots on different
    /// CPUs (each CPU probes its own table).
    fn read_totals(&self) -> Result<PortTotals, EbpfError> {
        let size = std::mem::size_of::<PortSlot>();
        // As many keys as last time plus a range's worth, so the vector is allocated once.
        let mut totals = Vec::with_capacity(self.port_keys.get() + 4096);
        sys::percpu_array_read_each(
            self.totals.fd().as_fd(),
            0,
            self.port_slots,
            size,
            self.cpus,
            |raw| sum_slots(&mut totals, raw),
        )
        .map_err(|source| EbpfError::Syscall {
            map: common::MAP_PORT_TOTALS,
            op: "BPF_MAP_LOOKUP_BATCH",
            source,
        })?;
        // Copies of a key the CPUs keep in slots of different ranges are summed here.
        let totals = PortTotals::from_sums(totals);
        self.port_keys.set(totals.len());
        Ok(totals)
    }
}

/// The real flow map, `PW_FLOWS`: a per-CPU hash of at most `capacity` flows.
struct AyaFlowMap {
    map: MapData,
    capacity: u32,
    cpus: usize,
}

impl FlowMap for AyaFlowMap {
    /// Iterates the keys first (deleting while iterating would restart the walk), then looks
    /// up and deletes each one, appending the entries to `out`.
    fn drain(&self, out: &mut Vec<(KFlowKey, FlowValue)>) -> Result<(), EbpfError> {
        let fd = self.map.fd().as_fd();
        let sys = |op| {
            move |source| EbpfError::Syscall {
                map: common::MAP_FLOWS,
                op,
                source,
            }
        };
        // New flows keep arriving while we walk: bound the walk to the map's capacity.
        let mut keys: Vec<KFlowKey> = Vec::new();
        let mut cur: Option<KFlowKey> = None;
        while keys.len() < self.capacity as usize {
            match sys::map_next_key(fd, cur.as_ref()).map_err(sys("BPF_MAP_GET_NEXT_KEY"))? {
                Some(k) => {
                    keys.push(k);
                    cur = Some(k);
                }
                None => break,
            }
        }
        out.reserve_exact(keys.len());
        for k in keys {
            if let Some(per_cpu) =
                sys::map_lookup_and_delete_percpu::<_, FlowValue>(fd, &k, self.cpus)
                    .map_err(sys("BPF_MAP_LOOKUP_AND_DELETE_ELEM"))?
            {
                out.push((k, merge_cpus(&per_cpu)));
            }
        }
        Ok(())
    }
}

/// Baseline bookkeeping around a [`KernelMaps`]: the part of the backend that runs in tests
/// without a kernel.
pub(crate) struct Collector<M> {
    maps: M,
    store: Box<dyn state::BaselineStore>,
    baseline: Baseline,
    start: UnixNanos,
    /// Whether the baseline of the last collect is not yet committed to `store`.
    pending: bool,
    /// Its encoding, made when first asked for (after classification, not during it: it is as
    /// large as the per-port table).
    encoded: std::cell::OnceCell<Vec<u8>>,
}

impl<M: KernelMaps> Collector<M> {
    /// Picks up the persisted baseline when it belongs to these maps: the pinned one, or
    /// `resume` (the history's checkpoint) when that one is newer. `fresh` says the maps were
    /// just created (empty): without a baseline they start from zero; reused maps without a
    /// usable baseline start from their current totals (never report a count twice).
    pub(crate) fn new(
        maps: M,
        store: Box<dyn state::BaselineStore>,
        fresh: bool,
        resume: Option<&[u8]>,
    ) -> Result<Self, EbpfError> {
        let pinned = match state::load(store.as_ref()) {
            Ok(l) => l,
            Err(e @ StateError::Corrupt { .. }) => {
                tracing::warn!("{e}; starting from the current kernel totals");
                None
            }
            Err(e) => return Err(e.into()),
        };
        let resumed = resume.and_then(|bytes| {
            state::decode(Path::new("the history's checkpoint"), bytes)
                .inspect_err(|e| tracing::warn!("{e}; using the pinned baseline"))
                .ok()
        });
        let mut c = Self {
            maps,
            store,
            baseline: Baseline::default(),
            start: 0,
            pending: false,
            encoded: std::cell::OnceCell::new(),
        };
        let pinned_seq = pinned
            .as_ref()
            .filter(|(id, _)| id == c.maps.identity())
            .map(|(_, b)| b.seq);
        let loaded = match resumed {
            Some((id, b))
                if id == *c.maps.identity() && pinned_seq.is_none_or(|seq| b.seq > seq) =>
            {
                tracing::warn!(
                    history_seq = b.seq,
                    pinned_seq,
                    "the history recorded an interval whose baseline was never committed to {} \
                     (the agent died in between): continuing from the history's checkpoint",
                    c.store.location().display()
                );
                Some((id, b))
            }
            _ => pinned,
        };
        match loaded {
            Some((id, b)) if id == *c.maps.identity() => {
                tracing::info!(
                    seq = b.seq,
                    "continuing per-port totals from the pinned maps and {}",
                    c.store.location().display()
                );
                c.start = b.last_end;
                c.baseline = b;
            }
            _ if fresh => {}
            _ => {
                // Reused maps, no baseline for them: everything counted so far is skipped.
                let r = c.maps.read()?;
                let skipped = r.counters[common::CNT_PACKETS];
                tracing::warn!(
                    skipped_packets = skipped,
                    "pinned maps exist without a matching baseline in {}: starting from their \
                     current totals",
                    c.store.location().display()
                );
                c.baseline = Baseline {
                    seq: 0,
                    last_end: 0,
                    counters: r.counters,
                    totals: r.totals,
                };
                state::save(c.store.as_ref(), c.maps.identity(), &c.baseline)?;
            }
        }
        Ok(c)
    }

    /// Reads the maps and works out the interval without persisting anything (a crash right
    /// after this must not change what the next agent reports).
    pub(crate) fn read_interval(
        &mut self,
        now: UnixNanos,
        offset: &MonotonicOffset,
    ) -> Result<(Snapshot, Baseline), EbpfError> {
        let reading = self.maps.read()?;
        let start = if self.start == 0 { now } else { self.start };
        Ok(account::account(
            &self.baseline,
            reading,
            offset,
            start,
            now,
        ))
    }

    /// Ends the interval at `now`: read, move the baseline on, hand out the deltas. The new
    /// baseline is persisted by [`Collector::commit`], once the interval is safe with the sinks.
    pub(crate) fn collect(
        &mut self,
        now: UnixNanos,
        offset: &MonotonicOffset,
    ) -> Result<Snapshot, EbpfError> {
        let (snap, next) = self.read_interval(now, offset)?;
        self.pending = true;
        self.encoded = std::cell::OnceCell::new();
        self.baseline = next;
        self.start = now;
        Ok(snap)
    }

    /// The encoded baseline of the last collect, not yet committed.
    pub(crate) fn checkpoint(&self) -> Option<&[u8]> {
        self.pending.then(|| self.encoded_baseline())
    }

    fn encoded_baseline(&self) -> &[u8] {
        self.encoded
            .get_or_init(|| state::encode(self.maps.identity(), &self.baseline))
    }

    /// Persists the baseline of the last collect (nothing to do when it already is). A failure
    /// keeps it pending; the next collect replaces it with a newer one.
    pub(crate) fn commit(&mut self) -> Result<(), EbpfError> {
        if self.pending {
            self.store.write(self.encoded_baseline())?;
            self.pending = false;
            self.encoded = std::cell::OnceCell::new();
        }
        Ok(())
    }
}

/// One interface the programs are attached to.
struct Attached {
    index: u32,
    ingress: SchedClassifierLinkId,
    egress: SchedClassifierLinkId,
}

/// The eBPF backend. Dropping it detaches the programs from every interface.
pub struct EbpfBackend {
    // Field order matters: `ebpf` owns the links and is dropped (detached) first.
    ebpf: Ebpf,
    attached: BTreeMap<String, Attached>,
    collector: Collector<AyaMaps>,
    cfg: EbpfConfig,
    cache_size: CacheSize,
    _lock: File,
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn fs_err(
    what: &'static str,
    path: &Path,
    op: &'static str,
) -> impl FnOnce(io::Error) -> EbpfError {
    let path = path.to_owned();
    move |source| EbpfError::Fs {
        what,
        path,
        op,
        source,
    }
}

fn statfs_magic(path: &Path) -> io::Result<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: statfs fills the struct we own; `c` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// What a pinned map must look like to be reused.
struct Expect {
    name: &'static str,
    map_type: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
}

fn matches_pin(info: &MapInfo, e: &Expect) -> bool {
    info.map_type().ok() == Some(e.map_type)
        && info.key_size() == e.key_size
        && info.value_size() == e.value_size
        && info.max_entries() == e.max_entries
        && info.map_flags() == e.flags
}

/// Removes pinned maps that do not match this build's layout or configuration. Returns true
/// when the totals and counters maps are reused (they hold earlier counts).
fn check_pins(
    pin_dir: &Path,
    flow_capacity: u32,
    port_slots: u32,
    cache_slots: u32,
) -> Result<bool, EbpfError> {
    use std::mem::size_of;
    let totals = Expect {
        name: common::MAP_PORT_TOTALS,
        map_type: MapType::PerCpuArray,
        key_size: 4,
        value_size: size_of::<PortSlot>() as u32,
        max_entries: port_slots,
        flags: 0,
    };
    let counters = Expect {
        name: common::MAP_COUNTERS,
        map_type: MapType::PerCpuArray,
        key_size: 4,
        value_size: 8,
        max_entries: common::COUNTERS_LEN as u32,
        flags: 0,
    };
    let flows = Expect {
        name: common::MAP_FLOWS,
        map_type: MapType::PerCpuHash,
        key_size: size_of::<KFlowKey>() as u32,
        value_size: size_of::<FlowValue>() as u32,
        max_entries: flow_capacity,
        flags: 0,
    };
    let cache = Expect {
        name: common::MAP_FLOW_CACHE,
        map_type: MapType::PerCpuArray,
        key_size: 4,
        value_size: size_of::<FlowSlot>() as u32,
        max_entries: 2 * cache_slots,
        flags: 0,
    };
    let bank = Expect {
        name: common::MAP_CACHE_BANK,
        map_type: MapType::Array,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        flags: 0,
    };
    let state = |e: &Expect| -> Option<bool> {
        let path = pin_dir.join(e.name);
        if !path.exists() {
            return None;
        }
        Some(MapInfo::from_pin(&path).is_ok_and(|i| matches_pin(&i, e)))
    };
    let unpin = |e: &Expect, why: &str| -> Result<(), EbpfError> {
        let path = pin_dir.join(e.name);
        tracing::warn!("removing pinned map {}: {why}", path.display());
        match fs::remove_file(&path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                Err(fs_err("pinned map", &path, "unlink")(err))
            }
            _ => Ok(()),
        }
    };
    let reused = match (state(&totals), state(&counters)) {
        (Some(true), Some(true)) => true,
        (None, None) => false,
        _ => {
            // Totals and counters go together (one baseline covers both).
            unpin(
                &totals,
                "its layout or its partner map does not match this build",
            )?;
            unpin(
                &counters,
                "its layout or its partner map does not match this build",
            )?;
            false
        }
    };
    if state(&flows) == Some(false) {
        unpin(
            &flows,
            "its capacity or layout differs; undrained flow detail is dropped",
        )?;
    }
    if state(&cache) == Some(false) {
        unpin(
            &cache,
            "its size or layout differs; undrained flow detail is dropped",
        )?;
    }
    if state(&bank) == Some(false) {
        unpin(&bank, "its layout differs")?;
    }
    Ok(reused)
}

impl EbpfBackend {
    /// Loads the programs and maps (reusing pinned maps), and attaches to the configured
    /// interfaces on TC ingress and egress.
    pub fn open(cfg: EbpfConfig) -> Result<Self, EbpfError> {
        if OBJECT.is_empty() {
            return Err(EbpfError::NoObject);
        }
        raise_memlock();
        fs::create_dir_all(&cfg.pin_dir).map_err(|e| {
            or_permission(format!("creating {}", cfg.pin_dir.display()), e, |e| {
                fs_err("pin directory", &cfg.pin_dir, "create")(e)
            })
        })?;
        // One agent per pin directory: an exclusive lock on the directory itself, released by
        // the kernel when the agent dies however it dies.
        let lock =
            File::open(&cfg.pin_dir).map_err(fs_err("pin directory", &cfg.pin_dir, "open"))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(EbpfError::AlreadyRunning {
                pin_dir: cfg.pin_dir.clone(),
            });
        }
        let magic =
            statfs_magic(&cfg.pin_dir).map_err(fs_err("pin directory", &cfg.pin_dir, "statfs"))?;
        if magic != BPF_FS_MAGIC {
            return Err(EbpfError::NotBpffs {
                path: cfg.pin_dir.clone(),
                magic,
            });
        }
        let slots = cfg.port_capacity.max(2).next_power_of_two();
        let mask = slots - 1;
        let cpus = possible_cpus()?;
        let cache_size = CacheSize::pick(cfg.flow_cache_slots, cpus);
        tracing::info!(
            slots = cache_size.slots,
            cpus,
            explicit = cfg.flow_cache_slots.is_some(),
            "flow cache: {cache_size}"
        );
        let cache_slots = cache_size.slots;
        let cache_mask = cache_slots - 1;
        let reused = check_pins(&cfg.pin_dir, cfg.flow_capacity, slots, cache_slots)?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&cfg.pin_dir)
            .map_max_entries(common::MAP_FLOWS, cfg.flow_capacity)
            .map_max_entries(common::MAP_PORT_TOTALS, slots)
            .map_max_entries(common::MAP_FLOW_CACHE, 2 * cache_slots)
            .override_global(common::GLOBAL_PORT_SLOT_MASK, &mask, true)
            .override_global(common::GLOBAL_FLOW_CACHE_MASK, &cache_mask, true)
            .load(OBJECT)
            .map_err(|e| or_permission("loading the eBPF maps and programs", e, EbpfError::Load))?;
        let maps = take_maps(
            &mut ebpf,
            &cfg.pin_dir,
            cfg.flow_capacity,
            slots,
            cache_slots,
            cpus,
        )?;
        let store = Box::new(state::BpffsStore::new(&cfg.pin_dir));
        let collector = Collector::new(maps, store, !reused, cfg.resume.as_deref())?;
        for prog in [common::PROG_INGRESS, common::PROG_EGRESS] {
            classifier(&mut ebpf, prog)?
                .load()
                .map_err(|e| prog_err(prog, "load (verifier)", e))?;
        }
        let mut me = Self {
            ebpf,
            attached: BTreeMap::new(),
            collector,
            cfg,
            cache_size,
            _lock: lock,
        };
        let all = iface::list().map_err(EbpfError::Interfaces)?;
        if let Some(wanted) = &me.cfg.ifaces {
            for w in wanted {
                if !all.iter().any(|i| i.name == *w) {
                    let available = all
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(EbpfError::NoSuchInterface {
                        name: w.clone(),
                        available,
                    });
                }
            }
        }
        me.attach_new(&all)?;
        Ok(me)
    }

    /// Attaches to the selected interfaces in `all` that are not attached yet (or were
    /// re-created under the same name); forgets interfaces that disappeared.
    fn attach_new(&mut self, all: &[iface::IfaceInfo]) -> Result<Vec<String>, EbpfError> {
        // Interfaces that vanished took their TCX links with them.
        let gone: Vec<String> = self
            .attached
            .iter()
            .filter(|(n, a)| !all.iter().any(|i| i.name == **n && i.index == a.index))
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            if let Some(a) = self.attached.remove(&n) {
                tracing::info!(iface = %n, "interface gone or re-created; forgetting its links");
                let _ =
                    classifier(&mut self.ebpf, common::PROG_INGRESS).map(|p| p.detach(a.ingress));
                let _ = classifier(&mut self.ebpf, common::PROG_EGRESS).map(|p| p.detach(a.egress));
            }
        }
        let mut added = Vec::new();
        for i in iface::select(all, self.cfg.ifaces.as_deref(), self.cfg.include_lo) {
            if self.attached.contains_key(&i.name) {
                continue;
            }
            let legacy = !tcx_available();
            if legacy {
                // Filters a killed agent left behind (netlink filters outlive their process).
                let _ =
                    tc::qdisc_detach_program(&i.name, TcAttachType::Ingress, common::PROG_INGRESS);
                let _ =
                    tc::qdisc_detach_program(&i.name, TcAttachType::Egress, common::PROG_EGRESS);
                let _ = tc::qdisc_add_clsact(&i.name);
            }
            let ingress = self.attach_one(common::PROG_INGRESS, &i.name, TcAttachType::Ingress)?;
            let egress = match self.attach_one(common::PROG_EGRESS, &i.name, TcAttachType::Egress) {
                Ok(l) => l,
                Err(e) => {
                    let _ =
                        classifier(&mut self.ebpf, common::PROG_INGRESS).map(|p| p.detach(ingress));
                    return Err(e);
                }
            };
            tracing::info!(iface = %i.name, tcx = !legacy, "attached on ingress and egress");
            self.attached.insert(
                i.name.clone(),
                Attached {
                    index: i.index,
                    ingress,
                    egress,
                },
            );
            added.push(i.name);
        }
        Ok(added)
    }

    fn attach_one(
        &mut self,
        prog: &'static str,
        ifname: &str,
        hook: TcAttachType,
    ) -> Result<SchedClassifierLinkId, EbpfError> {
        classifier(&mut self.ebpf, prog)?
            .attach(ifname, hook)
            .map_err(|e| {
                let op = format!(
                    "attach to {ifname} {}",
                    if hook == TcAttachType::Ingress {
                        "ingress"
                    } else {
                        "egress"
                    }
                );
                prog_err(prog, &op, e)
            })
    }

    /// Commits the last collect's baseline, detaches from every interface and releases the
    /// maps (they stay pinned).
    pub fn close(mut self) -> Result<(), EbpfError> {
        let mut first_err = self.collector.commit().err();
        let attached = std::mem::take(&mut self.attached);
        for (name, a) in attached {
            for (prog, link) in [
                (common::PROG_INGRESS, a.ingress),
                (common::PROG_EGRESS, a.egress),
            ] {
                let r = classifier(&mut self.ebpf, prog).and_then(|p| {
                    p.detach(link)
                        .map_err(|e| prog_err(prog, &format!("detach from {name}"), e))
                });
                if let Err(e) = r {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Cumulative kernel counters since the maps were created.
    pub fn kernel_counters(&self) -> Result<KernelCounters, EbpfError> {
        Ok(KernelCounters {
            c: self.collector.maps.counters()?,
        })
    }

    /// The configuration the backend runs with.
    pub fn config(&self) -> &EbpfConfig {
        &self.cfg
    }

    /// The flow cache's size as created or reused: slots per bank, possible CPUs, and whether
    /// the slot count was set or is the default for the CPUs.
    pub fn flow_cache_size(&self) -> CacheSize {
        self.cache_size
    }

    /// Runs program `prog` (`PROG_INGRESS` or `PROG_EGRESS`) `repeat` times on `frame` with
    /// `BPF_PROG_TEST_RUN`: the kernel's own per-packet cost measurement. The runs count into
    /// the same maps as real traffic.
    pub fn test_run(
        &mut self,
        prog: &'static str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRun, EbpfError> {
        let p = classifier(&mut self.ebpf, prog)?;
        let fd = p.fd().map_err(|e| prog_err(prog, "get fd", e))?;
        sys::prog_test_run(fd.as_fd(), frame, repeat).map_err(|e| {
            or_permission("BPF_PROG_TEST_RUN", e, |source| EbpfError::Syscall {
                map: "-",
                op: "BPF_PROG_TEST_RUN",
                source,
            })
        })
    }
}

/// `BPF_PROG_TEST_RUN` on any loaded program (benchmarks time a baseline program with it);
/// [`EbpfBackend::test_run`] is the same call on portwatch's own programs.
pub fn prog_test_run(
    prog: std::os::fd::BorrowedFd<'_>,
    frame: &[u8],
    repeat: u32,
) -> std::io::Result<TestRun> {
    sys::prog_test_run(prog, frame, repeat)
}

fn prog_err(program: &'static str, op: &str, e: ProgramError) -> EbpfError {
    or_permission(format!("program {program}: {op}"), e, |source| {
        EbpfError::Program {
            program,
            op: op.to_owned(),
            source,
        }
    })
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, EbpfError> {
    ebpf.program_mut(name)
        .ok_or(EbpfError::Missing {
            kind: "program",
            name: name.to_owned(),
        })?
        .try_into()
        .map_err(|e| prog_err(name, "type check", e))
}

fn take_maps(
    ebpf: &mut Ebpf,
    pin_dir: &Path,
    flow_capacity: u32,
    port_slots: u32,
    cache_slots: u32,
    cpus: usize,
) -> Result<AyaMaps, EbpfError> {
    let mut take = |name: &'static str| {
        ebpf.take_map(name).ok_or(EbpfError::Missing {
            kind: "map",
            name: name.to_owned(),
        })
    };
    let map_err = |map: &'static str| {
        move |source| EbpfError::Map {
            map,
            op: "open",
            source,
        }
    };
    let totals = match take(common::MAP_PORT_TOTALS)? {
        aya::maps::Map::PerCpuArray(m) => m,
        _ => {
            return Err(EbpfError::Missing {
                kind: "per-CPU array",
                name: common::MAP_PORT_TOTALS.to_owned(),
            });
        }
    };
    let counters: PerCpuArray<MapData, u64> = take(common::MAP_COUNTERS)?
        .try_into()
        .map_err(map_err(common::MAP_COUNTERS))?;
    let flows = match take(common::MAP_FLOWS)? {
        aya::maps::Map::PerCpuHashMap(m) => m,
        _ => {
            return Err(EbpfError::Missing {
                kind: "per-CPU hash map",
                name: common::MAP_FLOWS.to_owned(),
            });
        }
    };
    let cache_map = match take(common::MAP_FLOW_CACHE)? {
        aya::maps::Map::PerCpuArray(m) => m,
        _ => {
            return Err(EbpfError::Missing {
                kind: "per-CPU array",
                name: common::MAP_FLOW_CACHE.to_owned(),
            });
        }
    };
    let bank: aya::maps::Array<MapData, u32> = take(common::MAP_CACHE_BANK)?
        .try_into()
        .map_err(map_err(common::MAP_CACHE_BANK))?;
    let id = |map: &'static str| {
        MapInfo::from_pin(pin_dir.join(map))
            .map(|i| i.id())
            .map_err(|source| EbpfError::Map {
                map,
                op: "info",
                source,
            })
    };
    let identity = Identity {
        boot_id: state::boot_id().map_err(fs_err(
            "boot id",
            Path::new("/proc/sys/kernel/random/boot_id"),
            "read",
        ))?,
        totals_map_id: id(common::MAP_PORT_TOTALS)?,
        counters_map_id: id(common::MAP_COUNTERS)?,
    };
    Ok(AyaMaps {
        totals,
        port_slots,
        cpus,
        counters,
        flows: AyaFlowMap {
            map: flows,
            capacity: flow_capacity,
            cpus,
        },
        cache: CacheDrain::new(AyaCache {
            slots: cache_map,
            bank,
            per_bank: cache_slots,
            cpus,
            fallback: None,
        }),
        identity,
        port_keys: std::cell::Cell::new(0),
    })
}

/// The number of possible CPUs: per-CPU maps hold a copy of each value for every one of them.
fn possible_cpus() -> Result<usize, EbpfError> {
    aya::util::nr_cpus().map_err(|(_, source)| {
        fs_err(
            "possible CPUs",
            Path::new("/sys/devices/system/cpu/possible"),
            "read",
        )(source)
    })
}

/// TCX (Linux >= 6.6) links die with their process; older kernels use netlink filters.
fn tcx_available() -> bool {
    aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it (best effort).
fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
}

impl Backend for EbpfBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Ebpf
    }

    fn collect(
        &mut self,
        now: UnixNanos,
    ) -> Result<Snapshot, Box<dyn std::error::Error + Send + Sync>> {
        let offset = MonotonicOffset::capture();
        Ok(self.collector.collect(now, &offset)?)
    }

    fn refresh_interfaces(
        &mut self,
    ) -> Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
        let all = iface::list().map_err(EbpfError::Interfaces)?;
        Ok(self.attach_new(&all)?)
    }

    fn interfaces(&self) -> Vec<String> {
        self.attached.keys().cloned().collect()
    }

    fn checkpoint(&self) -> Option<&[u8]> {
        self.collector.checkpoint()
    }

    fn commit(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.collector.commit()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use state::MemStore;
    use std::collections::HashMap;

    /// Kernel maps scripted by the test: cumulative totals that only grow, flows to drain.
    #[derive(Clone)]
    struct FakeMaps {
        totals: HashMap<PortKey, PortCounters>,
        counters: [u64; common::COUNTERS_LEN],
        flows: Vec<(KFlowKey, FlowValue)>,
        /// Failed flow-map drains the next read reports.
        drain_errors: u64,
        id: Identity,
    }

    impl FakeMaps {
        fn new(totals_map_id: u32) -> Self {
            Self {
                totals: HashMap::new(),
                counters: [0; common::COUNTERS_LEN],
                flows: Vec::new(),
                drain_errors: 0,
                id: Identity {
                    boot_id: "boot".into(),
                    totals_map_id,
                    counters_map_id: totals_map_id + 1,
                },
            }
        }
        fn packets(&mut self, port: u16, n: u64) {
            let k = PortKey {
                port,
                proto: 17,
                side: common::SIDE_LOCAL,
                dir: common::DIR_INGRESS,
                _pad: [0; 3],
            };
            let e = self.totals.entry(k).or_default();
            e.packets += n;
            e.segments += n;
            e.bytes += 100 * n;
            self.counters[common::CNT_PACKETS] += n;
        }
    }

    impl KernelMaps for FakeMaps {
        fn read(&mut self) -> Result<Reading, EbpfError> {
            Ok(Reading {
                totals: PortTotals::from_sums(self.totals.iter().map(|(k, v)| (*k, *v)).collect()),
                counters: self.counters,
                flows: std::mem::take(&mut self.flows),
                flows_over_capacity: 0,
                flow_drain_errors: std::mem::take(&mut self.drain_errors),
            })
        }
        fn counters(&self) -> Result<[u64; common::COUNTERS_LEN], EbpfError> {
            Ok(self.counters)
        }
        fn identity(&self) -> &Identity {
            &self.id
        }
    }

    const OFF: MonotonicOffset = MonotonicOffset { offset: 0 };

    /// A drained IPv4 UDP flow to local port 53 with `packets` inbound packets.
    fn udp53_flow(packets: u64) -> (KFlowKey, FlowValue) {
        (
            KFlowKey {
                proto: 17,
                family: common::FAMILY_V4,
                local_port: 53,
                ..KFlowKey::default()
            },
            FlowValue {
                packets_in: packets,
                ..FlowValue::default()
            },
        )
    }

    fn udp53(s: &Snapshot) -> u64 {
        s.ports
            .iter()
            .filter(|p| p.port == 53)
            .map(|p| p.counts.packets)
            .sum()
    }

    #[test]
    fn restart_continues_from_the_persisted_baseline() {
        let store = MemStore::default();
        let mut kernel = FakeMaps::new(7);
        kernel.packets(53, 10);
        let mut c = Collector::new(kernel, Box::new(store.clone()), true, None).unwrap();
        assert_eq!(udp53(&c.collect(100, &OFF).unwrap()), 10);
        // Every sink had the interval.
        c.commit().unwrap();
        c.maps.packets(53, 5);
        // The agent dies here; the kernel maps (pinned) keep counting.
        let mut kernel = std::mem::replace(&mut c.maps, FakeMaps::new(0));
        drop(c);
        kernel.packets(53, 2);
        let mut c = Collector::new(kernel, Box::new(store.clone()), false, None).unwrap();
        let s = c.collect(200, &OFF).unwrap();
        assert_eq!(
            udp53(&s),
            7,
            "counted after the last interval, before and after the kill"
        );
        assert_eq!(
            s.start, 100,
            "the interval starts where the last one handed out ended"
        );
        assert_eq!(s.health.packets_seen, 7);
    }

    #[test]
    fn crash_between_read_and_persist_neither_loses_nor_double_counts() {
        let store = MemStore::default();
        let mut kernel = FakeMaps::new(7);
        kernel.packets(53, 4);
        let mut c = Collector::new(kernel, Box::new(store.clone()), true, None).unwrap();
        assert_eq!(udp53(&c.collect(100, &OFF).unwrap()), 4);
        c.commit().unwrap();
        c.maps.packets(53, 3);
        // Read, then crash before the baseline is persisted: the snapshot never left.
        let (lost, _) = c.read_interval(150, &OFF).unwrap();
        assert_eq!(udp53(&lost), 3);
        let kernel = std::mem::replace(&mut c.maps, FakeMaps::new(0));
        drop(c);
        let mut c = Collector::new(kernel, Box::new(store.clone()), false, None).unwrap();
        assert_eq!(udp53(&c.collect(200, &OFF).unwrap()), 3);
        assert_eq!(udp53(&c.collect(300, &OFF).unwrap()), 0);
    }

    /// The agent's order: collect, the history stores the interval with the checkpoint, then
    /// commit. A kill between any two steps neither loses nor double-counts an interval.
    #[test]
    fn a_kill_between_the_history_write_and_the_commit_counts_the_interval_once() {
        let store = MemStore::default();
        let mut kernel = FakeMaps::new(7);
        kernel.packets(53, 4);
        let mut c = Collector::new(kernel, Box::new(store.clone()), true, None).unwrap();
        assert_eq!(udp53(&c.collect(100, &OFF).unwrap()), 4);
        let first = c.checkpoint().expect("pending until committed").to_vec();
        c.commit().unwrap();
        assert!(c.checkpoint().is_none(), "committed");
        c.maps.packets(53, 3);
        assert_eq!(udp53(&c.collect(200, &OFF).unwrap()), 3);
        // The history recorded the 3 with this checkpoint; the agent is killed before the
        // commit, the kernel keeps counting.
        let history = c.checkpoint().expect("pending until committed").to_vec();
        let mut kernel = std::mem::replace(&mut c.maps, FakeMaps::new(0));
        drop(c);
        kernel.packets(53, 2);

        // Restarted with the history's checkpoint: only what came after it.
        let mut c = Collector::new(
            kernel.clone(),
            Box::new(store.clone()),
            false,
            Some(&history),
        )
        .unwrap();
        let s = c.collect(300, &OFF).unwrap();
        assert_eq!(
            udp53(&s),
            2,
            "the 3 the history holds are not reported again"
        );
        assert_eq!(s.start, 200, "continues where the recorded interval ended");
        drop(c);

        // Killed before the history's transaction (the history's checkpoint is the previous
        // one, older than the pin): the 3 are reported again, with the 2, not lost.
        let mut c =
            Collector::new(kernel.clone(), Box::new(store.clone()), false, Some(&first)).unwrap();
        assert_eq!(udp53(&c.collect(300, &OFF).unwrap()), 5);
        drop(c);

        // A checkpoint of other maps (another boot) is not applied.
        let mut other = FakeMaps::new(30);
        other.packets(53, 1);
        let mut c2 = Collector::new(other, Box::new(MemStore::default()), true, None).unwrap();
        c2.collect(50, &OFF).unwrap();
        let foreign = c2.checkpoint().unwrap().to_vec();
        let mut c = Collector::new(kernel, Box::new(store.clone()), false, Some(&foreign)).unwrap();
        assert_eq!(udp53(&c.collect(300, &OFF).unwrap()), 5);
    }

    #[test]
    fn a_baseline_of_other_maps_is_not_applied() {
        let store = MemStore::default();
        let mut kernel = FakeMaps::new(7);
        kernel.packets(53, 9);
        let mut c = Collector::new(kernel, Box::new(store.clone()), true, None).unwrap();
        c.collect(100, &OFF).unwrap();
        drop(c);
        // New maps (say, after a reboot) with fewer packets than the old baseline.
        let mut kernel = FakeMaps::new(20);
        kernel.packets(53, 2);
        let mut c = Collector::new(kernel, Box::new(store.clone()), true, None).unwrap();
        assert_eq!(udp53(&c.collect(200, &OFF).unwrap()), 2);
    }

    #[test]
    fn reused_maps_without_a_baseline_are_not_reported_twice() {
        let store = MemStore::default();
        let mut kernel = FakeMaps::new(7);
        kernel.packets(53, 50);
        let mut c = Collector::new(kernel, Box::new(store.clone()), false, None).unwrap();
        c.maps.packets(53, 1);
        assert_eq!(udp53(&c.collect(100, &OFF).unwrap()), 1);
        // A corrupt file is treated the same way.
        *store.0.lock().unwrap() = Some(b"garbage".to_vec());
        let mut kernel = std::mem::replace(&mut c.maps, FakeMaps::new(0));
        drop(c);
        kernel.packets(53, 2);
        let mut c = Collector::new(kernel, Box::new(store.clone()), false, None).unwrap();
        c.maps.packets(53, 3);
        assert_eq!(udp53(&c.collect(300, &OFF).unwrap()), 3);
    }

    #[test]
    fn drained_flows_are_handed_out_once() {
        let mut kernel = FakeMaps::new(7);
        kernel.flows.push(udp53_flow(1));
        let mut c = Collector::new(kernel, Box::new(MemStore::default()), true, None).unwrap();
        assert_eq!(c.collect(1, &OFF).unwrap().flows.len(), 1);
        assert!(c.collect(2, &OFF).unwrap().flows.is_empty());
    }

    #[test]
    fn a_failed_flow_map_drain_is_counted_and_what_was_drained_handed_out() {
        let mut kernel = FakeMaps::new(7);
        kernel.packets(53, 3);
        // What the cache and the map gave before the map's drain failed.
        kernel.flows.push(udp53_flow(3));
        kernel.drain_errors = 1;
        let mut c = Collector::new(kernel, Box::new(MemStore::default()), true, None).unwrap();
        let s = c.collect(1, &OFF).unwrap();
        assert_eq!(s.flows.len(), 1, "what was drained is handed out");
        assert_eq!(s.flows[0].stats.inbound.packets, 3);
        assert_eq!(s.health.flow_update_errors, 1);
        assert!(s.health.flows_approximate());
        assert_eq!(udp53(&s), 3, "per-port totals stay exact");
        let next = c.collect(2, &OFF).unwrap();
        assert_eq!(next.health.flow_update_errors, 0, "counted once");
    }

    #[test]
    fn a_flows_copies_on_several_cpus_merge_into_one() {
        // CPU 1 inserted the flow (the only copy with a first-seen time); CPU 0 and CPU 2 saw
        // later packets; CPU 3 saw none (its copy was zeroed by the insert).
        let cpu1 = FlowValue {
            packets_in: 1,
            bytes_in: 60,
            first_seen_ns: 1_000,
            last_seen_ns: 1_000,
            syns_in: 1,
            flags_in: 0x02,
            ..FlowValue::default()
        };
        let cpu0 = FlowValue {
            packets_out: 2,
            bytes_out: 120,
            last_seen_ns: 3_000,
            flags_out: 0x12,
            ..FlowValue::default()
        };
        let cpu2 = FlowValue {
            packets_in: 5,
            bytes_in: 500,
            last_seen_ns: 2_000,
            flags_in: 0x10,
            ..FlowValue::default()
        };
        let v = merge_cpus(&[cpu0, cpu1, cpu2, FlowValue::default()]);
        assert_eq!((v.packets_in, v.bytes_in), (6, 560));
        assert_eq!((v.packets_out, v.bytes_out), (2, 120));
        assert_eq!((v.first_seen_ns, v.last_seen_ns), (1_000, 3_000));
        assert_eq!((v.flags_in, v.flags_out), (0x12, 0x12));
        assert_eq!((v.syns_in, v.syns_out), (1, 0));
        // The earliest non-zero first-seen wins whichever CPU comes first.
        let w = merge_cpus(&[
            FlowValue {
                first_seen_ns: 7,
                ..FlowValue::default()
            },
            FlowValue {
                first_seen_ns: 4,
                ..FlowValue::default()
            },
        ]);
        assert_eq!(w.first_seen_ns, 4);
    }

    #[test]
    fn slots_of_one_key_on_several_cpus_are_summed() {
        let slot = |word: u64, packets: u64| {
            let mut b = word.to_ne_bytes().to_vec();
            for v in [packets, packets, 100 * packets, 1, 0, 0, 0] {
                b.extend_from_slice(&v.to_ne_bytes());
            }
            b
        };
        let dns = PortKey::to_word(53, 17, common::SIDE_LOCAL, common::DIR_INGRESS);
        let ssh = PortKey::to_word(22, 6, common::SIDE_REMOTE, common::DIR_EGRESS);
        // Index 0 on CPUs 0 and 1, then index 1 on CPUs 0 and 1: the DNS key sits in different
        // slots on different CPUs; a free slot (word 0) is skipped.
        // The reader hands the table over chunk by chunk: the sums carry across chunks.
        let mut v = Vec::new();
        sum_slots(&mut v, &[slot(dns, 2), slot(0, 0)].concat());
        sum_slots(&mut v, &[slot(ssh, 1), slot(dns, 5)].concat());
        // Within one range a key's copies are summed at once; across ranges, by `from_sums`.
        sum_slots(
            &mut v,
            &[slot(ssh, 2), slot(ssh, 3), slot(0, 0), slot(0, 0)].concat(),
        );
        assert_eq!(v.len(), 4, "{v:?}");
        let t = PortTotals::from_sums(v);
        assert_eq!(t.len(), 2);
        let k = PortKey::from_word(dns).unwrap();
        assert_eq!((k.port, k.proto, k.side, k.dir), (53, 17, 0, 0));
        assert_eq!((t[&k].packets, t[&k].bytes, t[&k].syn), (7, 700, 2));
        assert_eq!(t[&PortKey::from_word(ssh).unwrap()].packets, 6);
    }

    #[test]
    fn permission_errors_name_the_missing_capability() {
        // CAP_BPF (39) present, CAP_NET_ADMIN (12) not: BPF_PROG_LOAD of a sched_cls program
        // fails with EPERM. CAP_PERFMON (38) is not needed: the programs do no variable packet
        // pointer arithmetic.
        assert_eq!(
            lacking_caps(Some(1 << 39)),
            "; this process lacks CAP_NET_ADMIN"
        );
        assert_eq!(
            lacking_caps(Some(0)),
            "; this process lacks CAP_BPF and CAP_NET_ADMIN"
        );
        assert_eq!(lacking_caps(Some((1 << 39) | (1 << 12))), "");
        assert_eq!(lacking_caps(None), "");
    }

    #[test]
    fn permission_errors_name_the_capabilities() {
        let e = or_permission(
            "loading",
            io::Error::from_raw_os_error(libc::EPERM),
            EbpfError::Interfaces,
        );
        let msg = e.to_string();
        for cap in ["CAP_BPF", "CAP_NET_ADMIN"] {
            assert!(msg.contains(cap), "{msg}");
        }
        let e = or_permission(
            "bpffs",
            io::Error::from_raw_os_error(libc::EACCES),
            EbpfError::Interfaces,
        );
        assert!(matches!(e, EbpfError::Permission { .. }), "{e}");
        let e = or_permission(
            "x",
            io::Error::from_raw_os_error(libc::ENOENT),
            EbpfError::Interfaces,
        );
        assert!(matches!(e, EbpfError::Interfaces(_)));
    }
}
