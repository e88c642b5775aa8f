//! Spec entries as matching rules: what an entry admits and covers, the per-port index of
//! the entries covering each port, and the context ([`Ctx`]) a classification run matches in.
use super::*;

/// An entry that can match traffic, with what matching needs precomputed.
pub(crate) struct Rule<'a> {
    pub(super) idx: usize,
    pub(crate) e: &'a Entry,
    pub(crate) r: EntryRef,
    /// Distinct ports covered (0 for port-less entries): smaller is more specific.
    pub(super) width: u32,
}

impl Rule<'_> {
    pub(super) fn admits(&self, t: Transport) -> bool {
        self.e.transport.is_some_and(|ts| ts.admits(t))
    }

    /// Whether the entry covers the service port (for port-less transports: whether the
    /// entry has no ports). Matching goes through [`PortIndex`]; this is its definition.
    #[cfg(test)]
    pub(super) fn covers(&self, t: Transport, port: Option<u16>) -> bool {
        match port {
            Some(p) if t.has_ports() => self.e.ports.matches(p).is_some(),
            _ => self.e.ports.is_none() && !t.has_ports(),
        }
    }

    pub(super) fn allows(&self, role: Role) -> bool {
        match (self.e.direction, role) {
            (None, _) => true,
            (Some(d), Role::Server) => d.allows_inbound(),
            (Some(d), Role::Client) => d.allows_outbound(),
        }
    }

    /// Whether traffic in `role`, which the entry's direction does not allow, is the other
    /// end of traffic the entry documents between two places the inventory knows: a node
    /// connecting to another node's documented inbound port (a cluster link seen from its
    /// client), or a node serving a peer that an outbound entry names as a source. The
    /// serving side is the entry's `destinations`, or for an inbound entry naming none the
    /// inventory's nodes; the connecting side is its `sources`, or for an empty list any
    /// client of an inbound entry and the nodes for an outbound one. An outbound entry with
    /// no destinations (any server anywhere) is never mirrored.
    pub(super) fn mirrors(&self, role: Role, inv: &Inventory, local: IpAddr, peer: IpAddr) -> bool {
        let Some(d) = self.e.direction else {
            return false;
        };
        if self.allows(role) {
            return false;
        }
        let inbound = d.allows_inbound();
        let serving = |ip: IpAddr| {
            if self.e.destinations.is_empty() {
                inbound && inv.is_node(ip)
            } else {
                inv.any_peer_contains(&self.e.destinations, ip) == Some(true)
            }
        };
        let connecting = |ip: IpAddr| {
            if self.e.sources.is_empty() {
                inbound || inv.is_node(ip)
            } else {
                inv.any_peer_contains(&self.e.sources, ip) == Some(true)
            }
        };
        match role {
            Role::Client => serving(peer) && connecting(local),
            Role::Server => serving(local) && connecting(peer),
        }
    }

    /// The peers the entry allows for the node in `role`: the clients when the node serves,
    /// the servers when it connects.
    pub(super) fn allowed_peers(&self, role: Role) -> &[crate::spec::Peer] {
        match role {
            Role::Server => &self.e.sources,
            Role::Client => &self.e.destinations,
        }
    }
}

pub(crate) fn entry_ref(e: &Entry) -> EntryRef {
    EntryRef {
        id: e.id.clone(),
        service: e.service.clone(),
        ports: e.ports.to_string(),
        transport: e
            .transport
            .map(|t| t.as_str().to_owned())
            .unwrap_or_else(|| "none".to_owned()),
        direction: e
            .direction
            .map(|d| d.as_str().to_owned())
            .unwrap_or_else(|| "any".to_owned()),
        file: e.location.file.display().to_string(),
        line: e.location.line,
    }
}

/// Whether one of `names` (the spec's) names process `actual`. Case-insensitive, ignoring a
/// `.exe` suffix; a 15-byte Linux `comm` matches a longer name it is the start of.
pub(crate) fn process_matches(names: &[String], actual: &[&str]) -> bool {
    pub(super) fn norm(s: &str) -> String {
        let l = s.trim().to_ascii_lowercase();
        l.strip_suffix(".exe").map(str::to_owned).unwrap_or(l)
    }
    actual.iter().any(|a| {
        let a_raw = a.trim().to_ascii_lowercase();
        let a = norm(a);
        names.iter().any(|n| {
            let n_raw = n.trim().to_ascii_lowercase();
            norm(n) == a || (a_raw.len() == 15 && n_raw.starts_with(&a_raw))
        })
    })
}

/// The rules covering each port, so matching a flow costs a lookup rather than a scan of the
/// spec: for port `p`, `items[offsets[p]..offsets[p + 1]]` are positions in `Ctx::rules`
/// (ascending). Port-less rules (ICMP) are listed apart.
pub(super) struct PortIndex {
    pub(super) offsets: Vec<u32>,
    pub(super) items: Vec<u32>,
    pub(super) portless: Vec<u32>,
}

impl PortIndex {
    pub(super) fn build(rules: &[Rule<'_>]) -> Self {
        const PORTS: usize = 1 << 16;
        let mut counts = vec![0u32; PORTS + 1];
        let mut last = vec![u32::MAX; PORTS];
        let mut portless = Vec::new();
        let each = |f: &mut dyn FnMut(usize, u32)| {
            for (i, r) in rules.iter().enumerate() {
                for (_, range) in r.e.ports.iter_ranges() {
                    for p in range.start..=range.end {
                        f(usize::from(p), i as u32);
                    }
                }
            }
        };
        each(&mut |p, i| {
            if last[p] != i {
                last[p] = i;
                counts[p + 1] += 1;
            }
        });
        for p in 0..PORTS {
            counts[p + 1] += counts[p];
        }
        let mut items = vec![0u32; counts[PORTS] as usize];
        let mut fill = counts.clone();
        last.fill(u32::MAX);
        each(&mut |p, i| {
            if last[p] != i {
                last[p] = i;
                items[fill[p] as usize] = i;
                fill[p] += 1;
            }
        });
        for (i, r) in rules.iter().enumerate() {
            if r.e.ports.is_none() {
                portless.push(i as u32);
            }
        }
        Self {
            offsets: counts,
            items,
            portless,
        }
    }

    pub(super) fn covering(&self, port: u16) -> &[u32] {
        let p = usize::from(port);
        &self.items[self.offsets[p] as usize..self.offsets[p + 1] as usize]
    }
}

pub(crate) struct Ctx<'a> {
    pub(super) input: &'a ClassifyInput<'a>,
    pub(super) rules: Vec<Rule<'a>>,
    pub(super) index: PortIndex,
    /// (transport, port) -> listeners that accept on it, for process checks.
    pub(super) listening: BTreeMap<(Transport, u16), Vec<&'a Listener>>,
    /// Client-side connections by their ends (canonical addresses), for the owners of
    /// outbound flows.
    pub(super) connected: HashMap<ConnKey, &'a Connection, Hasher>,
}

/// (transport, local address, local port, remote address, remote port).
pub(super) type ConnKey = (Transport, IpAddr, u16, IpAddr, u16);

impl<'a> Ctx<'a> {
    /// The rules that cover `port` for transport `t` (see [`Rule::covers`]), in spec order.
    pub(super) fn covering(
        &self,
        t: Transport,
        port: Option<u16>,
    ) -> impl Iterator<Item = &Rule<'a>> {
        let pos = match port {
            Some(p) if t.has_ports() => self.index.covering(p),
            _ if !t.has_ports() => &self.index.portless[..],
            _ => &[][..],
        };
        pos.iter().map(|&i| &self.rules[i as usize])
    }

    pub(super) fn is_self(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.input.node.addrs.iter().any(|a| canonical(*a) == ip)
    }

    /// The most specific of `rules` (fewest ports); when the traffic's owning processes are
    /// known (the listeners of a `served` port, or `connection`'s owners for outbound
    /// traffic), entries naming one win. Ties all stay.
    pub(super) fn most_specific<'r>(
        &self,
        rules: Vec<&'r Rule<'a>>,
        served: Option<(Transport, u16)>,
        connection: &[Process],
    ) -> Vec<&'r Rule<'a>> {
        let Some(min) = rules.iter().map(|r| r.width).min() else {
            return rules;
        };
        let narrow: Vec<&Rule> = rules.into_iter().filter(|r| r.width == min).collect();
        if narrow.len() < 2 {
            return narrow;
        }
        let served_owners = served
            .into_iter()
            .flat_map(|(t, p)| self.listener_owners(t, p));
        let owners: Vec<&str> = served_owners
            .chain(connection)
            .flat_map(|p| p.names())
            .collect();
        if owners.is_empty() {
            return narrow;
        }
        let by_process: Vec<&Rule> = narrow
            .iter()
            .copied()
            .filter(|r| process_matches(&r.e.processes, &owners))
            .collect();
        if by_process.is_empty() {
            narrow
        } else {
            by_process
        }
    }

    /// The processes holding the listeners of a served port.
    pub(super) fn listener_owners(
        &self,
        t: Transport,
        port: u16,
    ) -> impl Iterator<Item = &'a Process> {
        self.listening
            .get(&(t, port))
            .into_iter()
            .flatten()
            .flat_map(|l| l.processes.iter())
    }

    /// The processes holding the client end of an outbound flow, when it was open at the scan.
    pub(super) fn connection_owners(&self, f: &FlowRecord) -> &'a [Process] {
        if self.connected.is_empty() {
            return &[];
        }
        let k = &f.key;
        let key = (
            k.transport,
            canonical(k.local.addr),
            k.local.port,
            canonical(k.remote.addr),
            k.remote.port,
        );
        self.connected
            .get(&key)
            .map(|c| c.processes.as_slice())
            .unwrap_or_default()
    }
}

/// The `comm` names of `procs`, sorted and deduplicated (what findings list).
pub(super) fn comm_names<'p>(procs: impl Iterator<Item = &'p Process>) -> Vec<String> {
    let mut v: Vec<String> = procs.map(|p| p.name.clone()).collect();
    v.sort();
    v.dedup();
    v
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(input: &'a ClassifyInput<'a>) -> Self {
        let rules: Vec<Rule> = input
            .spec
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_network())
            .map(|(idx, e)| Rule {
                idx,
                e,
                r: entry_ref(e),
                width: e.ports.port_count(),
            })
            .collect();
        let mut listening: BTreeMap<(Transport, u16), Vec<&Listener>> = BTreeMap::new();
        for l in input.listeners.unwrap_or_default() {
            listening.entry((l.transport, l.port)).or_default().push(l);
        }
        let connected = input
            .connections
            .unwrap_or_default()
            .iter()
            .map(|c| {
                let key = (
                    c.transport,
                    canonical(c.local),
                    c.local_port,
                    canonical(c.remote),
                    c.remote_port,
                );
                (key, c)
            })
            .collect();
        let index = PortIndex::build(&rules);
        Ctx {
            input,
            rules,
            index,
            listening,
            connected,
        }
    }
}
