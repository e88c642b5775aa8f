//! The only place that reads time. Everything else receives a [`Clock`] so tests can script it.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (UTC).
pub type UnixNanos = u64;

/// A source of wall-clock time.
pub trait Clock: Send + Sync {
    /// Now, as nanoseconds since the Unix epoch.
    fn now(&self) -> UnixNanos;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixNanos {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Default)]
pub struct FakeClock(AtomicU64);

impl FakeClock {
    /// A fake clock standing at `t`.
    pub fn new(t: UnixNanos) -> Self {
        Self(AtomicU64::new(t))
    }
    /// Moves the clock forward by `d` nanoseconds.
    pub fn advance(&self, d: u64) {
        self.0.fetch_add(d, Ordering::SeqCst);
    }
    /// Sets the clock to `t`.
    pub fn set(&self, t: UnixNanos) {
        self.0.store(t, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> UnixNanos {
        self.0.load(Ordering::SeqCst)
    }
}

/// Kernel monotonic (CLOCK_MONOTONIC/BOOTTIME) to wall-clock conversion, captured once.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicOffset {
    /// wall - monotonic, in nanoseconds.
    pub offset: i128,
}

impl MonotonicOffset {
    /// Reads both clocks now (Linux: CLOCK_MONOTONIC, which bpf_ktime_get_ns uses).
    pub fn capture() -> Self {
        let wall = SystemClock.now() as i128;
        let mono = monotonic_ns() as i128;
        Self {
            offset: wall - mono,
        }
    }
    /// Converts a kernel monotonic timestamp to Unix nanoseconds.
    pub fn to_unix(&self, mono_ns: u64) -> UnixNanos {
        (mono_ns as i128 + self.offset).max(0) as u64
    }
}

/// CLOCK_MONOTONIC in nanoseconds (0 where unavailable).
pub fn monotonic_ns() -> u64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        if rc == 0 {
            return ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        }
        0
    }
    #[cfg(not(unix))]
    {
        0
    }
}
