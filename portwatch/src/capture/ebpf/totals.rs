//! The kernel's per-port counters as userspace holds them: one vector sorted by key (the
//! reading and the persisted baseline are both of this type, so deltas are a merge join).
use portwatch_common::{PortCounters, PortKey};

/// Per-port counters by key, held as one vector sorted by (protocol, port, side, direction):
/// 64 bytes a key, half what a hash map of the same keys takes once the kernel's per-port table
/// fills up (65,537 keys under a flood of source ports need 131,072 hash buckets). The reading
/// and the baseline are both of this type, so the deltas are a merge join.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PortTotals(Vec<(PortKey, PortCounters)>);

/// The vector's sort key.
pub(crate) fn order(k: &PortKey) -> (u8, u16, u8, u8) {
    (k.proto, k.port, k.side, k.dir)
}

/// Sorts `v[from..]` by key and sums the counters of a key given more than once into one
/// entry (`v[..from]` is left as it is).
pub(crate) fn sort_and_sum(v: &mut Vec<(PortKey, PortCounters)>, from: usize) {
    let run = v.get_mut(from..).unwrap_or_default();
    run.sort_unstable_by_key(|(k, _)| order(k));
    let mut kept = from;
    for i in from..v.len() {
        if kept > from && v[kept - 1].0 == v[i].0 {
            let add = v[i].1;
            v[kept - 1].1.add(&add);
        } else {
            v.swap(kept, i);
            kept += 1;
        }
    }
    v.truncate(kept);
}

impl PortTotals {
    /// From entries in any order; the counters of a key given more than once are summed.
    pub(crate) fn from_sums(mut v: Vec<(PortKey, PortCounters)>) -> Self {
        sort_and_sum(&mut v, 0);
        v.shrink_to_fit();
        Self(v)
    }

    /// Sets the counters of `k`.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, k: PortKey, c: PortCounters) {
        match self.0.binary_search_by_key(&order(&k), |(x, _)| order(x)) {
            Ok(i) => self.0[i].1 = c,
            Err(i) => self.0.insert(i, (k, c)),
        }
    }

    /// The counters of `k`.
    pub(crate) fn get(&self, k: &PortKey) -> Option<&PortCounters> {
        self.0
            .binary_search_by_key(&order(k), |(x, _)| order(x))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no keys.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &(PortKey, PortCounters)> {
        self.0.iter()
    }
}

impl std::ops::Index<&PortKey> for PortTotals {
    type Output = PortCounters;
    fn index(&self, k: &PortKey) -> &PortCounters {
        self.get(k).expect("no such port key")
    }
}
