//! The cluster view: node reports merged into one. A documented entry is unused only if it is
//! unused on every node; undocumented traffic, violations and listener findings stay listed
//! per node; per-service distributions are merged exactly. Pure.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::model::{Generator, Report, SpecInfo, TimeWindow, Timestamp};
use crate::classify::{EntryRef, Finding, FindingKind, Recorder, Series, ServiceStats, Traffic};

/// The `schema` field of a cluster report.
pub const CLUSTER_SCHEMA: &str = "portwatch.cluster-report";
/// The cluster schema version this build writes.
pub const CLUSTER_SCHEMA_VERSION: u32 = 1;

/// Several nodes' reports merged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterReport {
    pub schema: String,
    pub schema_version: u32,
    pub generator: Generator,
    /// The latest `generated` of the node reports.
    pub generated: Timestamp,
    /// From the earliest node window start to the latest end.
    pub window: TimeWindow,
    pub spec: SpecInfo,
    /// One line per node, sorted by name.
    pub nodes: Vec<NodeLine>,
    /// Entries unused on every node: the cluster's candidates for closing.
    pub unused: Vec<EntryRef>,
    /// Inbound entries with nothing listening on any node that examined its listeners.
    pub not_listening_anywhere: Vec<EntryRef>,
    /// Every entry some node reported on, with where it was used.
    pub entries: Vec<EntryUsage>,
    /// Findings of each kind summed over nodes (documented and unused excluded: see
    /// `entries` and `unused`).
    pub kinds: BTreeMap<String, u64>,
    /// Every node's findings except documented and unused, sorted by kind then node.
    pub findings: Vec<NodeFinding>,
    /// Per-service distributions over all nodes.
    pub services: Vec<ServiceStats>,
}

/// One node in a cluster report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLine {
    pub name: String,
    pub window: TimeWindow,
    pub flows: u64,
    pub flows_approximate: bool,
    pub listeners_examined: bool,
    pub kinds: BTreeMap<String, u64>,
}

/// Where an entry was used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryUsage {
    pub entry: EntryRef,
    pub used_on: Vec<String>,
    pub unused_on: Vec<String>,
    /// Nodes whose report does not say (usage unknown because flow detail overflowed).
    pub unknown_on: Vec<String>,
    /// Ports of the entry (as in `unused_ports` findings) that no node using the entry saw
    /// traffic on; empty when some node's usage is unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unused_ports: Vec<String>,
    /// Documented traffic summed over nodes.
    pub traffic: Traffic,
}

/// A finding and the node it was seen on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFinding {
    pub node: String,
    #[serde(flatten)]
    pub finding: Finding,
}

/// Why reports could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("nothing to merge: expected at least one report")]
    Empty,
    #[error(
        "report for node {node:?} was built against spec {found:?}, the others against {expected:?}: merge reports of one spec"
    )]
    SpecMismatch {
        node: String,
        expected: String,
        found: String,
    },
    #[error(
        "two reports for node {node:?}: expected one report per node (merge a node's windows before reporting)"
    )]
    DuplicateNode { node: String },
    #[error("service {service:?} on node {node:?}: {source}")]
    Distribution {
        service: String,
        node: String,
        #[source]
        source: crate::classify::DistributionError,
    },
}

#[derive(Default)]
struct Usage {
    entry: Option<EntryRef>,
    used: BTreeSet<String>,
    unused: BTreeSet<String>,
    traffic: Traffic,
    not_listening: BTreeSet<String>,
    /// Per node that used the entry, its `unused_ports`.
    unused_ports: BTreeMap<String, Vec<String>>,
}

fn touch<'a>(usage: &'a mut BTreeMap<String, Usage>, e: &EntryRef) -> &'a mut Usage {
    let u = usage.entry(e.id.clone()).or_default();
    u.entry.get_or_insert_with(|| e.clone());
    u
}

/// Merges node reports into the cluster view.
pub fn merge(reports: &[Report]) -> Result<ClusterReport, MergeError> {
    let first = reports.first().ok_or(MergeError::Empty)?;
    let mut names = BTreeSet::new();
    for r in reports {
        if r.spec.name != first.spec.name {
            return Err(MergeError::SpecMismatch {
                node: r.node.name.clone(),
                expected: first.spec.name.clone(),
                found: r.spec.name.clone(),
            });
        }
        if !names.insert(r.node.name.clone()) {
            return Err(MergeError::DuplicateNode {
                node: r.node.name.clone(),
            });
        }
    }
    let mut sorted: Vec<&Report> = reports.iter().collect();
    sorted.sort_by(|a, b| a.node.name.cmp(&b.node.name));

    let mut usage: BTreeMap<String, Usage> = BTreeMap::new();
    let mut findings = Vec::new();
    let mut kinds: BTreeMap<String, u64> = FindingKind::NAMES
        .iter()
        .filter(|k| !matches!(**k, "documented" | "unused"))
        .map(|k| ((*k).to_owned(), 0))
        .collect();
    let mut services: BTreeMap<String, (BTreeSet<String>, Recorder, Recorder, Series)> =
        BTreeMap::new();
    let span = (
        sorted.iter().map(|r| r.window.start.unix_ns).min(),
        sorted.iter().map(|r| r.window.end.unix_ns).max(),
    );
    let cluster_series = || Series::new(span.0.unwrap_or(0), span.1.unwrap_or(0));
    let mut nodes = Vec::new();
    let listening_nodes: BTreeSet<&str> = sorted
        .iter()
        .filter(|r| r.summary.listeners.is_some())
        .map(|r| r.node.name.as_str())
        .collect();
    for r in &sorted {
        let node = &r.node.name;
        nodes.push(NodeLine {
            name: node.clone(),
            window: r.window.clone(),
            flows: r.summary.flows.total,
            flows_approximate: r.summary.flows_approximate,
            listeners_examined: r.summary.listeners.is_some(),
            kinds: r.summary.kinds.clone(),
        });
        for f in &r.findings {
            match &f.kind {
                FindingKind::Documented | FindingKind::PeerOutsideZone { .. } => {
                    if let Some(e) = &f.entry {
                        let u = touch(&mut usage, e);
                        u.used.insert(node.clone());
                        u.traffic.add(&f.traffic);
                    }
                }
                FindingKind::UnknownDirection { candidates, .. } => {
                    for c in candidates {
                        touch(&mut usage, c).used.insert(node.clone());
                    }
                }
                FindingKind::Unused { .. } => {
                    if let Some(e) = &f.entry {
                        touch(&mut usage, e).unused.insert(node.clone());
                    }
                }
                FindingKind::NotListening { .. } => {
                    if let Some(e) = &f.entry {
                        touch(&mut usage, e).not_listening.insert(node.clone());
                    }
                }
                FindingKind::UnusedPorts { ports } => {
                    if let Some(e) = &f.entry {
                        let u = touch(&mut usage, e);
                        u.unused_ports.insert(node.clone(), ports.clone());
                    }
                }
                _ => {}
            }
            if !matches!(f.kind, FindingKind::Documented | FindingKind::Unused { .. }) {
                *kinds.entry(f.kind.name().to_owned()).or_default() += 1;
                findings.push(NodeFinding {
                    node: node.clone(),
                    finding: f.clone(),
                });
            }
        }
        for s in &r.services {
            let e = services.entry(s.service.clone()).or_insert_with(|| {
                (
                    BTreeSet::new(),
                    Recorder::new(),
                    Recorder::new(),
                    cluster_series(),
                )
            });
            e.3.add(&s.series);
            e.0.extend(s.entries.iter().cloned());
            let err = |source| MergeError::Distribution {
                service: s.service.clone(),
                node: node.clone(),
                source,
            };
            e.1.merge(&s.duration_us).map_err(err)?;
            e.2.merge(&s.bytes).map_err(err)?;
        }
    }
    findings.sort_by(|a, b| {
        a.finding
            .kind
            .rank()
            .cmp(&b.finding.kind.rank())
            .then_with(|| a.node.cmp(&b.node))
            .then_with(|| a.finding.sort_key().cmp(&b.finding.sort_key()))
    });
    let all: Vec<String> = sorted.iter().map(|r| r.node.name.clone()).collect();
    let mut entries = Vec::new();
    let mut unused = Vec::new();
    let mut not_listening_anywhere = Vec::new();
    for (_, u) in usage {
        let Some(entry) = u.entry else { continue };
        if u.used.is_empty() && u.unused.len() == all.len() {
            unused.push(entry.clone());
        }
        if !listening_nodes.is_empty()
            && listening_nodes.iter().all(|n| u.not_listening.contains(*n))
        {
            not_listening_anywhere.push(entry.clone());
        }
        if u.used.is_empty() && u.unused.is_empty() {
            continue; // only a listener finding named it
        }
        let unknown_on: Vec<String> = all
            .iter()
            .filter(|n| !u.used.contains(*n) && !u.unused.contains(*n))
            .cloned()
            .collect();
        // Unused where the entry was used: on every such node (a node without the finding
        // used every port), and only when no node's usage is unknown.
        let unused_ports = if unknown_on.is_empty() {
            let mut lists = u.used.iter().map(|n| u.unused_ports.get(n));
            let first = lists.next().flatten().cloned().unwrap_or_default();
            lists.fold(first, |acc, l| {
                let l = l.map(Vec::as_slice).unwrap_or_default();
                acc.into_iter().filter(|p| l.contains(p)).collect()
            })
        } else {
            Vec::new()
        };
        entries.push(EntryUsage {
            entry,
            used_on: u.used.into_iter().collect(),
            unused_on: u.unused.into_iter().collect(),
            unknown_on,
            unused_ports,
            traffic: u.traffic,
        });
    }
    let start = sorted.iter().map(|r| &r.window.start).min().cloned();
    let end = sorted.iter().map(|r| &r.window.end).max().cloned();
    let generated = sorted.iter().map(|r| &r.generated).max().cloned();
    Ok(ClusterReport {
        schema: CLUSTER_SCHEMA.to_owned(),
        schema_version: CLUSTER_SCHEMA_VERSION,
        generator: Generator::default(),
        generated: generated.unwrap_or_default(),
        window: TimeWindow {
            start: start.unwrap_or_default(),
            end: end.unwrap_or_default(),
        },
        spec: SpecInfo {
            path: String::new(),
            ..first.spec.clone()
        },
        nodes,
        unused,
        not_listening_anywhere,
        entries,
        kinds,
        findings,
        services: services
            .into_iter()
            .map(|(service, (ids, d, b, series))| ServiceStats {
                service,
                entries: ids.into_iter().collect(),
                duration_us: d.finish(),
                bytes: b.finish(),
                series,
            })
            .collect(),
    })
}
