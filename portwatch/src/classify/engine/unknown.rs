//! Unknown-direction groups into findings: the biggest listed one by one, the rest summed.
use super::*;

/// An unknown-direction group waiting to become a finding; the group itself stays with the
/// finished groups (see [`Finished`]) until it is built or summed.
pub(super) struct UnknownGroup<'p> {
    pub(super) transport: Transport,
    pub(super) remote: u16,
    pub(super) reason: UnknownReason,
    /// The group's id among the finished groups.
    pub(super) id: u32,
    pub(super) peers: &'p [PeerStat],
    pub(super) peers_total: u64,
}

impl UnknownGroup<'_> {
    /// The finding of this group, `g`.
    pub(super) fn finding(
        self,
        g: Group,
        by_idx: &BTreeMap<usize, &Rule<'_>>,
        totals: &PortTotals,
    ) -> Finding {
        let mut fd = Finding::new(FindingKind::UnknownDirection {
            reason: self.reason,
            remote_port: Some(self.remote),
            candidates: g.candidates.iter().map(|i| by_idx[i].r.clone()).collect(),
        });
        fd.transport = Some(self.transport);
        fill_evidence(&mut fd, g, totals, Side::Local);
        fd.peers = self.peers.to_vec();
        fd.peers_total = self.peers_total;
        fd
    }
}

/// The unknown-direction findings: the [`MAX_UNKNOWN_GROUPS`] biggest groups (most bytes
/// first, then the report's order: transport, port (the local port, when the group saw exactly
/// one); then group order) one by one, the rest summed into one finding. Only the listed ones
/// are built (a flood of distinct port pairs makes a group per flow). `all` holds the groups
/// by id; the listed ones are taken out of it.
pub(super) fn unknown_findings(
    groups: Vec<UnknownGroup<'_>>,
    all: &mut [(GroupKey, Group)],
    by_idx: &BTreeMap<usize, &Rule<'_>>,
    totals: &PortTotals,
) -> Vec<Finding> {
    if groups.len() <= MAX_UNKNOWN_GROUPS {
        return groups
            .into_iter()
            .map(|u| {
                let g = std::mem::take(&mut all[u.id as usize].1);
                u.finding(g, by_idx, totals)
            })
            .collect();
    }
    let mut order: Vec<(std::cmp::Reverse<u64>, Transport, Option<u16>, usize)> = groups
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let g = &all[u.id as usize].1;
            (
                std::cmp::Reverse(g.traffic.bytes()),
                u.transport,
                g.ports.single(),
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
            Some(rank) => {
                let g = std::mem::take(&mut all[u.id as usize].1);
                listed[rank] = Some(u.finding(g, by_idx, totals));
            }
            None => {
                sum.traffic.add(&all[u.id as usize].1.traffic);
                peers.extend(u.peers.iter().map(|p| p.addr));
            }
        }
    }
    sum.peers_total = peers.len() as u64;
    let mut v: Vec<Finding> = listed.into_iter().flatten().collect();
    v.push(sum);
    v
}
