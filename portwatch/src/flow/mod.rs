//! The observation model every backend produces (flow keys, per-port totals, health counters)
//! and the bounded userspace flow table. No I/O, no spec, no clock reads.
mod hugevec;
pub mod key;
pub mod table;
pub mod window;

pub use key::{
    Counts, Direction, Endpoint, FlowKey, FlowRecord, FlowStats, PortCounts, PortTotal, Side,
    TcpFlags, Transport,
};
pub use table::{DST_V6, FlowTable, Health, Packet, PacketMeta, SRC_V6, Snapshot};
pub use window::Window;

/// For randomised tests: a xorshift generator seeded with `seed` (non-zero) that returns a
/// number below `n` per call.
#[cfg(test)]
pub(crate) fn xorshift(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut rng = seed;
    move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    }
}
