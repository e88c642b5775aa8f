//! The live libpcap backend: one capture thread per interface (non-blocking handle + poll on
//! Unix, Npcap's read timeout on Windows), frames decoded by [`decode`](super::decode) into a
//! [`FlowTable`] per interface, drained and merged on `collect`. Kernel drop counts
//! (ps_drop + ps_ifdrop) go to `Health::capture_drops`. Never consults the spec.
//!
//! Direction comes from the node's own addresses (every address of every interface, as
//! libpcap lists them): from a local address is outbound, to one inbound. Counted bytes are
//! the frame's wire length including its link header, as the eBPF backend counts them; two
//! known differences: a VLAN tag offloaded to the NIC is in the pcap frame but not in the skb
//! length TC sees (4 bytes more per tagged frame here), and GSO super-packets count as one
//! segment here (libpcap does not say how many wire segments they became).
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use super::decode::{self, LinkType};
use super::file::Orienter;
use super::{Backend, BackendKind};
use crate::clock::UnixNanos;
use crate::flow::{FlowKey, FlowRecord, FlowStats, FlowTable, PortTotal, Snapshot, Transport};

/// How long a capture thread waits for packets before it checks whether it should stop.
const POLL_MS: i32 = 200;

/// Settings of the live pcap backend.
#[derive(Clone, Debug)]
pub struct PcapConfig {
    /// Interfaces to capture on; empty: every interface that is up, except loopback.
    pub ifaces: Vec<String>,
    /// Bytes captured per frame (headers only are needed: 256 covers Ethernet, two VLAN
    /// tags, IPv6 with extension headers and the transport header).
    pub snaplen: i32,
    /// Put the interfaces in promiscuous mode (off: only the node's own traffic).
    pub promisc: bool,
    /// Kernel buffer per interface, bytes.
    pub buffer_size: i32,
    /// Flow-table capacity per interface and interval (per-port totals stay exact beyond it).
    pub flow_capacity: usize,
    /// Optional BPF filter expression applied in the kernel.
    pub filter: Option<String>,
    /// Extra addresses or networks counted as the node's own (besides the interfaces').
    pub extra_local: Vec<ipnet::IpNet>,
}

impl Default for PcapConfig {
    fn default() -> Self {
        Self {
            ifaces: Vec::new(),
            snaplen: 256,
            promisc: false,
            buffer_size: 8 << 20,
            flow_capacity: 65_536,
            filter: None,
            extra_local: Vec::new(),
        }
    }
}

/// What can go wrong with live capture.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("libpcap could not list the network interfaces")]
    ListDevices(#[source] ::pcap::Error),
    #[error("interface {name:?} does not exist (libpcap lists: {})", available.join(", "))]
    NoSuchInterface {
        name: String,
        available: Vec<String>,
    },
    #[error("no interface to capture on: none is up except loopback (name one with --iface)")]
    NoInterfaces,
    #[error("cannot open interface {iface} for capture{}", permission_hint(source))]
    Open {
        iface: String,
        #[source]
        source: ::pcap::Error,
    },
    #[error("BPF filter {filter:?} does not compile for interface {iface}")]
    Filter {
        iface: String,
        filter: String,
        #[source]
        source: ::pcap::Error,
    },
    #[error("cannot start the capture thread for interface {iface}")]
    Thread {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("capture on interface {iface} failed: {reason}")]
    Capture { iface: String, reason: String },
}

/// A hint naming the fix when libpcap's error is a permission failure, else "".
fn permission_hint(e: &::pcap::Error) -> &'static str {
    let text = e.to_string().to_ascii_lowercase();
    if !(text.contains("permission") || text.contains("not permitted")) {
        return "";
    }
    if cfg!(target_os = "linux") {
        ": capturing needs CAP_NET_RAW and CAP_NET_ADMIN: run as root, or grant them once with \
         `sudo setcap cap_net_raw,cap_net_admin=eip $(command -v portwatch)`"
    } else if cfg!(target_os = "macos") {
        ": capturing needs read access to /dev/bpf*: run with sudo, or install Wireshark's \
         ChmodBPF (access_bpf group) and add your user to it"
    } else if cfg!(windows) {
        ": Npcap may be installed with \"Restrict Npcap driver's access to Administrators only\": \
         run as Administrator or reinstall Npcap without that option"
    } else {
        ": capturing needs root privileges"
    }
}

/// Why live pcap capture cannot run here (for `--backend auto` messages), or `None` when at
/// least one interface can be opened. Opens and closes one handle; captures nothing.
pub fn unavailable_reason(cfg: &PcapConfig) -> Option<String> {
    let devices = match ::pcap::Device::list() {
        Ok(d) => d,
        Err(e) => return Some(PcapError::ListDevices(e).to_string()),
    };
    let names = match pick_interfaces(cfg, &devices) {
        Ok(n) => n,
        Err(e) => return Some(e.to_string()),
    };
    let first = names.first()?;
    match open_handle(first, cfg) {
        Ok(_) => None,
        Err(e) => Some(error_chain(&e)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The interfaces `cfg` asks for, checked against what libpcap lists.
fn pick_interfaces(cfg: &PcapConfig, devices: &[::pcap::Device]) -> Result<Vec<String>, PcapError> {
    if cfg.ifaces.is_empty() {
        let mut v: Vec<String> = devices
            .iter()
            .filter(|d| d.flags.is_up() && !d.flags.is_loopback())
            // libpcap's pseudo-devices: "any" and the USB/Bluetooth/netfilter/D-Bus monitors.
            .filter(|d| {
                d.name != "any"
                    && !d.name.starts_with("usbmon")
                    && !d.name.starts_with("bluetooth")
                    && !d.name.starts_with("nf")
                    && !d.name.starts_with("dbus")
            })
            .map(|d| d.name.clone())
            .collect();
        if v.is_empty() {
            return Err(PcapError::NoInterfaces);
        }
        v.sort();
        return Ok(v);
    }
    for name in &cfg.ifaces {
        if !devices.iter().any(|d| &d.name == name) {
            return Err(PcapError::NoSuchInterface {
                name: name.clone(),
                available: devices.iter().map(|d| d.name.clone()).collect(),
            });
        }
    }
    Ok(cfg.ifaces.clone())
}

fn open_handle(
    iface: &str,
    cfg: &PcapConfig,
) -> Result<::pcap::Capture<::pcap::Active>, PcapError> {
    let open_err = |source| PcapError::Open {
        iface: iface.to_owned(),
        source,
    };
    let cap = ::pcap::Capture::from_device(iface)
        .map_err(open_err)?
        .snaplen(cfg.snaplen)
        .promisc(cfg.promisc)
        .buffer_size(cfg.buffer_size)
        .immediate_mode(false)
        .timeout(POLL_MS)
        .open()
        .map_err(open_err)?;
    // Unix: non-blocking + poll (a blocking read with a timeout never returns on an idle
    // Linux link with TPACKET_V3). Windows: Npcap honours the read timeout; stay blocking.
    #[cfg(unix)]
    let cap = cap.setnonblock().map_err(open_err)?;
    let mut cap = cap;
    if let Some(f) = &cfg.filter {
        cap.filter(f, true).map_err(|source| PcapError::Filter {
            iface: iface.to_owned(),
            filter: f.clone(),
            source,
        })?;
    }
    Ok(cap)
}

/// Every address libpcap lists for every interface, plus `extra`.
fn local_orienter(devices: &[::pcap::Device], extra: &[ipnet::IpNet]) -> Orienter {
    let mut addrs: Vec<IpAddr> = devices
        .iter()
        .flat_map(|d| d.addresses.iter().map(|a| a.addr))
        .collect();
    addrs.sort();
    addrs.dedup();
    Orienter::new(addrs, extra.to_vec())
}

/// Accumulates kernel drop counters (u32, wrapping) into a 64-bit running total.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DropCounter {
    last_drop: u32,
    last_ifdrop: u32,
}

impl DropCounter {
    /// Returns the drops since the previous reading (handles u32 wrap-around).
    pub fn delta(&mut self, ps_drop: u32, ps_ifdrop: u32) -> u64 {
        let d = u64::from(ps_drop.wrapping_sub(self.last_drop))
            + u64::from(ps_ifdrop.wrapping_sub(self.last_ifdrop));
        self.last_drop = ps_drop;
        self.last_ifdrop = ps_ifdrop;
        d
    }
}

/// Decodes one frame and ingests it (or counts why not). Shared by the capture threads and
/// the tests; the same steps as the file reader's.
#[inline]
pub fn ingest_frame(
    table: &mut FlowTable,
    orienter: &Orienter,
    link: LinkType,
    ts: UnixNanos,
    data: &[u8],
    wire_len: u32,
) {
    match decode::decode(link, data) {
        Ok(d) => {
            let dir = orienter.direction_of(&d);
            table.ingest_packet(&d.packet(ts, wire_len.max(data.len() as u32), dir));
        }
        Err(skip) => skip.count(table.health_mut()),
    }
}

/// What a capture thread shares with the backend.
#[derive(Debug)]
struct Shared {
    table: Mutex<FlowTable>,
    /// Kernel drops not yet reported.
    drops: AtomicU64,
    /// Why the thread stopped, if it failed.
    failure: Mutex<Option<String>>,
    stop: AtomicBool,
    /// Bumped when the node's addresses change (the thread then reloads them).
    orienter: Mutex<Arc<Orienter>>,
}

#[derive(Debug)]
struct Iface {
    name: String,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Live capture on one or more interfaces through libpcap (Npcap on Windows).
#[derive(Debug)]
pub struct PcapBackend {
    cfg: PcapConfig,
    ifaces: Vec<Iface>,
    orienter: Arc<Orienter>,
    last_end: UnixNanos,
    /// Failures of threads that stopped, reported once by the next `collect`.
    failed: Vec<PcapError>,
}

impl PcapBackend {
    /// Opens every interface `cfg` names (or every up non-loopback interface) and starts
    /// capturing; the first interval starts at `start`.
    pub fn open(cfg: PcapConfig, start: UnixNanos) -> Result<Self, PcapError> {
        let devices = ::pcap::Device::list().map_err(PcapError::ListDevices)?;
        let names = pick_interfaces(&cfg, &devices)?;
        let orienter = Arc::new(local_orienter(&devices, &cfg.extra_local));
        let mut b = Self {
            cfg,
            ifaces: Vec::new(),
            orienter,
            last_end: start,
            failed: Vec::new(),
        };
        for n in names {
            b.start_iface(&n, start)?;
        }
        Ok(b)
    }

    fn start_iface(&mut self, name: &str, start: UnixNanos) -> Result<(), PcapError> {
        let cap = open_handle(name, &self.cfg)?;
        let link = LinkType::from_number(u32::try_from(cap.get_datalink().0).unwrap_or(u32::MAX));
        let shared = Arc::new(Shared {
            table: Mutex::new(FlowTable::new(self.cfg.flow_capacity, start)),
            drops: AtomicU64::new(0),
            failure: Mutex::new(None),
            stop: AtomicBool::new(false),
            orienter: Mutex::new(self.orienter.clone()),
        });
        let s2 = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("pcap-{name}"))
            .spawn(move || capture_loop(cap, link, &s2))
            .map_err(|source| PcapError::Thread {
                iface: name.to_owned(),
                source,
            })?;
        tracing::info!(iface = name, ?link, "pcap capture started");
        self.ifaces.push(Iface {
            name: name.to_owned(),
            shared,
            thread: Some(thread),
        });
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn capture_loop(mut cap: ::pcap::Capture<::pcap::Active>, link: LinkType, shared: &Shared) {
    let mut drops = DropCounter::default();
    let mut orienter = lock(&shared.orienter).clone();
    while !shared.stop.load(Ordering::Relaxed) {
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            let mut pfd = libc::pollfd {
                fd: cap.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd we own, count 1.
            let rc = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    *lock(&shared.failure) = Some(format!("poll: {e}"));
                    return;
                }
            }
        }
        {
            let latest = lock(&shared.orienter).clone();
            if !Arc::ptr_eq(&latest, &orienter) {
                orienter = latest;
            }
        }
        let mut table = lock(&shared.table);
        // Bounded burst, so collect() never waits long for the lock.
        for _ in 0..4096 {
            match cap.next_packet() {
                Ok(p) => {
                    let ts = (p.header.ts.tv_sec as u64)
                        .saturating_mul(1_000_000_000)
                        .saturating_add((p.header.ts.tv_usec as u64).saturating_mul(1_000));
                    ingest_frame(&mut table, &orienter, link, ts, p.data, p.header.len);
                }
                Err(::pcap::Error::TimeoutExpired | ::pcap::Error::NoMorePackets) => break,
                Err(e) => {
                    *lock(&shared.failure) = Some(e.to_string());
                    return;
                }
            }
        }
        drop(table);
        if let Ok(st) = cap.stats() {
            let d = drops.delta(st.dropped, st.if_dropped);
            shared.drops.fetch_add(d, Ordering::Relaxed);
        }
    }
}

/// Merges per-interface snapshots of the same interval into one (flows by key, port totals
/// by key, health summed).
pub fn merge_snapshots(mut parts: Vec<Snapshot>, start: UnixNanos, end: UnixNanos) -> Snapshot {
    if parts.len() == 1
        && let Some(mut only) = parts.pop()
    {
        only.start = start;
        only.end = end;
        return only;
    }
    let mut flows: HashMap<FlowKey, (FlowStats, bool)> = HashMap::new();
    type PK = (Transport, u16, crate::flow::Side, crate::flow::Direction);
    let mut ports: HashMap<PK, crate::flow::PortCounts> = HashMap::new();
    let mut health = crate::flow::Health::default();
    for s in parts {
        health.add(&s.health);
        for f in s.flows {
            let e = flows
                .entry(f.key)
                .or_insert((FlowStats::default(), f.vantage_known));
            e.0.merge(&f.stats);
            e.1 &= f.vantage_known;
        }
        for p in s.ports {
            ports
                .entry((p.transport, p.port, p.side, p.dir))
                .or_default()
                .add(&p.counts);
        }
    }
    let mut flows: Vec<FlowRecord> = flows
        .into_iter()
        .map(|(key, (stats, vantage_known))| FlowRecord {
            key,
            stats,
            vantage_known,
        })
        .collect();
    flows.sort_by_key(|f| f.key);
    let mut ports: Vec<PortTotal> = ports
        .into_iter()
        .map(|(key, counts)| PortTotal::from_key(key, counts))
        .collect();
    ports.sort_by_key(|p| (p.transport, p.port, p.side, p.dir));
    Snapshot {
        start,
        end,
        flows,
        ports,
        health,
    }
}

impl Backend for PcapBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Pcap
    }

    fn collect(
        &mut self,
        now: UnixNanos,
    ) -> Result<Snapshot, Box<dyn std::error::Error + Send + Sync>> {
        let mut parts = Vec::with_capacity(self.ifaces.len());
        for i in &self.ifaces {
            let mut s = lock(&i.shared.table).drain(now);
            s.health.capture_drops = s
                .health
                .capture_drops
                .saturating_add(i.shared.drops.swap(0, Ordering::Relaxed));
            parts.push(s);
        }
        // Interfaces whose thread failed (removed, link gone): report once, then forget them.
        let mut kept = Vec::with_capacity(self.ifaces.len());
        for mut i in std::mem::take(&mut self.ifaces) {
            let failure = lock(&i.shared.failure).take();
            match failure {
                Some(reason) => {
                    if let Some(t) = i.thread.take() {
                        let _ = t.join();
                    }
                    tracing::warn!(iface = %i.name, %reason, "pcap capture stopped");
                    self.failed.push(PcapError::Capture {
                        iface: i.name,
                        reason,
                    });
                }
                None => kept.push(i),
            }
        }
        self.ifaces = kept;
        let snap = merge_snapshots(parts, self.last_end, now);
        self.last_end = now;
        if self.ifaces.is_empty()
            && let Some(e) = self.failed.pop()
        {
            return Err(Box::new(e));
        }
        Ok(snap)
    }

    fn refresh_interfaces(
        &mut self,
    ) -> Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
        let devices = ::pcap::Device::list().map_err(PcapError::ListDevices)?;
        let orienter = Arc::new(local_orienter(&devices, &self.cfg.extra_local));
        if orienter.addrs() != self.orienter.addrs() {
            self.orienter = orienter;
            for i in &self.ifaces {
                *lock(&i.shared.orienter) = self.orienter.clone();
            }
        }
        let wanted = match pick_interfaces(&self.cfg, &devices) {
            Ok(w) => w,
            // Named interfaces that vanished come back later; nothing new to attach now.
            Err(PcapError::NoSuchInterface { .. } | PcapError::NoInterfaces) => Vec::new(),
            Err(e) => return Err(Box::new(e)),
        };
        let mut added = Vec::new();
        for name in wanted {
            if self.ifaces.iter().any(|i| i.name == name) {
                continue;
            }
            match self.start_iface(&name, self.last_end) {
                Ok(()) => added.push(name),
                // An interface that appeared but is not up yet: try again next time.
                Err(e) => tracing::debug!(iface = %name, error = %e, "not attached yet"),
            }
        }
        Ok(added)
    }

    fn interfaces(&self) -> Vec<String> {
        self.ifaces.iter().map(|i| i.name.clone()).collect()
    }
}

impl Drop for PcapBackend {
    fn drop(&mut self) {
        for i in &self.ifaces {
            i.shared.stop.store(true, Ordering::Relaxed);
        }
        for i in &mut self.ifaces {
            if let Some(t) = i.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::capture::testdata as td;
    use crate::flow::{Direction, Side};

    #[test]
    fn drop_counter_takes_deltas_across_u32_wrap() {
        let mut d = DropCounter::default();
        assert_eq!(d.delta(10, 2), 12);
        assert_eq!(d.delta(15, 2), 5);
        assert_eq!(d.delta(3, 2), u64::from(u32::MAX - 15) + 4);
    }

    #[test]
    fn frames_are_oriented_by_the_nodes_addresses() {
        let me = [10, 0, 0, 1];
        let peer = [10, 0, 0, 9];
        let o = Orienter::new(vec![IpAddr::from(me)], vec![]);
        let mut t = FlowTable::new(8, 0);
        let req = td::ethernet(
            &[],
            0x0800,
            &td::ipv4(peer, me, 6, &[], 0, false, &td::tcp(50000, 22, 0x02)),
        );
        let rep = td::ethernet(
            &[],
            0x0800,
            &td::ipv4(me, peer, 6, &[], 0, false, &td::tcp(22, 50000, 0x12)),
        );
        // The reply first: address-based direction does not depend on packet order.
        ingest_frame(&mut t, &o, LinkType::Ethernet, 2, &rep, rep.len() as u32);
        ingest_frame(
            &mut t,
            &o,
            LinkType::Ethernet,
            1,
            &req[..40],
            req.len() as u32,
        );
        ingest_frame(&mut t, &o, LinkType::Ethernet, 3, &req, req.len() as u32);
        let s = t.drain(4);
        assert_eq!(s.flows.len(), 1);
        let f = &s.flows[0];
        assert_eq!((f.key.local.port, f.key.remote.port), (22, 50000));
        assert!(f.vantage_known);
        assert_eq!((f.stats.inbound.packets, f.stats.outbound.packets), (1, 1));
        assert_eq!(f.stats.syn_in, 1);
        assert_eq!(s.health.truncated, 1);
        let p = s
            .ports
            .iter()
            .find(|p| p.port == 22 && p.side == Side::Local && p.dir == Direction::In)
            .unwrap();
        assert_eq!(p.counts.bytes, req.len() as u64);
    }

    #[test]
    fn merging_interfaces_adds_flows_ports_and_health() {
        let me = [10, 0, 0, 1];
        let o = Orienter::new(vec![IpAddr::from(me)], vec![]);
        let frame = |peer: u8| {
            td::ethernet(
                &[],
                0x0800,
                &td::ipv4(
                    [10, 0, 0, peer],
                    me,
                    17,
                    &[],
                    0,
                    false,
                    &td::udp(5000, 53, 4),
                ),
            )
        };
        let mut a = FlowTable::new(8, 0);
        let mut b = FlowTable::new(8, 0);
        ingest_frame(&mut a, &o, LinkType::Ethernet, 1, &frame(2), 60);
        ingest_frame(&mut b, &o, LinkType::Ethernet, 2, &frame(2), 60);
        ingest_frame(&mut b, &o, LinkType::Ethernet, 3, &frame(3), 60);
        b.health_mut().capture_drops = 7;
        let m = merge_snapshots(vec![a.drain(9), b.drain(9)], 0, 10);
        assert_eq!((m.start, m.end), (0, 10));
        assert_eq!(m.flows.len(), 2);
        assert_eq!(m.flows[0].stats.inbound.packets, 2);
        assert_eq!(
            (m.flows[0].stats.first_seen, m.flows[0].stats.last_seen),
            (1, 2)
        );
        let local53: u64 = m
            .ports
            .iter()
            .filter(|p| p.port == 53 && p.side == Side::Local)
            .map(|p| p.counts.packets)
            .sum();
        assert_eq!(local53, 3);
        assert_eq!((m.health.packets_seen, m.health.capture_drops), (3, 7));
    }

    #[test]
    fn a_missing_interface_is_named_with_the_ones_that_exist() {
        let cfg = PcapConfig {
            ifaces: vec!["no-such-if0".into()],
            ..PcapConfig::default()
        };
        match PcapBackend::open(cfg, 0) {
            Err(e @ PcapError::NoSuchInterface { .. }) => {
                assert!(
                    e.to_string().contains("\"no-such-if0\" does not exist"),
                    "{e}"
                );
            }
            // libpcap cannot list interfaces at all in this sandbox: also a named error.
            Err(PcapError::ListDevices(_)) => {}
            other => panic!("expected NoSuchInterface, got {other:?}"),
        }
    }
}
