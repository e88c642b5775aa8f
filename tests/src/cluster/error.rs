//! The cluster scenario's one error type. Each message names the object, what was expected and
//! what was found, and points at the log that explains it.
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::lab::Host;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "the cluster scenario needs root (running as uid {uid}): it creates network namespaces, a bridge and veth pairs, and starts daemons bound inside them; run it with `sudo -E`"
    )]
    NotRoot { uid: u32 },
    #[error(
        "missing tools: {missing} (run `cargo xtask setup`, which installs the Debian packages)"
    )]
    MissingTools { missing: String },
    #[error("`{command}` could not be started")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` exited with {status}, expected success; its output:\n{output}")]
    Failed {
        command: String,
        status: String,
        output: String,
    },
    #[error("`{command}` succeeded but its output lacks {expected:?}; its output:\n{output}")]
    UnexpectedOutput {
        command: String,
        expected: String,
        output: String,
    },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{service} on {host} was not ready within {waited:?} ({check}); last lines of {log}:\n{tail}"
    )]
    NotReady {
        service: &'static str,
        host: Host,
        check: String,
        waited: Duration,
        log: PathBuf,
        tail: String,
    },
    #[error("{service} on {host} exited while starting ({status}); last lines of {log}:\n{tail}")]
    Exited {
        service: &'static str,
        host: Host,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("could not enter network namespace {ns}")]
    Setns {
        ns: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "tshark's statistics for {pcap}: expected a table for `{filter}`, found none or an unreadable one"
    )]
    Oracle { pcap: PathBuf, filter: String },
    #[error("tcpdump on {host} lost packets: {detail}")]
    CaptureLoss { host: Host, detail: String },
    #[error("the scenario was interrupted by a signal")]
    Interrupted,
}

pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// Wraps an I/O error with what we were doing and on which path.
pub(crate) fn io_err(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> ClusterError {
    let path = path.into();
    move |source| ClusterError::Io { what, path, source }
}
