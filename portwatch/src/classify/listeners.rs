//! Listening sockets judged against the spec on their own, without traffic (what
//! `portwatch listeners` shows). Pure; the same rules as the listener findings of
//! [`super::classify`].
use std::fmt;

use serde::{Deserialize, Serialize};

use super::engine::{Ctx, Judged};
use super::findings::EntryRef;
use super::{ClassifyInput, NodeInfo};
use crate::flow::Snapshot;
use crate::host::{Listener, PortRange};
use crate::spec::Spec;

/// How a listener stands against the spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum ListenerVerdict {
    /// Inbound entries cover it (and name its owner, or name no process).
    Documented { entries: Vec<EntryRef> },
    /// Inbound entries cover it but name another process than its owner.
    ProcessMismatch {
        entries: Vec<EntryRef>,
        expected: Vec<String>,
    },
    /// No inbound entry covers it.
    Undocumented,
    /// Bound to loopback only: not reachable from the network.
    LoopbackOnly,
    /// An unconnected UDP socket in the ephemeral range: a client's socket.
    EphemeralUdp,
}

impl ListenerVerdict {
    /// Whether the verdict is worth an exit status of 1.
    pub fn is_problem(&self) -> bool {
        matches!(self, Self::Undocumented | Self::ProcessMismatch { .. })
    }
}

impl fmt::Display for ListenerVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids = |v: &[EntryRef]| {
            v.iter()
                .map(|e| e.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Self::Documented { entries } => write!(f, "documented ({})", ids(entries)),
            Self::ProcessMismatch { entries, expected } => write!(
                f,
                "process mismatch ({}: spec names {})",
                ids(entries),
                expected.join(", ")
            ),
            Self::Undocumented => f.write_str("undocumented"),
            Self::LoopbackOnly => f.write_str("loopback only"),
            Self::EphemeralUdp => f.write_str("ephemeral udp (client socket)"),
        }
    }
}

/// A listener and its verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgedListener {
    pub listener: Listener,
    #[serde(flatten)]
    pub verdict: ListenerVerdict,
}

/// Judges every listener (in the order given).
pub fn judge_listeners(
    spec: &Spec,
    listeners: &[Listener],
    ephemeral: PortRange,
) -> Vec<JudgedListener> {
    let window = Snapshot::default();
    let node = NodeInfo::default();
    let input = ClassifyInput {
        spec,
        inventory: None,
        window: &window,
        listeners: Some(listeners),
        connections: None,
        ephemeral,
        node: &node,
    };
    let ctx = Ctx::new(&input);
    listeners
        .iter()
        .map(|l| {
            let verdict = match ctx.judge(l) {
                Judged::LoopbackOnly => ListenerVerdict::LoopbackOnly,
                Judged::EphemeralUdp => ListenerVerdict::EphemeralUdp,
                Judged::Undocumented => ListenerVerdict::Undocumented,
                Judged::Documented { matching, mismatch } => {
                    let entries = matching.iter().map(|r| r.r.clone()).collect();
                    match mismatch {
                        Some(r) => ListenerVerdict::ProcessMismatch {
                            entries,
                            expected: r.e.processes.clone(),
                        },
                        None => ListenerVerdict::Documented { entries },
                    }
                }
            };
            JudgedListener {
                listener: l.clone(),
                verdict,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::tests::{listener, spec};
    use crate::flow::Transport;

    #[test]
    fn every_verdict() {
        let ls = [
            listener(Transport::Tcp, "0.0.0.0", 22, Some("sshd")),
            listener(Transport::Tcp, "::", 31112, Some("java")),
            listener(Transport::Tcp, "0.0.0.0", 9999, None),
            listener(Transport::Tcp, "127.0.0.1", 9998, None),
            listener(Transport::Udp, "0.0.0.0", 50000, None),
            listener(Transport::Tcp, "::ffff:127.0.0.1", 9997, None),
        ];
        let v: Vec<String> = judge_listeners(&spec(), &ls, PortRange::LINUX_DEFAULT)
            .iter()
            .map(|j| j.verdict.to_string())
            .collect();
        assert_eq!(
            v,
            [
                "documented (ssh)",
                "process mismatch (oxygen-in: spec names Sisense.Oxygen.exe)",
                "undocumented",
                "loopback only",
                "ephemeral udp (client socket)",
                "loopback only",
            ]
        );
    }
}
