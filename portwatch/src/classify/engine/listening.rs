//! Listening sockets against the spec: documented, undocumented, owned by another process,
//! and documented inbound ports with nothing listening.
use super::*;

impl<'a> Ctx<'a> {
    /// How one listening socket stands against the spec.
    pub(crate) fn judge(&self, l: &Listener) -> Judged<'_, 'a> {
        if canonical(l.addr).is_loopback() {
            return Judged::LoopbackOnly;
        }
        if l.transport == Transport::Udp && self.input.ephemeral.contains(l.port) {
            return Judged::EphemeralUdp;
        }
        let matching: Vec<&Rule> = self
            .covering(l.transport, Some(l.port))
            .filter(|r| r.admits(l.transport) && r.allows(Role::Server))
            .collect();
        if matching.is_empty() {
            return Judged::Undocumented;
        }
        let mut matching = matching;
        if matching.iter().any(|r| !r.e.flags.dynamic_range) {
            matching.retain(|r| !r.e.flags.dynamic_range);
        }
        let naming: Vec<&Rule> = matching
            .iter()
            .copied()
            .filter(|r| !r.e.processes.is_empty())
            .collect();
        let names: Vec<&str> = l.processes.iter().flat_map(|p| p.names()).collect();
        let mismatch = if l.processes.is_empty()
            || naming.is_empty()
            || naming
                .iter()
                .any(|r| process_matches(&r.e.processes, &names))
        {
            None
        } else {
            Some(self.most_specific(naming, None, &[])[0])
        };
        Judged::Documented { matching, mismatch }
    }
}

/// A listener's standing against the spec.
pub(crate) enum Judged<'r, 'a> {
    LoopbackOnly,
    EphemeralUdp,
    Undocumented,
    Documented {
        matching: Vec<&'r Rule<'a>>,
        /// The entry whose named process the owner is not.
        mismatch: Option<&'r Rule<'a>>,
    },
}

pub(super) fn listener_findings(
    ctx: &Ctx<'_>,
    ls: &[Listener],
    out: &mut Vec<Finding>,
) -> ListenerSummary {
    let mut sum = ListenerSummary {
        total: ls.len() as u64,
        ..ListenerSummary::default()
    };
    // Undocumented listeners and process mismatches, grouped by (transport, port).
    let mut undocumented: BTreeMap<(Transport, u16), (BTreeSet<IpAddr>, BTreeSet<String>)> =
        BTreeMap::new();
    let mut mismatch_groups: BTreeMap<(usize, Transport, u16), BTreeSet<String>> = BTreeMap::new();
    for l in ls {
        if l.processes.is_empty() {
            sum.without_process += 1;
        }
        match ctx.judge(l) {
            Judged::LoopbackOnly => sum.loopback_only += 1,
            Judged::EphemeralUdp => sum.ephemeral_udp += 1,
            Judged::Undocumented => {
                sum.undocumented += 1;
                let u = undocumented.entry((l.transport, l.port)).or_default();
                u.0.insert(l.addr);
                u.1.extend(l.processes.iter().map(|p| p.name.clone()));
            }
            Judged::Documented { mismatch, .. } => {
                sum.documented += 1;
                if let Some(r) = mismatch {
                    mismatch_groups
                        .entry((r.idx, l.transport, l.port))
                        .or_default()
                        .extend(l.processes.iter().map(|p| p.name.clone()));
                }
            }
        }
    }
    for ((t, port), (addrs, procs)) in undocumented {
        let mut fd = Finding::new(FindingKind::UndocumentedListener {
            addrs: addrs.into_iter().collect(),
        });
        fd.transport = Some(t);
        fd.port = Some(port);
        fd.role = Some(Role::Server);
        fd.processes = procs.into_iter().collect();
        out.push(fd);
    }
    for ((idx, t, port), found) in mismatch_groups {
        let Some(r) = ctx.rules.iter().find(|r| r.idx == idx) else {
            continue;
        };
        let mut fd = Finding::new(FindingKind::ProcessMismatch {
            expected: r.e.processes.clone(),
            found: found.iter().cloned().collect(),
        });
        fd.entry = Some(r.r.clone());
        fd.transport = Some(t);
        fd.port = Some(port);
        fd.role = Some(Role::Server);
        fd.processes = found.into_iter().collect();
        out.push(fd);
    }
    // Documented inbound ports with nothing listening.
    for r in &ctx.rules {
        let f = r.e.flags;
        if f.install_only || f.dynamic_range || f.optional {
            continue;
        }
        if !matches!(
            r.e.direction,
            Some(DirectionSpec::Inbound | DirectionSpec::Bidirectional)
        ) {
            continue;
        }
        let ts: Vec<Transport> = match r.e.transport {
            Some(TransportSpec::Tcp) => vec![Transport::Tcp],
            Some(TransportSpec::Udp) => vec![Transport::Udp],
            Some(TransportSpec::Any) => vec![Transport::Tcp, Transport::Udp],
            _ => continue, // no listener table for sctp and icmp
        };
        let reachable = |port: u16| {
            ts.iter().any(|t| {
                ctx.listening
                    .get(&(*t, port))
                    .is_some_and(|v| v.iter().any(|l| !canonical(l.addr).is_loopback()))
            })
        };
        let missing = missing_ports(&r.e.ports, &r.e.alternatives, &reachable);
        if missing.is_empty() {
            continue;
        }
        let mut fd = Finding::new(FindingKind::NotListening { missing });
        fd.entry = Some(r.r.clone());
        fd.transport = ts.first().copied();
        fd.role = Some(Role::Server);
        out.push(fd);
    }
    sum
}

/// The ports of `ports` with no listener, as the spec writes them. A single port must
/// listen; a range is satisfied by any port listening in it (services pick one). Alternatives
/// are satisfied when one of them is, and so are labelled variants unless `alternatives` names
/// some of them: then every other variant must listen and one of those named. When a set of
/// alternatives is unsatisfied, every missing piece of each of them is listed.
pub(super) fn missing_ports(
    ports: &Ports,
    alternatives: &[String],
    listening: &dyn Fn(u16) -> bool,
) -> Vec<String> {
    let group_missing = |set: &crate::spec::PortSet| -> Vec<String> {
        set.ranges()
            .iter()
            .filter(|r| !(r.start..=r.end).any(listening))
            .map(ToString::to_string)
            .collect()
    };
    // (is one of the alternatives, what is missing of it)
    let per: Vec<(bool, Vec<String>)> = ports
        .groups()
        .iter()
        .map(|(label, s)| {
            let alternative = match ports {
                Ports::None | Ports::All(_) => false,
                Ports::AnyOf(_) => true,
                Ports::Variants(_) => {
                    alternatives.is_empty()
                        || label.is_some_and(|l| alternatives.iter().any(|a| a == l))
                }
            };
            (alternative, group_missing(s))
        })
        .collect();
    let alternative_met = per.iter().any(|(alt, m)| *alt && m.is_empty());
    let mut out: Vec<String> = Vec::new();
    for (alt, m) in per {
        if alt && alternative_met {
            continue;
        }
        for p in m {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}
