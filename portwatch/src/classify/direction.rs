//! Who is the server of a flow: TCP SYN without ACK, else a local listening socket, else the
//! ephemeral range and well-known-port scoring, else unknown (with the reason). Pure.
use std::fmt;

use serde::{Deserialize, Serialize};

use super::wellknown;
use crate::flow::{FlowRecord, Transport};
use crate::host::{Listener, PortRange};

/// The node's role in a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The node is the server: a peer reached a service on the node (the flow is inbound).
    Server,
    /// The node is the client: it reached a service on the peer (the flow is outbound).
    Client,
}

impl Role {
    /// The spec's wording for the role: inbound or outbound.
    pub fn as_direction(self) -> &'static str {
        match self {
            Self::Server => "inbound",
            Self::Client => "outbound",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_direction())
    }
}

/// Why the role was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// A TCP SYN without ACK was seen from the client.
    TcpSyn,
    /// A local socket listens on the service port.
    Listener,
    /// One port is in the ephemeral range, the other is not.
    EphemeralPort,
    /// One port is a well-known service port (or a well-known client port such as DHCP 68).
    WellKnownPort,
    /// An ICMP request (echo, timestamp, ...) or its reply says who asked.
    IcmpRequest,
    /// An ICMP flow carried packets in one direction only.
    IcmpOneWay,
    /// A flow of a protocol without ports (IGMP, VRRP, GRE, ...) carried packets in one
    /// direction only: its sender is the client (an IGMP report leaving the node is outbound).
    OneWay,
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TcpSyn => "tcp syn",
            Self::Listener => "local listener",
            Self::EphemeralPort => "ephemeral port",
            Self::WellKnownPort => "well-known port",
            Self::IcmpRequest => "icmp request type",
            Self::IcmpOneWay => "icmp one way",
            Self::OneWay => "one way",
        })
    }
}

/// Why the role could not be decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownReason {
    /// SYNs were seen from both ends (simultaneous open, or two connections reusing ports).
    SynBothWays,
    /// Both ports look alike (both ephemeral, both well-known, or neither) and no socket
    /// listens locally: e.g. NTP 123<->123, or two high ports.
    AmbiguousPorts,
    /// An ICMP flow with packets both ways and no request type to go by.
    IcmpBothWays,
    /// A protocol without ports and without a request/reply structure, with packets both ways.
    NoPorts,
}

impl fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SynBothWays => "syn seen both ways",
            Self::AmbiguousPorts => "ports give no answer",
            Self::IcmpBothWays => "icmp both ways",
            Self::NoPorts => "no ports, traffic both ways",
        })
    }
}

/// The outcome of direction inference for one flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Orientation {
    Known { role: Role, evidence: Evidence },
    Unknown { reason: UnknownReason },
}

impl Orientation {
    /// The role, when known.
    pub fn role(self) -> Option<Role> {
        match self {
            Self::Known { role, .. } => Some(role),
            Self::Unknown { .. } => None,
        }
    }

    fn known(role: Role, evidence: Evidence) -> Self {
        Self::Known { role, evidence }
    }
}

impl fmt::Display for Orientation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Known { role, evidence } => write!(f, "{role} ({evidence})"),
            Self::Unknown { reason } => write!(f, "unknown ({reason})"),
        }
    }
}

/// What direction inference may consult besides the flow itself.
#[derive(Clone, Copy, Debug)]
pub struct DirectionContext<'a> {
    /// Local listening sockets; `None` when they could not be read (then step 2 is skipped).
    pub listeners: Option<&'a [Listener]>,
    /// The node's ephemeral range.
    pub ephemeral: PortRange,
}

/// Decides who is the server of `flow` (see the module header for the order of evidence).
pub fn orient(flow: &FlowRecord, ctx: &DirectionContext<'_>) -> Orientation {
    let k = &flow.key;
    let s = &flow.stats;
    match k.transport {
        Transport::Icmp | Transport::Icmpv6 => return orient_icmp(flow),
        t if !t.has_ports() => return orient_portless(flow),
        _ => {}
    }
    // 1. SYN without ACK: the sender is the client.
    if k.transport == Transport::Tcp {
        match (s.syn_in > 0, s.syn_out > 0) {
            (true, false) => return Orientation::known(Role::Server, Evidence::TcpSyn),
            (false, true) => return Orientation::known(Role::Client, Evidence::TcpSyn),
            (true, true) => {
                return Orientation::Unknown {
                    reason: UnknownReason::SynBothWays,
                };
            }
            (false, false) => {}
        }
    }
    // 2. A local socket listening on the local port. A bound UDP socket in the ephemeral range
    //    is usually a client's unconnected socket (a resolver, an NTP client), not a service.
    if let Some(listeners) = ctx.listeners {
        let listening = listeners.iter().any(|l| {
            l.transport == k.transport
                && l.port == k.local.port
                && l.accepts(k.local.addr)
                && (k.transport == Transport::Tcp || !ctx.ephemeral.contains(l.port))
        });
        if listening {
            return Orientation::known(Role::Server, Evidence::Listener);
        }
    }
    // 3. Port scoring: ephemeral ports belong to clients; well-known ports to servers.
    let local = score_local(k.local.port, ctx.ephemeral);
    let remote = score_remote(k.remote.port, ctx.ephemeral);
    let diff = local.score - remote.score;
    if diff >= DECISIVE {
        let ev = local.evidence.max(remote.evidence);
        return Orientation::known(Role::Server, ev);
    }
    if diff <= -DECISIVE {
        let ev = local.evidence.max(remote.evidence);
        return Orientation::known(Role::Client, ev);
    }
    // 4. Never guess.
    Orientation::Unknown {
        reason: UnknownReason::AmbiguousPorts,
    }
}

/// A score difference at least this large decides the role.
const DECISIVE: i32 = 2;

#[derive(Clone, Copy, Debug)]
struct Score {
    score: i32,
    /// The weakest evidence that contributed (ordering in [`Evidence`]: later is weaker).
    evidence: Evidence,
}

/// Server-likeness of a port. Ephemeral: -3. Well-known service port: +3 (well-known client
/// port, DHCP 68: -3). Other privileged port: +1 only, because NFS and RPC clients bind
/// privileged ports, so "the lower port is the server" is wrong for them. Anything else: 0.
fn score(port: u16, ephemeral: bool) -> Score {
    match wellknown::lookup(port) {
        Some(wellknown::Kind::Server) => Score {
            score: 3,
            evidence: Evidence::WellKnownPort,
        },
        Some(wellknown::Kind::Client) => Score {
            score: -3,
            evidence: Evidence::WellKnownPort,
        },
        None if ephemeral => Score {
            score: -3,
            evidence: Evidence::EphemeralPort,
        },
        None if port < 1024 => Score {
            score: 1,
            evidence: Evidence::WellKnownPort,
        },
        None => Score {
            score: 0,
            evidence: Evidence::EphemeralPort,
        },
    }
}

fn score_local(port: u16, eph: PortRange) -> Score {
    score(port, eph.contains(port))
}

/// Peers pick client ports from their own range, which we do not know: the node's range or
/// the IANA dynamic range (Windows, macOS, and most of Linux's) both count.
fn score_remote(port: u16, eph: PortRange) -> Score {
    score(
        port,
        eph.contains(port) || PortRange::IANA_DYNAMIC.contains(port),
    )
}

/// The ICMP type of a flow. Backends put `type << 8 | code` in the destination's port (the
/// source's is 0), so it sits on the local end of an inbound message and on the remote end of
/// an outbound one.
pub(crate) fn icmp_type(flow: &FlowRecord) -> u8 {
    let (l, r) = (flow.key.local.port, flow.key.remote.port);
    let s = &flow.stats;
    let port = match (s.inbound.packets > 0, s.outbound.packets > 0) {
        (true, false) => l,
        (false, true) => r,
        _ => l.max(r),
    };
    (port >> 8) as u8
}

/// A protocol without ports: a one-way flow's sender is the client; both ways, nothing says.
fn orient_portless(flow: &FlowRecord) -> Orientation {
    let s = &flow.stats;
    match (s.inbound.packets > 0, s.outbound.packets > 0) {
        (true, false) => Orientation::known(Role::Server, Evidence::OneWay),
        (false, true) => Orientation::known(Role::Client, Evidence::OneWay),
        _ => Orientation::Unknown {
            reason: UnknownReason::NoPorts,
        },
    }
}

/// ICMP: who sent the request (see [`icmp_type`] for where the type is).
fn orient_icmp(flow: &FlowRecord) -> Orientation {
    let s = &flow.stats;
    let (inb, outb) = (s.inbound.packets > 0, s.outbound.packets > 0);
    let ty = icmp_type(flow);
    let v6 = flow.key.transport == Transport::Icmpv6;
    let request = if v6 {
        // Echo request, node information query (RFC 4620 139).
        matches!(ty, 128 | 139)
    } else {
        // Echo, timestamp, information, address mask requests.
        matches!(ty, 8 | 13 | 15 | 17)
    };
    let reply = if v6 {
        matches!(ty, 129 | 140)
    } else {
        matches!(ty, 0 | 14 | 16 | 18)
    };
    match (inb, outb) {
        (true, false) if request => Orientation::known(Role::Server, Evidence::IcmpRequest),
        (false, true) if request => Orientation::known(Role::Client, Evidence::IcmpRequest),
        (true, false) if reply => Orientation::known(Role::Client, Evidence::IcmpRequest),
        (false, true) if reply => Orientation::known(Role::Server, Evidence::IcmpRequest),
        (true, false) => Orientation::known(Role::Server, Evidence::IcmpOneWay),
        (false, true) => Orientation::known(Role::Client, Evidence::IcmpOneWay),
        _ => Orientation::Unknown {
            reason: UnknownReason::IcmpBothWays,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Counts, Endpoint, FlowKey, FlowStats};
    use std::net::IpAddr;

    fn flow(t: Transport, local: u16, remote: u16) -> FlowRecord {
        FlowRecord {
            key: FlowKey {
                transport: t,
                local: Endpoint {
                    addr: "10.0.0.1".parse().unwrap(),
                    port: local,
                },
                remote: Endpoint {
                    addr: "10.0.0.2".parse().unwrap(),
                    port: remote,
                },
            },
            stats: FlowStats {
                inbound: Counts {
                    packets: 1,
                    bytes: 60,
                },
                outbound: Counts {
                    packets: 1,
                    bytes: 60,
                },
                first_seen: 1,
                last_seen: 2,
                ..FlowStats::default()
            },
            vantage_known: true,
        }
    }

    fn ctx(listeners: Option<&[Listener]>) -> DirectionContext<'_> {
        DirectionContext {
            listeners,
            ephemeral: PortRange::LINUX_DEFAULT,
        }
    }

    fn listener(t: Transport, addr: &str, port: u16) -> Listener {
        Listener {
            transport: t,
            addr: addr.parse::<IpAddr>().unwrap(),
            port,
            inode: 1,
            processes: vec![],
        }
    }

    fn known(role: Role, evidence: Evidence) -> Orientation {
        Orientation::Known { role, evidence }
    }

    #[test]
    fn syn_without_ack_decides_before_anything_else() {
        // Even "client-looking" ports: a SYN arriving says the peer opened the connection.
        let mut f = flow(Transport::Tcp, 50000, 22);
        f.stats.syn_in = 1;
        assert_eq!(
            orient(&f, &ctx(None)),
            known(Role::Server, Evidence::TcpSyn)
        );
        let mut f = flow(Transport::Tcp, 22, 50000);
        f.stats.syn_out = 2;
        assert_eq!(
            orient(&f, &ctx(None)),
            known(Role::Client, Evidence::TcpSyn)
        );
        f.stats.syn_in = 1;
        assert_eq!(
            orient(&f, &ctx(None)),
            Orientation::Unknown {
                reason: UnknownReason::SynBothWays
            }
        );
    }

    #[test]
    fn a_local_listener_makes_the_node_the_server() {
        // A mid-stream TCP flow (no SYN) to a port nobody would guess.
        let f = flow(Transport::Tcp, 31112, 812);
        let ls = [listener(Transport::Tcp, "0.0.0.0", 31112)];
        assert_eq!(
            orient(&f, &ctx(Some(&ls))),
            known(Role::Server, Evidence::Listener)
        );
        // Without listeners the ports alone decide nothing here.
        assert_eq!(
            orient(&f, &ctx(None)),
            Orientation::Unknown {
                reason: UnknownReason::AmbiguousPorts
            }
        );
        // A listener bound to another address does not count.
        let other = [listener(Transport::Tcp, "127.0.0.1", 31112)];
        assert_ne!(
            orient(&f, &ctx(Some(&other))),
            known(Role::Server, Evidence::Listener)
        );
        // Nor does a UDP listener for a TCP flow.
        let udp = [listener(Transport::Udp, "0.0.0.0", 31112)];
        assert_ne!(
            orient(&f, &ctx(Some(&udp))),
            known(Role::Server, Evidence::Listener)
        );
    }

    #[test]
    fn an_unconnected_udp_client_socket_in_the_ephemeral_range_is_not_a_service() {
        // An NTP client's socket shows up in /proc/net/udp like a listener.
        let f = flow(Transport::Udp, 40000, 123);
        let ls = [listener(Transport::Udp, "0.0.0.0", 40000)];
        assert_eq!(
            orient(&f, &ctx(Some(&ls))),
            known(Role::Client, Evidence::WellKnownPort)
        );
    }

    #[test]
    fn ntp_client_from_an_ephemeral_port_and_symmetric_ntp() {
        let f = flow(Transport::Udp, 45123, 123);
        assert_eq!(orient(&f, &ctx(None)).role(), Some(Role::Client));
        let f = flow(Transport::Udp, 123, 45123);
        assert_eq!(orient(&f, &ctx(None)).role(), Some(Role::Server));
        let f = flow(Transport::Udp, 123, 123);
        assert_eq!(orient(&f, &ctx(None)).role(), None);
    }

    #[test]
    fn nfs_and_rpc_clients_bind_privileged_ports() {
        // "Lower port is the server" would call the node with port 800 the server.
        let f = flow(Transport::Tcp, 800, 2049);
        assert_eq!(orient(&f, &ctx(None)).role(), Some(Role::Client));
        let f = flow(Transport::Udp, 111, 700);
        assert_eq!(orient(&f, &ctx(None)).role(), Some(Role::Server));
    }

    #[test]
    fn the_ephemeral_range_is_the_nodes_for_local_ports_and_wider_for_peers() {
        let narrow = DirectionContext {
            listeners: None,
            ephemeral: PortRange::new(20000, 29999),
        };
        // Local 25000 is ephemeral here; remote 15000 is not: the node is the client.
        let f = flow(Transport::Tcp, 25000, 15000);
        assert_eq!(
            orient(&f, &narrow),
            known(Role::Client, Evidence::EphemeralPort)
        );
        // Local 50000 is outside the node's range (so maybe a service), but a peer's 50000 is
        // a client port under the IANA range.
        let f = flow(Transport::Tcp, 15000, 50000);
        assert_eq!(orient(&f, &narrow).role(), Some(Role::Server));
        let f = flow(Transport::Tcp, 50000, 15000);
        assert_eq!(orient(&f, &narrow).role(), None);
        // Two ephemeral ports: unknown, never guessed.
        let f = flow(Transport::Tcp, 40000, 41000);
        assert_eq!(orient(&f, &ctx(None)).role(), None);
    }

    #[test]
    fn dhcp_client_port_is_a_client_port() {
        let f = flow(Transport::Udp, 68, 67);
        assert_eq!(orient(&f, &ctx(None)).role(), Some(Role::Client));
    }

    #[test]
    fn icmp_requests_and_replies() {
        // The type sits in the destination's port: local for inbound, remote for outbound.
        let ping_in = |t: Transport, ty: u8, inb: u64, outb: u64| {
            let port = u16::from(ty) << 8;
            let mut f = if outb > 0 && inb == 0 {
                flow(t, 0, port)
            } else {
                flow(t, port, 0)
            };
            f.stats.inbound.packets = inb;
            f.stats.outbound.packets = outb;
            orient(&f, &ctx(None))
        };
        assert_eq!(
            ping_in(Transport::Icmp, 8, 3, 0),
            known(Role::Server, Evidence::IcmpRequest)
        );
        assert_eq!(
            ping_in(Transport::Icmp, 0, 3, 0),
            known(Role::Client, Evidence::IcmpRequest)
        );
        assert_eq!(
            ping_in(Transport::Icmpv6, 128, 0, 3),
            known(Role::Client, Evidence::IcmpRequest)
        );
        assert_eq!(
            ping_in(Transport::Icmp, 3, 1, 0),
            known(Role::Server, Evidence::IcmpOneWay)
        );
        assert_eq!(ping_in(Transport::Icmp, 8, 3, 3).role(), None);
    }

    #[test]
    fn portless_protocols_go_by_which_way_packets_went() {
        // Both ways (GRE between tunnel ends): nothing says who started it.
        assert_eq!(
            orient(&flow(Transport::Other(47), 0, 0), &ctx(None)),
            Orientation::Unknown {
                reason: UnknownReason::NoPorts
            }
        );
        // An IGMP membership report leaving the node: the node sent it.
        let mut igmp = flow(Transport::Other(2), 0, 0);
        igmp.stats.inbound = Counts::default();
        assert_eq!(
            orient(&igmp, &ctx(None)),
            known(Role::Client, Evidence::OneWay)
        );
        // VRRP adverts arriving from the master: the peer sent them.
        let mut vrrp = flow(Transport::Other(112), 0, 0);
        vrrp.stats.outbound = Counts::default();
        assert_eq!(
            orient(&vrrp, &ctx(None)),
            known(Role::Server, Evidence::OneWay)
        );
    }
}
