//! The observation model every backend produces (flow keys, per-port totals, health counters)
//! and the bounded userspace flow table. No I/O, no spec, no clock reads.
pub mod key;
pub mod table;
pub mod window;

pub use key::{
    Counts, Direction, Endpoint, FlowKey, FlowRecord, FlowStats, PortCounts, PortTotal, Side,
    TcpFlags, Transport,
};
pub use table::{DST_V6, FlowTable, Health, Packet, PacketMeta, SRC_V6, Snapshot};
pub use window::Window;
