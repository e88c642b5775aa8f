//! Unknown-direction groups into findings: the biggest listed one by one, the rest summed.
use super::*;

/// An unknown-direction group waiting to become a finding.
pub(super) struct UnknownGroup<'p> {
    pub(super) transport: Transport,
    pub(super) remote: u16,
    pub(super) reason: UnknownReason,
    pub(super) g: Group,
    pub(super) peers: &'p [PeerStat],
    pub(super) peers_total: u64,
}

impl UnknownGroup<'_> {
    /// The finding's port: the local port, when the group saw exactly one.
    pub(super) fn port(&self) -> Option<u16> {
        self.g.ports.single()
    }

    pub(super) fn finding(
        self,
        by_idx: &BTreeMap<usize, &Rule<'_>>,
        totals: &PortTotals,
    ) -> Finding {
        let mut fd = Finding::new(FindingKind::UnknownDirection {
            reason: self.reason,
            remote_port: Some(self.remote),
            candidates: self
                .g
                .candidates
                .iter()
                .map(|i| by_idx[i].r.clone())
                .collect(),
        });
        fd.transport = Some(self.transport);
        fill_evidence(&mut fd, self.g, totals, Side::Local);
        fd.peers = self.peers.to_vec();
        fd.peers_total = self.peers_total;
        fd
    }
}

/// The unknown-direction findings: the [`MAX_UNKNOWN_GROUPS`] biggest groups (most bytes
/// first, then the report's order: transport, port; then group order) one by one, the rest
/// summed into one finding. Only the listed ones are built (a flood of distinct port pairs
/// makes a group per flow).
pub(super) fn unknown_findings(
    groups: Vec<UnknownGroup<'_>>,
    by_idx: &BTreeMap<usize, &Rule<'_>>,
    totals: &PortTotals,
) -> Vec<Finding> {
    if groups.len() <= MAX_UNKNOWN_GROUPS {
        return groups
            .into_iter()
            .map(|u| u.finding(by_idx, totals))
            .collect();
    }
    let mut order: Vec<(std::cmp::Reverse<u64>, Transport, Option<u16>, usize)> = groups
        .iter()
        .enumerate()
        .map(|(i, u)| {
            (
                std::cmp::Reverse(u.g.traffic.bytes()),
                u.transport,
                u.port(),
                i,
            )
        })
        .collect();
    order.select_nth_unstable(MAX_UNKNOWN_GROUPS);
    order.truncate(MAX_UNKNOWN_GROUPS);
    order.sort_unstable();
    let mut slot: Vec<Option<usize>> = vec![None; groups.len()];
    for (rank, o) in order.iter().enumerate() {
        slot[o.3] = Some(rank);
    }
    let mut listed: Vec<Option<Finding>> = (0..MAX_UNKNOWN_GROUPS).map(|_| None).collect();
    let mut sum = Finding::new(FindingKind::UnknownDirection {
        reason: UnknownReason::AmbiguousPorts,
        remote_port: None,
        candidates: Vec::new(),
    });
    let mut peers: BTreeSet<IpAddr> = BTreeSet::new();
    for (u, slot) in groups.into_iter().zip(slot) {
        match slot {
            Some(rank) => listed[rank] = Some(u.finding(by_idx, totals)),
            None => {
                sum.traffic.add(&u.g.traffic);
                peers.extend(u.peers.iter().map(|p| p.addr));
            }
        }
    }
    sum.peers_total = peers.len() as u64;
    let mut v: Vec<Finding> = listed.into_iter().flatten().collect();
    v.push(sum);
    v
}
