//! The report data: one node's findings over one window plus what produced them, as a
//! versioned, self-contained document (schema in docs/report.md). Building a report is pure;
//! reading one back checks the schema version.
use std::fmt;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::classify::{
    ClassifyInput, EntryRef, Finding, Findings, NodeInfo, ServiceStats, Summary, classify,
    entry_ref,
};
use crate::clock::UnixNanos;
use crate::flow::Health;
use crate::host::PortRange;

/// The `schema` field of a node report.
pub const SCHEMA: &str = "portwatch.report";
/// The schema version this build writes. Readers accept this version and older ones they know.
pub const SCHEMA_VERSION: u32 = 1;

/// One node's report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub schema_version: u32,
    pub generator: Generator,
    /// When the report was built (from the injected clock).
    pub generated: Timestamp,
    pub node: NodeInfo,
    pub window: TimeWindow,
    pub spec: SpecInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<InventoryInfo>,
    pub capture: CaptureInfo,
    /// The node's ephemeral range used for direction inference.
    pub ephemeral: PortRange,
    /// Loss and health counters for the window.
    pub health: Health,
    pub summary: Summary,
    pub findings: Vec<Finding>,
    pub services: Vec<ServiceStats>,
}

/// Which program wrote the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generator {
    pub name: String,
    pub version: String,
}

impl Default for Generator {
    fn default() -> Self {
        Self {
            name: "portwatch".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// A point in time: Unix nanoseconds and the same instant as RFC 3339 UTC.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp {
    pub unix_ns: UnixNanos,
    pub utc: String,
}

impl Timestamp {
    pub fn new(unix_ns: UnixNanos) -> Self {
        Self {
            unix_ns,
            utc: rfc3339(unix_ns),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.utc)
    }
}

/// The observation window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeWindow {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// The spec the traffic was held against.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecInfo {
    pub name: String,
    pub path: String,
    pub vendor: String,
    pub product: String,
    pub entries: u64,
    /// Every entry of the spec in file order (id, service, ports, file and line), so a report
    /// can show the entries no finding names. Empty in reports written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry_list: Vec<EntryRef>,
}

/// The inventory used for zones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryInfo {
    pub name: String,
    pub path: String,
}

/// Where the observations came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureInfo {
    /// ebpf, pcap, file, fake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// Why listening sockets were not examined, when they were not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listeners_unavailable: Option<String>,
}

/// What a report needs besides the classification input.
#[derive(Clone, Debug, Default)]
pub struct ReportMeta {
    /// Now, from the caller's clock.
    pub generated_at: UnixNanos,
    pub capture: CaptureInfo,
}

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{source_name}: not a portwatch report: {source}")]
    Json {
        source_name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{source_name}: expected schema {expected:?}, found {found:?}")]
    Schema {
        source_name: String,
        expected: &'static str,
        found: String,
    },
    #[error(
        "{source_name}: schema version {found} is newer than this portwatch reads (up to {supported}); upgrade portwatch"
    )]
    Version {
        source_name: String,
        found: u32,
        supported: u32,
    },
    #[error("cannot read report {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Report {
    /// Builds the report from a classification's input and result. Pure.
    pub fn build(input: &ClassifyInput<'_>, findings: Findings, meta: ReportMeta) -> Report {
        let spec = input.spec;
        Report {
            schema: SCHEMA.to_owned(),
            schema_version: SCHEMA_VERSION,
            generator: Generator::default(),
            generated: Timestamp::new(meta.generated_at),
            node: input.node.clone(),
            window: TimeWindow {
                start: Timestamp::new(input.window.start),
                end: Timestamp::new(input.window.end),
            },
            spec: SpecInfo {
                name: spec.name.clone(),
                path: spec.path.display().to_string(),
                vendor: spec.document.vendor.clone(),
                product: spec.document.product.clone(),
                entries: spec.entries.len() as u64,
                entry_list: spec.entries.iter().map(entry_ref).collect(),
            },
            inventory: input.inventory.map(|i| InventoryInfo {
                name: i.name.clone(),
                path: i.path.display().to_string(),
            }),
            capture: meta.capture,
            ephemeral: input.ephemeral,
            health: input.window.health,
            summary: findings.summary,
            findings: findings.findings,
            services: findings.services,
        }
    }

    /// Classifies and builds the report in one call (what the agent and `analyze` use).
    pub fn analyze(input: &ClassifyInput<'_>, meta: ReportMeta) -> Report {
        Self::build(input, classify(input), meta)
    }

    /// Reads a JSON report; `source_name` names it in errors.
    pub fn from_json(r: impl Read, source_name: &str) -> Result<Report, ReportError> {
        let v: serde_json::Value =
            serde_json::from_reader(r).map_err(|source| ReportError::Json {
                source_name: source_name.to_owned(),
                source,
            })?;
        let schema = v.get("schema").and_then(|s| s.as_str()).unwrap_or_default();
        if schema != SCHEMA {
            return Err(ReportError::Schema {
                source_name: source_name.to_owned(),
                expected: SCHEMA,
                found: schema.to_owned(),
            });
        }
        let version = v
            .get("schema_version")
            .and_then(|s| s.as_u64())
            .unwrap_or(0) as u32;
        if version > SCHEMA_VERSION {
            return Err(ReportError::Version {
                source_name: source_name.to_owned(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        serde_json::from_value(v).map_err(|source| ReportError::Json {
            source_name: source_name.to_owned(),
            source,
        })
    }

    /// Reads a JSON report from a file.
    pub fn load(path: &std::path::Path) -> Result<Report, ReportError> {
        let f = std::fs::File::open(path).map_err(|source| ReportError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(std::io::BufReader::new(f), &path.display().to_string())
    }

    /// Whether the report holds findings worth an exit status of 1 (violations or warnings).
    pub fn has_problems(&self) -> bool {
        self.findings.iter().any(|f| {
            matches!(
                f.severity,
                crate::classify::Severity::Violation | crate::classify::Severity::Warning
            )
        })
    }
}

/// Unix nanoseconds as RFC 3339 UTC with second precision (`2026-05-01T12:00:00Z`).
pub fn rfc3339(unix_ns: UnixNanos) -> String {
    let secs = unix_ns / 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400 * 1_000_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339(1_767_225_599 * 1_000_000_000 + 999_999_999),
            "2025-12-31T23:59:59Z"
        );
        assert_eq!(
            rfc3339(4_102_444_800 * 1_000_000_000),
            "2100-01-01T00:00:00Z"
        );
    }
}
