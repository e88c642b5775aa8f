//! The lossless per-port totals as classification reads them: sorted, searched by port
//! range, and which of an entry's ports saw traffic.
use super::*;

/// Lossless per-port totals by (transport, port, side), sorted by key (a window's totals hold
/// a key per remote port seen, often tens of thousands: a sorted vector, searched by range).
pub(super) struct PortTotals {
    pub(super) v: Vec<((Transport, u16, Side), PortCountsInOut)>,
    /// The transports present, with where each one's keys are in `v`.
    pub(super) runs: Vec<(Transport, std::ops::Range<usize>)>,
}

impl PortTotals {
    /// The totals of one transport's `run` whose port is in `range`.
    pub(super) fn in_range(
        &self,
        run: &std::ops::Range<usize>,
        range: PortRange,
    ) -> &[((Transport, u16, Side), PortCountsInOut)] {
        let keys = &self.v[run.clone()];
        let lo = keys.partition_point(|e| e.0.1 < range.start);
        let hi = keys.partition_point(|e| e.0.1 <= range.end);
        &keys[lo..hi]
    }

    pub(super) fn get(&self, k: &(Transport, u16, Side)) -> Option<&PortCountsInOut> {
        self.v
            .binary_search_by_key(k, |e| e.0)
            .ok()
            .map(|i| &self.v[i].1)
    }
}

pub(super) fn port_totals(input: &ClassifyInput<'_>) -> PortTotals {
    let mut v: Vec<((Transport, u16, Side), PortCountsInOut)> = input
        .window
        .ports
        .iter()
        .map(|p| {
            let c = match p.dir {
                Direction::In => PortCountsInOut {
                    packets_in: p.counts.packets,
                    bytes_in: p.counts.bytes,
                    ..Default::default()
                },
                Direction::Out => PortCountsInOut {
                    packets_out: p.counts.packets,
                    bytes_out: p.counts.bytes,
                    ..Default::default()
                },
            };
            ((p.transport, p.port, p.side), c)
        })
        .collect();
    // Snapshots list their ports sorted: this sort only checks.
    v.sort_by_key(|e| e.0);
    v.dedup_by(|b, a| {
        if a.0 == b.0 {
            a.1.add(&b.1);
            true
        } else {
            false
        }
    });
    let mut runs: Vec<(Transport, std::ops::Range<usize>)> = Vec::new();
    for (i, e) in v.iter().enumerate() {
        match runs.last_mut() {
            Some((t, r)) if *t == e.0.0 => r.end = i + 1,
            _ => runs.push((e.0.0, i..i + 1)),
        }
    }
    PortTotals { v, runs }
}

/// Whether the lossless per-port totals show packets on the entry's ports on the side the
/// entry would serve from.
/// The pieces of a used entry's ports (single ports, ranges, labelled variants' ports) that
/// `seen` says no traffic went to, as the spec writes them. A range is used when any port in it
/// is. Entries with a single piece, or without ports, have nothing to add to "used".
pub(super) fn unused_ports(r: &Rule<'_>, seen: impl Fn(PortRange) -> bool) -> Vec<String> {
    let groups = r.e.ports.groups();
    let pieces: usize = groups.iter().map(|(_, s)| s.ranges().len()).sum();
    if pieces < 2 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (label, set) in groups {
        for range in set.ranges() {
            if seen(*range) {
                continue;
            }
            out.push(match label {
                Some(l) => format!("{range} ({l})"),
                None => range.to_string(),
            });
        }
    }
    out.dedup();
    out
}

/// Whether the per-port totals show traffic on `range` that the entry could document (any
/// transport it admits, on the side its direction allows).
pub(super) fn totals_show_traffic_on(r: &Rule<'_>, totals: &PortTotals, range: PortRange) -> bool {
    totals.runs.iter().any(|(t, run)| {
        if !t.has_ports() || !r.admits(*t) {
            return false;
        }
        totals.in_range(run, range).iter().any(|e| shows_for(r, e))
    })
}

/// Whether one total has packets on the side `r` would serve from.
pub(super) fn shows_for(r: &Rule<'_>, e: &((Transport, u16, Side), PortCountsInOut)) -> bool {
    !e.1.is_zero()
        && match e.0.2 {
            Side::Local => r.allows(Role::Server),
            Side::Remote => r.allows(Role::Client),
        }
}

/// Whether the lossless per-port totals show packets on the entry's ports on the side the
/// entry would serve from.
pub(super) fn totals_show_traffic(r: &Rule<'_>, totals: &PortTotals) -> bool {
    if r.e.ports.is_none() {
        return totals.runs.iter().any(|(t, run)| {
            !t.has_ports() && r.admits(*t) && totals.v[run.clone()].iter().any(|e| shows_for(r, e))
        });
    }
    r.e.ports
        .iter_ranges()
        .any(|(_, range)| totals_show_traffic_on(r, totals, range))
}
