//! The flow cache's drain (`PW_FLOW_CACHE`: per CPU, two banks of flow slots in front of the
//! `PW_FLOWS` hash), the order of an interval's drains (cache, then map) and the merge of every
//! drained copy of a flow into one. It reaches the kernel only through the [`CacheBanks`] and
//! [`FlowMap`] seams (fakes drive both in tests) and owns no other map.
//!
//! The program adds to the bank that `PW_CACHE_BANK` names. Each interval userspace flips the
//! bank, waits until no program run can still be using the old one (`membarrier`: an RCU grace
//! period, and programs run inside RCU read-side sections), reads the old bank and zeroes the
//! slots it found in use. The first drain of an agent also drains the idle bank, which holds
//! what an agent killed between reading and zeroing it left behind: that agent never handed it
//! out, so nothing is counted twice, and nothing is lost.
use portwatch_common::{FlowKey as KFlowKey, FlowSlot, FlowValue};

use super::EbpfError;

/// The flow map behind the cache (`PW_FLOWS`), drained every interval.
pub(crate) trait FlowMap {
    /// Takes entries out of the map (each looked up and deleted), appending them to `out`. On
    /// an error, the entries taken before it are in `out` and the others still in the map.
    fn drain(&self, out: &mut Vec<(KFlowKey, FlowValue)>) -> Result<(), EbpfError>;
}

/// An interval's flow detail, from the cache and the map.
#[derive(Debug, Default)]
pub(crate) struct Drained {
    /// Every flow once (copies merged), at most the flow capacity of them.
    pub flows: Vec<(KFlowKey, FlowValue)>,
    /// Flows drained but not kept: beyond the flow capacity.
    pub over_capacity: u64,
    /// Drains of the flow map that failed (0 or 1): the interval's flow detail is then what
    /// was drained before the failure, and the map's other entries come with the next one.
    pub map_errors: u64,
}

/// Drains the cache, then the flow map, and merges every copy of a flow. The cache's bank is
/// zeroed once read, so a failure of the map's drain after it must not throw the bank's flows
/// away: they are handed out with whatever the map gave before failing, and the failure is
/// counted in `map_errors` (reported as a flow update error, which marks the interval's flow
/// detail approximate) and logged. A failure of the cache's own drain is an error: the bank
/// is then not zeroed, and its flows come with a later drain.
pub(crate) fn drain_flows<C: CacheBanks, M: FlowMap>(
    cache: &mut CacheDrain<C>,
    map: &M,
    capacity: usize,
) -> Result<Drained, EbpfError> {
    // The cache first: its vector grows as it is read; the map's entries are then added with
    // one exact reservation (their count is known once the keys are walked).
    let mut flows = Vec::new();
    cache.drain(&mut flows)?;
    let map_errors = match map.drain(&mut flows) {
        Ok(()) => 0,
        Err(e) => {
            let mut why = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                why.push_str(": ");
                why.push_str(&s.to_string());
                src = s.source();
            }
            tracing::warn!(
                "{why}; this interval's flow detail is what the flow cache and the flow map                  gave before the failure (counted as a flow update error), the map's other                  entries stay there for the next interval"
            );
            1
        }
    };
    let mut flows = merge_flows(flows);
    let over_capacity = keep_first_seen(&mut flows, capacity);
    Ok(Drained {
        flows,
        over_capacity,
        map_errors,
    })
}

/// The kernel side of the flow cache.
pub(crate) trait CacheBanks {
    /// The bank the programs add to (0 or 1).
    fn active(&self) -> Result<u32, EbpfError>;
    /// Makes `bank` the one the programs add to.
    fn set_active(&mut self, bank: u32) -> Result<(), EbpfError>;
    /// Returns once every program run that started before the call has ended.
    fn quiesce(&mut self) -> Result<(), EbpfError>;
    /// Appends every CPU's copy of each used slot of `bank` to `flows`, and the slot indices
    /// (within the map) used on any CPU to `used`.
    fn read_bank(
        &self,
        bank: u32,
        flows: &mut Vec<(KFlowKey, FlowValue)>,
        used: &mut Vec<u32>,
    ) -> Result<(), EbpfError>;
    /// Zeroes the slots at `indices` on every CPU.
    fn zero(&mut self, indices: &[u32]) -> Result<(), EbpfError>;
}

/// Drains a flow cache, one bank per call.
pub(crate) struct CacheDrain<C> {
    pub(crate) banks: C,
    /// The idle bank was drained (done once per agent, on its first drain).
    started: bool,
}

impl<C: CacheBanks> CacheDrain<C> {
    pub(crate) fn new(banks: C) -> Self {
        Self {
            banks,
            started: false,
        }
    }

    /// Appends every flow the cache counted since the previous drain to `flows` (a flow once
    /// per CPU that counted it: see [`merge_flows`]).
    pub(crate) fn drain(
        &mut self,
        flows: &mut Vec<(KFlowKey, FlowValue)>,
    ) -> Result<(), EbpfError> {
        if !self.started {
            self.banks.quiesce()?;
            let idle = (self.banks.active()? & 1) ^ 1;
            self.drain_bank(idle, flows)?;
            self.started = true;
        }
        let old = self.banks.active()? & 1;
        self.banks.set_active(old ^ 1)?;
        self.banks.quiesce()?;
        self.drain_bank(old, flows)
    }

    fn drain_bank(
        &mut self,
        bank: u32,
        flows: &mut Vec<(KFlowKey, FlowValue)>,
    ) -> Result<(), EbpfError> {
        let mut used = Vec::new();
        self.banks.read_bank(bank, flows, &mut used)?;
        if used.is_empty() {
            return Ok(());
        }
        self.banks.zero(&used)
    }
}

/// Parses a chunk of a bank as `BPF_MAP_LOOKUP_BATCH` returns it (per slot, `cpus` consecutive
/// [`FlowSlot`]s), the first slot at map index `first`: every CPU's used copy goes to `flows`,
/// the index of a slot used on any CPU to `used`.
pub(crate) fn parse_slots(
    raw: &[u8],
    first: u32,
    cpus: usize,
    flows: &mut Vec<(KFlowKey, FlowValue)>,
    used: &mut Vec<u32>,
) {
    let size = std::mem::size_of::<FlowSlot>();
    for (i, slot) in raw.chunks_exact(size * cpus).enumerate() {
        let mut any = false;
        for copy in slot.chunks_exact(size) {
            // SAFETY: `copy` is exactly one FlowSlot's bytes; FlowSlot is plain integers (any
            // bit pattern is valid), read unaligned.
            let s: FlowSlot = unsafe { std::ptr::read_unaligned(copy.as_ptr().cast()) };
            if s.key.family == 0 {
                continue;
            }
            any = true;
            flows.push((s.key, s.value));
        }
        if any {
            used.push(first + i as u32);
        }
    }
}

/// Folds every copy of a flow (one per CPU that cached it, plus the flow map's merged entry)
/// into one ([`FlowValue::merge`]); the result is in key order. In place: the drained flows are
/// the largest allocation of an interval, and a second vector would double it.
pub(crate) fn merge_flows(mut flows: Vec<(KFlowKey, FlowValue)>) -> Vec<(KFlowKey, FlowValue)> {
    flows.sort_unstable_by_key(|(k, _)| k.words());
    // `later` is removed when it has the key of `kept`, the copy before it that stays.
    flows.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1.merge(&later.1);
        }
        same
    });
    flows
}

/// Keeps at most `capacity` of the merged flows: the ones seen first (ties by key), the flow
/// map's own rule (first come, first kept). The cache and the map together can hold more
/// flows than the configured flow capacity; keeping the lowest keys instead would bias the
/// interval's flow detail towards low addresses and ports. Returns how many were dropped
/// (counted as flow-table-full). The order of the kept flows is unspecified.
pub(crate) fn keep_first_seen(flows: &mut Vec<(KFlowKey, FlowValue)>, capacity: usize) -> u64 {
    if flows.len() <= capacity {
        return 0;
    }
    let dropped = flows.len() - capacity;
    // Everything before index `capacity` sorts at or before it: the `capacity` earliest.
    flows.select_nth_unstable_by_key(capacity, |(k, v)| (v.first_seen_ns, k.words()));
    flows.truncate(capacity);
    dropped as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwatch_common::FAMILY_V4;

    fn key(port: u16) -> KFlowKey {
        KFlowKey {
            local_addr: [0x0100_000a, 0, 0, 0],
            remote_addr: [0x0200_000a, 0, 0, 0],
            local_port: 53,
            remote_port: port,
            proto: 17,
            family: FAMILY_V4,
            _pad: [0; 2],
        }
    }

    #[test]
    fn over_capacity_the_flows_seen_first_are_kept_and_the_rest_counted() {
        // Keys in the opposite order of first sight: keeping the lowest keys would keep the
        // flows seen last.
        let mut flows: Vec<_> = (0..10u16)
            .map(|i| (key(100 - i), val(1, 50 + u64::from(i), 60)))
            .collect();
        assert_eq!(keep_first_seen(&mut flows, 4), 6);
        let mut kept: Vec<u16> = flows.iter().map(|(k, _)| k.remote_port).collect();
        kept.sort_unstable();
        assert_eq!(
            kept,
            vec![97, 98, 99, 100],
            "the four seen first (first_seen 50..53)"
        );
        assert_eq!(
            keep_first_seen(&mut flows, 4),
            0,
            "within capacity: nothing dropped"
        );
        assert_eq!(flows.len(), 4);
        assert_eq!(keep_first_seen(&mut flows, 0), 4);
        assert!(flows.is_empty());
    }

    fn val(packets: u64, first: u64, last: u64) -> FlowValue {
        FlowValue {
            packets_in: packets,
            bytes_in: 100 * packets,
            first_seen_ns: first,
            last_seen_ns: last,
            ..FlowValue::default()
        }
    }

    /// A scripted kernel: per CPU, two banks of `SLOTS` slots, and programs that are still
    /// running on the bank they started with when userspace flips it (their adds land when
    /// `quiesce` has not returned yet, as a grace period lets them).
    struct FakeBanks {
        cpus: Vec<Vec<FlowSlot>>,
        bank: u32,
        in_flight: Vec<(usize, u32, KFlowKey, FlowValue)>,
        log: Vec<&'static str>,
    }

    const SLOTS: usize = 8;

    impl FakeBanks {
        fn new(cpus: usize) -> Self {
            Self {
                cpus: vec![vec![FlowSlot::default(); 2 * SLOTS]; cpus],
                bank: 0,
                in_flight: Vec::new(),
                log: Vec::new(),
            }
        }
        /// A packet counted on `cpu` in `bank` (what the program does: find or claim a slot).
        fn count_in(&mut self, cpu: usize, bank: u32, k: KFlowKey, v: FlowValue) {
            let base = bank as usize * SLOTS;
            let h = portwatch_common::flow_hash(&k.words()) as usize;
            for i in 0..SLOTS {
                let s = &mut self.cpus[cpu][base + (h + i) % SLOTS];
                if s.key == k {
                    s.value.merge(&v);
                    return;
                }
                if s.key.family == 0 {
                    *s = FlowSlot { key: k, value: v };
                    return;
                }
            }
            panic!("fake bank full");
        }
        fn count(&mut self, cpu: usize, k: KFlowKey, v: FlowValue) {
            self.count_in(cpu, self.bank, k, v);
        }
        /// A program run on `cpu` that read the bank before the next flip and adds after it.
        fn start_run(&mut self, cpu: usize, k: KFlowKey, v: FlowValue) {
            self.in_flight.push((cpu, self.bank, k, v));
        }
    }

    impl CacheBanks for FakeBanks {
        fn active(&self) -> Result<u32, EbpfError> {
            Ok(self.bank)
        }
        fn set_active(&mut self, bank: u32) -> Result<(), EbpfError> {
            self.log.push("flip");
            self.bank = bank;
            Ok(())
        }
        fn quiesce(&mut self) -> Result<(), EbpfError> {
            self.log.push("quiesce");
            for (cpu, bank, k, v) in std::mem::take(&mut self.in_flight) {
                self.count_in(cpu, bank, k, v);
            }
            Ok(())
        }
        fn read_bank(
            &self,
            bank: u32,
            flows: &mut Vec<(KFlowKey, FlowValue)>,
            used: &mut Vec<u32>,
        ) -> Result<(), EbpfError> {
            // The kernel's batch layout: per slot, every CPU's copy.
            let size = std::mem::size_of::<FlowSlot>();
            let ncpu = self.cpus.len();
            let first = bank * SLOTS as u32;
            let mut raw = vec![0u8; SLOTS * ncpu * size];
            for i in 0..SLOTS {
                for (c, slots) in self.cpus.iter().enumerate() {
                    let s = &slots[first as usize + i];
                    // SAFETY: FlowSlot is plain integers; writes its bytes into the buffer.
                    unsafe {
                        std::ptr::write_unaligned(
                            raw[(i * ncpu + c) * size..].as_mut_ptr().cast::<FlowSlot>(),
                            *s,
                        );
                    }
                }
            }
            parse_slots(&raw, first, ncpu, flows, used);
            Ok(())
        }
        fn zero(&mut self, indices: &[u32]) -> Result<(), EbpfError> {
            self.log.push("zero");
            for slots in &mut self.cpus {
                for &i in indices {
                    slots[i as usize] = FlowSlot::default();
                }
            }
            Ok(())
        }
    }

    fn drained(
        d: &mut CacheDrain<FakeBanks>,
        map: Vec<(KFlowKey, FlowValue)>,
    ) -> Vec<(KFlowKey, FlowValue)> {
        let mut flows = map;
        d.drain(&mut flows).unwrap();
        merge_flows(flows)
    }

    #[test]
    fn copies_of_a_flow_from_every_cpu_and_the_flow_map_merge_into_one() {
        let mut d = CacheDrain::new(FakeBanks::new(2));
        d.banks.count(0, key(1000), val(3, 50, 70));
        d.banks.count(1, key(1000), val(2, 40, 90));
        d.banks.count(1, key(2000), val(1, 60, 60));
        // The same flow in the flow map (another CPU found its cache full).
        let got = drained(&mut d, vec![(key(1000), val(5, 45, 80))]);
        assert_eq!(got.len(), 2);
        let (k, v) = got[0];
        assert_eq!(k, key(1000));
        assert_eq!(v.packets_in, 10);
        assert_eq!(v.bytes_in, 1000);
        assert_eq!((v.first_seen_ns, v.last_seen_ns), (40, 90));
        assert_eq!((got[1].0, got[1].1.packets_in), (key(2000), 1));
    }

    #[test]
    fn a_run_still_using_the_old_bank_at_the_flip_is_read_with_it_and_never_twice() {
        let mut d = CacheDrain::new(FakeBanks::new(2));
        d.banks.count(0, key(7), val(1, 10, 10));
        // This run read the bank number before the flip; its add lands during the wait.
        d.banks.start_run(1, key(7), val(1, 11, 11));
        let first = drained(&mut d, Vec::new());
        assert_eq!(first.len(), 1);
        assert_eq!(
            first[0].1.packets_in, 2,
            "the in-flight add is in this interval"
        );
        // Packets after the flip go to the other bank, the next interval.
        d.banks.count(0, key(7), val(4, 20, 20));
        let second = drained(&mut d, Vec::new());
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].1.packets_in, 4);
        assert_eq!(second[0].1.first_seen_ns, 20);
        // The bank is read only after the wait, and zeroed after it was read.
        let steady: Vec<_> = d.banks.log.iter().rev().take(3).rev().copied().collect();
        assert_eq!(steady, ["flip", "quiesce", "zero"]);
        // Nothing left: both banks are zero after their drains.
        assert!(drained(&mut d, Vec::new()).is_empty());
        assert!(
            d.banks
                .cpus
                .iter()
                .flatten()
                .all(|s| *s == FlowSlot::default())
        );
    }

    #[test]
    fn the_first_drain_also_takes_what_a_killed_agent_left_in_the_idle_bank() {
        let mut banks = FakeBanks::new(2);
        // An earlier agent flipped to bank 1 and died before it zeroed bank 0.
        banks.count_in(0, 0, key(1), val(2, 5, 6));
        banks.bank = 1;
        banks.count(1, key(1), val(3, 7, 8));
        let mut d = CacheDrain::new(banks);
        let got = drained(&mut d, Vec::new());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.packets_in, 5);
        assert_eq!(got[0].1.first_seen_ns, 5);
        assert_eq!(d.banks.bank, 0);
        // Later drains read one bank each and find nothing twice.
        d.banks.count(1, key(1), val(1, 9, 9));
        let next = drained(&mut d, Vec::new());
        assert_eq!(next[0].1.packets_in, 1);
    }

    /// A scripted flow map: entries taken one by one, failing (EBUSY) when `fail_at` of them
    /// have been taken in this drain.
    struct FakeFlowMap {
        entries: std::cell::RefCell<Vec<(KFlowKey, FlowValue)>>,
        fail_at: std::cell::Cell<Option<usize>>,
    }

    impl FakeFlowMap {
        fn new(entries: Vec<(KFlowKey, FlowValue)>, fail_at: Option<usize>) -> Self {
            Self {
                entries: std::cell::RefCell::new(entries),
                fail_at: std::cell::Cell::new(fail_at),
            }
        }
    }

    impl FlowMap for FakeFlowMap {
        fn drain(&self, out: &mut Vec<(KFlowKey, FlowValue)>) -> Result<(), EbpfError> {
            let mut taken = 0;
            let mut entries = self.entries.borrow_mut();
            while !entries.is_empty() {
                if self.fail_at.get() == Some(taken) {
                    // Fails once; the next drain goes through.
                    self.fail_at.set(None);
                    return Err(EbpfError::Syscall {
                        map: portwatch_common::MAP_FLOWS,
                        op: "BPF_MAP_LOOKUP_AND_DELETE_ELEM",
                        source: std::io::Error::from_raw_os_error(libc::EBUSY),
                    });
                }
                out.push(entries.remove(0));
                taken += 1;
            }
            Ok(())
        }
    }

    fn packets(flows: &[(KFlowKey, FlowValue)]) -> u64 {
        flows.iter().map(|(_, v)| v.packets_in).sum()
    }

    fn packets_of(flows: &[(KFlowKey, FlowValue)], k: KFlowKey) -> Option<u64> {
        flows
            .iter()
            .find(|(f, _)| *f == k)
            .map(|(_, v)| v.packets_in)
    }

    #[test]
    fn a_failed_map_drain_hands_out_the_zeroed_cache_bank_and_counts_the_failure() {
        let mut d = CacheDrain::new(FakeBanks::new(2));
        d.banks.count(0, key(1), val(3, 10, 12));
        d.banks.count(1, key(2), val(2, 11, 11));
        // key(1) is in the map too (a CPU found no slot); the map fails after one entry.
        let map = FakeFlowMap::new(
            vec![
                (key(1), val(5, 9, 13)),
                (key(3), val(4, 14, 14)),
                (key(4), val(6, 15, 15)),
            ],
            Some(1),
        );
        let first = drain_flows(&mut d, &map, 100).unwrap();
        assert_eq!(first.map_errors, 1, "the failure is counted");
        assert_eq!(
            packets_of(&first.flows, key(1)),
            Some(8),
            "cache and map copies"
        );
        assert_eq!(packets_of(&first.flows, key(2)), Some(2), "cache only");
        assert_eq!(packets_of(&first.flows, key(3)), None, "still in the map");
        // The bank the cache read was zeroed: without this interval's hand-out its 5 packets
        // would be gone.
        assert!(
            d.banks.cpus.iter().flatten().all(|s| s.key.family == 0),
            "the drained bank was zeroed"
        );
        assert_eq!(map.entries.borrow().len(), 2);

        // The next interval takes what the map kept; nothing is lost, nothing counted twice.
        let second = drain_flows(&mut d, &map, 100).unwrap();
        assert_eq!(second.map_errors, 0);
        assert_eq!(second.flows.len(), 2);
        assert_eq!(packets_of(&second.flows, key(3)), Some(4));
        assert_eq!(packets_of(&second.flows, key(4)), Some(6));
        assert_eq!(
            packets(&first.flows) + packets(&second.flows),
            3 + 2 + 5 + 4 + 6
        );
    }

    #[test]
    fn a_map_drain_failing_before_any_entry_still_hands_out_the_cache() {
        let mut d = CacheDrain::new(FakeBanks::new(1));
        d.banks.count(0, key(9), val(7, 1, 2));
        let map = FakeFlowMap::new(vec![(key(8), val(1, 1, 1))], Some(0));
        let got = drain_flows(&mut d, &map, 100).unwrap();
        assert_eq!(got.map_errors, 1);
        assert_eq!(got.flows.len(), 1);
        assert_eq!(packets_of(&got.flows, key(9)), Some(7));
        // Capacity still applies to what is handed out, and the map's flow comes next time.
        d.banks.count(0, key(10), val(1, 5, 5));
        let next = drain_flows(&mut d, &map, 1).unwrap();
        assert_eq!(
            (next.flows.len(), next.over_capacity, next.map_errors),
            (1, 1, 0)
        );
        assert_eq!(packets_of(&next.flows, key(8)), Some(1), "seen first");
    }

    #[test]
    fn a_slot_used_on_one_cpu_only_is_read_and_zeroed_and_free_slots_are_skipped() {
        let mut d = CacheDrain::new(FakeBanks::new(3));
        for p in 0..6u16 {
            d.banks.count(usize::from(p % 3), key(p), val(1, 1, 1));
        }
        let mut flows = Vec::new();
        let mut used = Vec::new();
        d.banks.read_bank(0, &mut flows, &mut used).unwrap();
        assert_eq!(flows.len(), 6);
        assert!(used.len() <= 6 && !used.is_empty());
        assert!(used.iter().all(|&i| (i as usize) < SLOTS));
        let got = drained(&mut d, Vec::new());
        assert_eq!(got.len(), 6);
        assert!(got.windows(2).all(|w| w[0].0.words() < w[1].0.words()));
    }
}
