//! Helpers for portwatch's privileged end-to-end tests: throw-away network namespaces behind
//! RAII guards, the agent binary's location, and real traffic generators.
pub mod cluster;
