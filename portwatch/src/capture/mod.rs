//! Capture backends: the seam between the outside world (kernel maps, libpcap, capture files)
//! and the observation model. Backends only produce [`Snapshot`]s; they never consult the spec.
pub mod decode;
#[cfg(target_os = "linux")]
pub mod ebpf;
pub mod fake;
pub mod file;
pub mod pcap;
#[doc(hidden)]
pub mod testdata;

use crate::clock::UnixNanos;
use crate::flow::Snapshot;

/// Which backend produced the observations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// TC programs in the kernel (Linux).
    Ebpf,
    /// libpcap on live interfaces.
    Pcap,
    /// A capture file read offline.
    File,
    /// A scripted fake (tests).
    Fake,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ebpf => "ebpf",
            Self::Pcap => "pcap",
            Self::File => "file",
            Self::Fake => "fake",
        })
    }
}

/// A live source of observations, polled once per interval by the agent.
pub trait Backend: Send {
    /// Which kind of backend this is.
    fn kind(&self) -> BackendKind;
    /// Ends the current interval at `now` and returns everything observed since the previous
    /// call (deltas: nothing is returned twice, nothing is lost between calls).
    fn collect(
        &mut self,
        now: UnixNanos,
    ) -> Result<Snapshot, Box<dyn std::error::Error + Send + Sync>>;
    /// Attaches to interfaces that appeared since the last call; returns their names.
    fn refresh_interfaces(
        &mut self,
    ) -> Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Vec::new())
    }
    /// The interfaces observed now.
    fn interfaces(&self) -> Vec<String>;
    /// Where the backend stands after the last [`Backend::collect`], encoded (the eBPF
    /// backend's baseline of the kernel's cumulative counters), for the history to store in the
    /// same transaction as that interval; `None` for a backend that keeps no position.
    fn checkpoint(&self) -> Option<&[u8]> {
        None
    }
    /// Persists the position of the last [`Backend::collect`] in the backend's own store. The
    /// agent calls it once every sink had the interval: a crash before it makes the next agent
    /// report the interval again (unless the history already stored it with its checkpoint),
    /// so no interval is lost between the kernel and the history.
    fn commit(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }
}
