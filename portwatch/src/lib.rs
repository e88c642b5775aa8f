//! portwatch: holds a node's observed traffic against a vendor's port documentation.
//! The library owns every stage (capture, flow table, classify, report); the binary is a thin
//! adapter over it.

pub mod agent;
pub mod alloc_stats;
pub mod capture;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod config;
pub mod flow;
pub mod host;
pub mod inventory;
pub mod metrics;
pub mod netif;
pub mod report;
pub mod spec;
pub mod store;
