//! Classification: holds observed flows, per-port totals and listeners against the spec and
//! inventory and produces findings. PURE: no clock, no I/O, no logging; everything it needs
//! arrives in [`ClassifyInput`].
pub mod direction;
pub mod findings;
mod wellknown;

pub use direction::{DirectionContext, Evidence, Orientation, Role, UnknownReason, orient};
