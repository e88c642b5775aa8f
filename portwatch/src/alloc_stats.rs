//! Heap accounting for finding where the agent's memory goes: with the `alloc-stats` feature
//! (off by default) a counting global allocator over the system one, and the heap peak of each
//! phase of an interval, which the agent logs with its timings. Owns nothing else; without the
//! feature [`Phases`] records nothing and costs nothing.
//!
//! ```sh
//! cargo build --release -p portwatch --features alloc-stats
//! ```

/// Heap peaks of the phases of one interval, in the order they were marked.
#[derive(Debug, Default)]
pub struct Phases {
    #[cfg(feature = "alloc-stats")]
    marks: Vec<(String, usize)>,
}

impl Phases {
    /// Starts a new series: the peaks from here on.
    pub fn start() -> Self {
        #[cfg(feature = "alloc-stats")]
        counting::reset_peak();
        Self::default()
    }

    /// Ends the phase `name`: records the heap's peak since the last mark (or the start).
    pub fn mark(&mut self, name: &str) {
        #[cfg(feature = "alloc-stats")]
        {
            let peak = counting::reset_peak();
            self.marks.push((name.to_owned(), peak));
        }
        #[cfg(not(feature = "alloc-stats"))]
        let _ = name;
    }

    /// "name X MB, ..." (heap bytes in use at each phase's peak), `None` without the feature.
    pub fn summary(&self) -> Option<String> {
        #[cfg(feature = "alloc-stats")]
        {
            let parts: Vec<String> = self
                .marks
                .iter()
                .map(|(n, b)| format!("{n} {:.1} MB", *b as f64 / 1e6))
                .collect();
            Some(parts.join(", "))
        }
        #[cfg(not(feature = "alloc-stats"))]
        None
    }
}

#[cfg(feature = "alloc-stats")]
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    static CURRENT: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    /// The peak since the last call; the new peak starts at what is in use now.
    pub(super) fn reset_peak() -> usize {
        PEAK.swap(CURRENT.load(Relaxed), Relaxed)
    }

    fn grew(by: usize) {
        let now = CURRENT.fetch_add(by, Relaxed) + by;
        PEAK.fetch_max(now, Relaxed);
    }

    struct Counting;

    // SAFETY: every call is forwarded to the system allocator unchanged; only sizes are counted.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            // SAFETY: the caller's contract is the system allocator's.
            let p = unsafe { System.alloc(l) };
            if !p.is_null() {
                grew(l.size());
            }
            p
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            // SAFETY: as above.
            let p = unsafe { System.alloc_zeroed(l) };
            if !p.is_null() {
                grew(l.size());
            }
            p
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            // SAFETY: as above.
            unsafe { System.dealloc(p, l) };
            CURRENT.fetch_sub(l.size(), Relaxed);
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            // SAFETY: as above.
            let q = unsafe { System.realloc(p, l, new) };
            if !q.is_null() {
                // The old block stays alive until the copy is made: count both for a moment.
                grew(new);
                CURRENT.fetch_sub(l.size(), Relaxed);
            }
            q
        }
    }

    #[global_allocator]
    static A: Counting = Counting;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(feature = "alloc-stats"))]
    #[test]
    fn without_the_feature_nothing_is_recorded() {
        let mut p = Phases::start();
        p.mark("a");
        assert_eq!(p.summary(), None);
    }

    #[cfg(feature = "alloc-stats")]
    #[test]
    fn a_phase_peak_includes_what_was_freed_before_its_end() {
        let mut p = Phases::start();
        let big = vec![1u8; 8_000_000];
        std::hint::black_box(&big);
        drop(big);
        p.mark("big");
        p.mark("quiet");
        let s = p.summary().expect("the feature is on");
        let mb = |name: &str| -> f64 {
            let part = s.split(", ").find(|x| x.starts_with(name)).expect(name);
            part.split(' ')
                .nth(1)
                .and_then(|v| v.parse().ok())
                .expect(part)
        };
        // The 8 MB block was alive during "big" (other tests may add to it, never take away).
        assert!(mb("big") >= 8.0, "{s}");
    }
}
