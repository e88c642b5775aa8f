//! JSON rendering: the report model serialised as is (pretty, trailing newline). The field
//! order is the model's declaration order, so output is deterministic.
use std::io::{self, Write};

use super::{ClusterReport, Report};

/// Writes the report as pretty JSON.
pub fn render(report: &Report, w: &mut impl Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, report).map_err(io::Error::other)?;
    w.write_all(b"\n")
}

/// Writes the cluster report as pretty JSON.
pub fn render_cluster(report: &ClusterReport, w: &mut impl Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, report).map_err(io::Error::other)?;
    w.write_all(b"\n")
}
