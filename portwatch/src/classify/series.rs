//! Per-service traffic over time: a compact series of equal buckets aligned to round clock
//! times across the observation window (bytes and new flows per bucket). Classify fills it from
//! flow first/last seen; the cluster merge re-buckets node series onto the cluster window.
//! Plain data: it never reads a clock.
use serde::{Deserialize, Serialize};

use crate::clock::UnixNanos;

/// At most this many buckets per series.
pub const MAX_BUCKETS: usize = 60;

const SEC: u64 = 1_000_000_000;

/// Bucket widths, in seconds, a series may use (round numbers a reader can take in at a glance);
/// past the last one, whole multiples of it.
const STEPS_S: [u64; 19] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400,
    604_800,
];

/// Traffic of one service over time. Serialised sparsely (see [`SeriesWire`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "SeriesWire", into = "SeriesWire")]
pub struct Series {
    /// Start of the first bucket (Unix nanoseconds, a multiple of `step_ns`).
    pub start: UnixNanos,
    /// Bucket width in nanoseconds.
    pub step_ns: u64,
    /// Bytes both ways per bucket; a flow's bytes are spread evenly over its lifetime.
    pub bytes: Vec<u64>,
    /// Flows first seen in each bucket.
    pub flows: Vec<u64>,
}

/// The JSON form of a [`Series`]: only the buckets that saw something, as
/// `[bucket index, bytes, new flows]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesWire {
    /// Start of bucket 0 (Unix nanoseconds).
    pub start: UnixNanos,
    /// Bucket width in nanoseconds.
    pub step_ns: u64,
    /// Number of buckets.
    pub buckets: u32,
    /// Non-empty buckets, in order.
    pub points: Vec<[u64; 3]>,
}

/// Readers cap the bucket count of a series they are given (a damaged report cannot make them
/// allocate without bound).
const MAX_READ_BUCKETS: u32 = 100_000;

impl From<Series> for SeriesWire {
    fn from(s: Series) -> Self {
        let points = (0..s.bytes.len())
            .filter(|i| s.bytes[*i] != 0 || s.flows[*i] != 0)
            .map(|i| [i as u64, s.bytes[i], s.flows[i]])
            .collect();
        Self {
            start: s.start,
            step_ns: s.step_ns,
            buckets: s.bytes.len() as u32,
            points,
        }
    }
}

impl From<SeriesWire> for Series {
    fn from(w: SeriesWire) -> Self {
        let n = w.buckets.min(MAX_READ_BUCKETS) as usize;
        let mut s = Series {
            start: w.start,
            step_ns: w.step_ns.max(1),
            bytes: vec![0; n],
            flows: vec![0; n],
        };
        for [i, b, f] in w.points {
            if let Some(i) = usize::try_from(i).ok().filter(|i| *i < n) {
                s.bytes[i] = s.bytes[i].saturating_add(b);
                s.flows[i] = s.flows[i].saturating_add(f);
            }
        }
        s
    }
}

/// The bucket width for a window: the smallest round step that covers it in at most
/// [`MAX_BUCKETS`] aligned buckets.
pub fn step_for(start: UnixNanos, end: UnixNanos) -> u64 {
    let end = end.max(start);
    let fits = |step: u64| (end / step - start / step + 1) as usize <= MAX_BUCKETS;
    for s in STEPS_S {
        if fits(s * SEC) {
            return s * SEC;
        }
    }
    let week = STEPS_S[STEPS_S.len() - 1] * SEC;
    let mut n = 2;
    while !fits(week * n) {
        n += 1;
    }
    week * n
}

impl Series {
    /// Empty buckets covering `[start, end]`.
    pub fn new(start: UnixNanos, end: UnixNanos) -> Self {
        let end = end.max(start);
        let step = step_for(start, end);
        let first = start / step * step;
        let n = (end / step - start / step + 1) as usize;
        Self {
            start: first,
            step_ns: step,
            bytes: vec![0; n],
            flows: vec![0; n],
        }
    }

    /// Whether the series has no buckets (reports written before series existed).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// End of the last bucket.
    pub fn end(&self) -> UnixNanos {
        self.start + self.step_ns * self.bytes.len() as u64
    }

    /// The bucket holding `t`, clamped to the series.
    fn index(&self, t: UnixNanos) -> usize {
        let i = t.saturating_sub(self.start) / self.step_ns.max(1);
        (i as usize).min(self.bytes.len().saturating_sub(1))
    }

    /// Records one flow seen from `first` to `last` that carried `bytes`: the flow counts in
    /// the bucket of `first`, its bytes are spread over the buckets its lifetime overlaps in
    /// proportion to the overlap (the sum stays exact). Times outside the series are clamped.
    pub fn record(&mut self, first: UnixNanos, last: UnixNanos, bytes: u64) {
        if self.is_empty() {
            return;
        }
        let (a, b) = (first.min(last), first.max(last));
        let (ia, ib) = (self.index(a), self.index(b));
        self.flows[ia] = self.flows[ia].saturating_add(1);
        self.spread(a, b, ia, ib, bytes);
    }

    fn spread(&mut self, a: UnixNanos, b: UnixNanos, ia: usize, ib: usize, bytes: u64) {
        if ia == ib || b == a {
            self.bytes[ia] = self.bytes[ia].saturating_add(bytes);
            return;
        }
        let span = u128::from(b - a);
        let mut given = 0u64;
        for i in ia..ib {
            let lo = a.max(self.start + self.step_ns * i as u64);
            let hi = b.min(self.start + self.step_ns * (i as u64 + 1));
            let share = (u128::from(bytes) * u128::from(hi.saturating_sub(lo)) / span) as u64;
            self.bytes[i] = self.bytes[i].saturating_add(share);
            given += share;
        }
        self.bytes[ib] = self.bytes[ib].saturating_add(bytes - given);
    }

    /// Adds another series (another node's, or one with another bucket width): each of its
    /// buckets goes into the buckets of this one it overlaps, bytes in proportion, flows into
    /// the bucket of its start. Exact when the widths nest.
    pub fn add(&mut self, o: &Series) {
        if self.is_empty() {
            return;
        }
        for i in 0..o.bytes.len() {
            let a = o.start + o.step_ns * i as u64;
            let b = a + o.step_ns;
            let (ia, ib) = (self.index(a), self.index(b.saturating_sub(1)));
            self.flows[ia] = self.flows[ia].saturating_add(o.flows[i]);
            if o.bytes[i] > 0 {
                self.spread(a, b, ia, ib, o.bytes[i]);
            }
        }
    }

    /// Total bytes over the series.
    pub fn total_bytes(&self) -> u64 {
        self.bytes.iter().fold(0u64, |s, b| s.saturating_add(*b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_767_225_600 * SEC; // 2026-01-01T00:00:00Z

    #[test]
    fn steps_are_round_and_bounded() {
        assert_eq!(step_for(T0, T0 + 59 * SEC), SEC);
        assert_eq!(step_for(T0, T0 + 600 * SEC), 15 * SEC);
        assert_eq!(step_for(T0, T0 + 3600 * SEC), 120 * SEC);
        assert_eq!(step_for(T0, T0 + 30 * 86_400 * SEC), 86_400 * SEC);
        let year = step_for(T0, T0 + 400 * 86_400 * SEC);
        assert_eq!(year % (604_800 * SEC), 0);
        for (s, e) in [
            (T0, T0),
            (T0 + 7, T0 + 86_399 * SEC),
            (T0, T0 + 400 * 86_400 * SEC),
        ] {
            let x = Series::new(s, e);
            assert!(
                x.bytes.len() <= MAX_BUCKETS && !x.is_empty(),
                "{}",
                x.bytes.len()
            );
            assert!(x.start <= s && x.end() > e && x.start.is_multiple_of(x.step_ns));
        }
    }

    #[test]
    fn bytes_spread_over_lifetime_and_sum_exactly() {
        let mut s = Series::new(T0, T0 + 60 * SEC); // 2 s buckets
        assert_eq!(s.step_ns, 2 * SEC);
        s.record(T0 + SEC, T0 + 5 * SEC, 1000); // buckets 0..=2, 1 s + 2 s + 1 s
        assert_eq!(&s.bytes[..4], &[250, 500, 250, 0]);
        assert_eq!(&s.flows[..3], &[1, 0, 0]);
        s.record(T0 + 10 * SEC, T0 + 10 * SEC, 7);
        s.record(T0 + 2 * SEC, T0 + 5 * SEC, 10); // 2 s + 1 s: 6.67 + 3.33
        assert_eq!(s.bytes[5], 7);
        assert_eq!(s.total_bytes(), 1017);
        // Outside the window: clamped, never lost.
        s.record(T0 - 100 * SEC, T0 - 90 * SEC, 3);
        s.record(T0 + 900 * SEC, T0 + 901 * SEC, 4);
        assert_eq!(s.total_bytes(), 1024);
        assert_eq!(s.flows.iter().sum::<u64>(), 5);
    }

    #[test]
    fn json_keeps_only_busy_buckets_and_round_trips() {
        let mut s = Series::new(T0, T0 + 600 * SEC);
        s.record(T0 + 20 * SEC, T0 + 20 * SEC, 500);
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(
            j,
            format!(r#"{{"start":{T0},"step_ns":15000000000,"buckets":41,"points":[[1,500,1]]}}"#)
        );
        assert_eq!(serde_json::from_str::<Series>(&j).unwrap(), s);
        // Damage is contained: out-of-range points are dropped, the bucket count is capped.
        let bad = r#"{"start":0,"step_ns":0,"buckets":4294967295,"points":[[4294967296,1,1]]}"#;
        let b: Series = serde_json::from_str(bad).unwrap();
        assert_eq!(b.bytes.len(), MAX_READ_BUCKETS as usize);
        assert_eq!(b.total_bytes(), 0);
    }

    #[test]
    fn add_rebuckets_onto_a_wider_series() {
        let mut a = Series::new(T0, T0 + 60 * SEC);
        a.record(T0 + SEC, T0 + 30 * SEC, 2900);
        let mut b = Series::new(T0 + 30 * SEC, T0 + 45 * SEC);
        b.record(T0 + 31 * SEC, T0 + 31 * SEC, 5);
        let mut c = Series::new(T0, T0 + 3600 * SEC); // 2 min buckets
        c.add(&a);
        c.add(&b);
        assert_eq!(c.bytes[0], 2905);
        assert_eq!(c.flows[0], 2);
        assert_eq!(c.total_bytes(), a.total_bytes() + b.total_bytes());
        // An old report without a series adds nothing.
        c.add(&Series::default());
        assert_eq!(c.total_bytes(), 2905);
    }
}
