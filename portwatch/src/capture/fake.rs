//! A scripted backend for tests: hands out prepared snapshots in order.
use std::collections::VecDeque;

use super::{Backend, BackendKind};
use crate::clock::UnixNanos;
use crate::flow::Snapshot;

/// Returns the scripted snapshots one per `collect`, then empty intervals.
#[derive(Debug, Default)]
pub struct FakeBackend {
    script: VecDeque<Snapshot>,
    last_end: UnixNanos,
}

impl FakeBackend {
    /// A fake that will return `script` in order.
    pub fn new(script: impl IntoIterator<Item = Snapshot>) -> Self {
        Self {
            script: script.into_iter().collect(),
            last_end: 0,
        }
    }
}

impl Backend for FakeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Fake
    }

    fn collect(
        &mut self,
        now: UnixNanos,
    ) -> Result<Snapshot, Box<dyn std::error::Error + Send + Sync>> {
        let mut s = self.script.pop_front().unwrap_or_default();
        s.start = self.last_end;
        s.end = now;
        self.last_end = now;
        Ok(s)
    }

    fn interfaces(&self) -> Vec<String> {
        vec!["fake0".to_owned()]
    }
}
