//! The size of the flow cache (`PW_FLOW_CACHE`) the loader creates: the operator's explicit
//! slot count, or a default that scales with the number of possible CPUs under a memory budget.
//! Pure arithmetic: it reads no files and creates no map (the caller passes the CPU count).
use std::fmt;

use portwatch_common as common;

/// Kernel memory the default flow cache may take, both banks on every possible CPU together.
///
/// Why 32 MiB: it is the smallest power-of-two budget with which the cache holds, summed over
/// the CPUs, at least as many flows as the flow map's default capacity (65,536): the slot
/// count is rounded down to a power of two, so the cache gets between half and all of the
/// budget, and half of 32 MiB at 208 bytes per slot and CPU (two banks of 104) is about 80,000
/// slots. Flows beyond the flow capacity are not handed out anyway. On up to 8 CPUs the budget
/// is not the limit: [`MAX_DEFAULT_SLOTS`] is.
pub const FLOW_CACHE_BUDGET: u64 = 32 << 20;

/// Most slots per bank the default gives: the size every CPU count got before the default
/// scaled (docs/benchmarks.md measures the program with it), kept on up to 8 CPUs so that
/// their pinned caches are reused across the upgrade.
pub const MAX_DEFAULT_SLOTS: u32 = common::DEFAULT_FLOW_CACHE_SLOTS;

/// Fewest slots per bank the default gives, whatever the CPU count: the flood test's size
/// (tests/tests/ebpf_flood.rs). With more than about 157 possible CPUs this floor, not the
/// budget, sets the size (52 MiB on 256 CPUs).
pub const MIN_DEFAULT_SLOTS: u32 = 1_024;

/// Bytes of value per slot and CPU (one `FlowSlot`).
const SLOT_BYTES: u64 = std::mem::size_of::<common::FlowSlot>() as u64;

/// Where the slot count came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheSizeSource {
    /// `--flow-cache-slots` or the config file's `flow-cache-slots`, as given.
    Explicit { requested: u32 },
    /// Nothing given: the default for this many possible CPUs.
    Default,
}

/// The flow cache's size as the loader creates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSize {
    /// Slots per bank (a power of two).
    pub slots: u32,
    /// Possible CPUs (each has its own copy of every slot).
    pub cpus: usize,
    pub source: CacheSizeSource,
}

impl CacheSize {
    /// Picks the slots per bank: an explicit value wins (clamped to 1 ..
    /// [`common::MAX_FLOW_CACHE_SLOTS`] and rounded up to a power of two, as it always was);
    /// otherwise the largest power of two whose two banks on `cpus` CPUs fit
    /// [`FLOW_CACHE_BUDGET`], clamped to [`MIN_DEFAULT_SLOTS`] ..= [`MAX_DEFAULT_SLOTS`].
    /// The same inputs always give the same size, so a restarted agent with the same settings
    /// on the same machine reuses its pinned cache.
    pub fn pick(explicit: Option<u32>, cpus: usize) -> Self {
        let cpus = cpus.max(1);
        let slots = match explicit {
            Some(n) => n.clamp(1, common::MAX_FLOW_CACHE_SLOTS).next_power_of_two(),
            None => {
                let fit = FLOW_CACHE_BUDGET / bytes_per_slot(cpus);
                let pow2 = if fit == 0 {
                    0
                } else {
                    1u64 << (63 - fit.leading_zeros())
                };
                pow2.clamp(u64::from(MIN_DEFAULT_SLOTS), u64::from(MAX_DEFAULT_SLOTS)) as u32
            }
        };
        Self {
            slots,
            cpus,
            source: match explicit {
                Some(requested) => CacheSizeSource::Explicit { requested },
                None => CacheSizeSource::Default,
            },
        }
    }

    /// Kernel memory of the cache: both banks, every CPU's copy of each slot, and the per-CPU
    /// array's pointer per slot (`bpftool map show` gives 7,078,200 bytes for 16,384 slots on
    /// 2 CPUs; this gives 7,077,888, the rest is the map's header).
    pub fn kernel_bytes(&self) -> u64 {
        u64::from(self.slots) * bytes_per_slot(self.cpus)
    }
}

/// Both banks' bytes for one slot index: a copy per CPU plus the array's 8-byte pointer.
fn bytes_per_slot(cpus: usize) -> u64 {
    2 * (SLOT_BYTES * cpus as u64 + 8)
}

impl fmt::Display for CacheSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = self.kernel_bytes() as f64 / f64::from(1u32 << 20);
        write!(
            f,
            "{} slots per bank x 2 banks x {} possible CPUs, {mib:.1} MiB of kernel memory: ",
            self.slots, self.cpus
        )?;
        match self.source {
            CacheSizeSource::Explicit { requested } if requested == self.slots => {
                write!(f, "flow-cache-slots {requested} as set")
            }
            CacheSizeSource::Explicit { requested }
                if (1..=common::MAX_FLOW_CACHE_SLOTS).contains(&requested) =>
            {
                write!(
                    f,
                    "flow-cache-slots {requested} as set, rounded up to a power of two"
                )
            }
            CacheSizeSource::Explicit { requested } => write!(
                f,
                "flow-cache-slots {requested} as set, clamped to 1..={}",
                common::MAX_FLOW_CACHE_SLOTS
            ),
            CacheSizeSource::Default => write!(
                f,
                "the default for {} possible CPUs (the largest power of two within a {} MiB \
                 budget, between {MIN_DEFAULT_SLOTS} and {MAX_DEFAULT_SLOTS}; set \
                 flow-cache-slots to choose)",
                self.cpus,
                FLOW_CACHE_BUDGET >> 20
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_scales_down_with_the_cpus_within_the_budget() {
        // 2 CPUs: the budget would allow 65,536; the ceiling keeps the measured 16,384.
        let two = CacheSize::pick(None, 2);
        assert_eq!(two.slots, 16_384);
        assert_eq!(
            two.kernel_bytes(),
            7_077_888,
            "bpftool: 7,078,200 with the header"
        );
        // 64 CPUs: 32 MiB / (2 x (104 x 64 + 8)) = 2,517 slots, rounded down to 2,048.
        let sixty_four = CacheSize::pick(None, 64);
        assert_eq!(sixty_four.slots, 2_048);
        assert!(sixty_four.kernel_bytes() <= FLOW_CACHE_BUDGET);
        assert!(
            sixty_four.kernel_bytes() > FLOW_CACHE_BUDGET / 2,
            "rounding down keeps at least half the budget"
        );
        // Before: 16,384 slots on 64 CPUs took 216 MiB.
        assert!(CacheSize::pick(Some(16_384), 64).kernel_bytes() > 200 << 20);
        // 256 CPUs: the budget allows 630, the floor gives 1,024 (52 MiB, over the budget).
        let many = CacheSize::pick(None, 256);
        assert_eq!(many.slots, MIN_DEFAULT_SLOTS);
        assert_eq!(many.kernel_bytes(), 1_024 * 2 * (104 * 256 + 8));
        // Between: 16 CPUs get 8,192; 8 CPUs still fit 16,384.
        assert_eq!(CacheSize::pick(None, 16).slots, 8_192);
        assert_eq!(CacheSize::pick(None, 8).slots, 16_384);
    }

    #[test]
    fn the_default_is_a_power_of_two_that_never_grows_with_more_cpus_and_fits_the_budget() {
        let mut last = u32::MAX;
        for cpus in 1..=1024 {
            let s = CacheSize::pick(None, cpus);
            assert!(s.slots.is_power_of_two(), "{cpus} CPUs: {}", s.slots);
            assert!(s.slots <= last, "{cpus} CPUs: {} after {last}", s.slots);
            assert!((MIN_DEFAULT_SLOTS..=MAX_DEFAULT_SLOTS).contains(&s.slots));
            if s.slots > MIN_DEFAULT_SLOTS {
                assert!(s.kernel_bytes() <= FLOW_CACHE_BUDGET, "{cpus} CPUs: {s}");
            }
            // Summed over the CPUs the cache holds at least the default flow capacity
            // (until the floor takes over, where it holds more).
            assert!(
                u64::from(s.slots) * cpus as u64 >= u64::from(common::DEFAULT_FLOW_CAPACITY)
                    || cpus < 4,
                "{cpus} CPUs: {s}"
            );
            last = s.slots;
        }
        // Same inputs, same size: a restarted agent on the same machine reuses its pins.
        assert_eq!(CacheSize::pick(None, 64), CacheSize::pick(None, 64));
    }

    #[test]
    fn an_explicit_value_wins_whatever_the_cpus() {
        for cpus in [2, 64, 256] {
            assert_eq!(CacheSize::pick(Some(16_384), cpus).slots, 16_384);
            assert_eq!(CacheSize::pick(Some(65_536), cpus).slots, 65_536);
            assert_eq!(CacheSize::pick(Some(1), cpus).slots, 1);
            // Rounded up and clamped exactly as before the default scaled.
            assert_eq!(CacheSize::pick(Some(3_000), cpus).slots, 4_096);
            assert_eq!(CacheSize::pick(Some(0), cpus).slots, 1);
            assert_eq!(
                CacheSize::pick(Some(u32::MAX), cpus).slots,
                common::MAX_FLOW_CACHE_SLOTS
            );
        }
    }

    #[test]
    fn the_log_line_says_which_size_and_why() {
        let d = CacheSize::pick(None, 64).to_string();
        assert!(
            d.starts_with("2048 slots per bank x 2 banks x 64 possible CPUs, 26.0 MiB"),
            "{d}"
        );
        assert!(d.contains("the default for 64 possible CPUs"), "{d}");
        assert!(d.contains("32 MiB budget"), "{d}");
        let e = CacheSize::pick(Some(4_096), 64).to_string();
        assert!(e.contains("flow-cache-slots 4096 as set"), "{e}");
        assert!(!e.contains("default"), "{e}");
        let r = CacheSize::pick(Some(3_000), 2).to_string();
        assert!(r.starts_with("4096 slots per bank"), "{r}");
        assert!(
            r.contains("flow-cache-slots 3000 as set, rounded up to a power of two"),
            "{r}"
        );
        let z = CacheSize::pick(Some(0), 2).to_string();
        assert!(z.starts_with("1 slots per bank"), "{z}");
        assert!(
            z.contains("flow-cache-slots 0 as set, clamped to 1..="),
            "{z}"
        );
    }
}
