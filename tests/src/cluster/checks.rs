//! What the scenario's reports must say, as checks over portwatch's JSON reports (read as
//! `serde_json::Value`, the way any consumer of the versioned schema would) and over the
//! oracle's counts. Each check returns the problems it found, worded for a person; the test
//! asserts there are none and the demo prints them. Pure: no I/O but reading the spec file.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::error::{Result, io_err};
use super::lab::Host;
use super::oracle::{Counts, PortKey, Side};

/// Entries of the scenario's spec that nothing in the scenario uses.
pub const NEVER_USED: &[&str] = &[
    "ops-12345-simba",
    "intra-8080-tomcat",
    "repository",
    "intra-icmp-health-check",
];

/// Per node, the entries its traffic uses (as server or client): never reported unused there.
pub fn used_on(h: Host) -> &'static [&'static str] {
    match h {
        Host::N1 => &[
            "ops-22-ssh",
            "ops-80-http",
            "ops-443-https",
            "intra-5432-postgres-database",
            "intra-2181-zookeeper-client",
            "intra-3888-zookeeper-peer",
            "broker",
        ],
        Host::N2 => &[
            "intra-11211-memcached",
            "intra-5432-postgres-database",
            "intra-2181-zookeeper-client",
            "intra-3888-zookeeper-peer",
            "broker",
        ],
        Host::N3 => &[
            "intra-11211-memcached",
            "intra-5432-postgres-database",
            "intra-2181-zookeeper-client",
            "intra-3888-zookeeper-peer",
        ],
        Host::Admin | Host::Outside => &[],
    }
}

/// Entries used on one node only (n1): unused in n2's and n3's reports, used in the cluster.
pub const USED_ON_N1_ONLY: &[&str] = &["ops-22-ssh", "ops-80-http", "ops-443-https"];

/// (transport, port) pairs some entry of the spec documents.
pub fn documented_ports(spec: &Path) -> Result<BTreeSet<(String, u16)>> {
    let text = std::fs::read_to_string(spec).map_err(io_err("reading", spec))?;
    let v: toml::Value = text
        .parse()
        .map_err(|e| super::ClusterError::UnexpectedOutput {
            command: format!("parsing {}", spec.display()),
            expected: "a TOML spec".into(),
            output: format!("{e}"),
        })?;
    let mut out = BTreeSet::new();
    for e in v
        .get("entry")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
    {
        let t = e
            .get("transport")
            .and_then(toml::Value::as_str)
            .unwrap_or("");
        for p in ports_of(e.get("ports")) {
            out.insert((t.to_owned(), p));
        }
    }
    Ok(out)
}

/// Every port an entry's `ports` value names (single ports, lists, ranges, labelled variants).
fn ports_of(v: Option<&toml::Value>) -> Vec<u16> {
    let text = match v {
        Some(toml::Value::Integer(i)) => i.to_string(),
        Some(toml::Value::String(s)) => s.clone(),
        Some(toml::Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    };
    // Numbers, with `a-b` as a range; labels and words in between are ignored.
    let mut out = Vec::new();
    let mut nums: Vec<(u32, bool)> = Vec::new(); // (number, preceded by '-')
    let mut cur = String::new();
    let mut dash = false;
    for ch in text.chars().chain(std::iter::once(' ')) {
        if ch.is_ascii_digit() {
            cur.push(ch);
            continue;
        }
        if !cur.is_empty() {
            nums.push((cur.parse().unwrap_or(0), dash));
            cur.clear();
            dash = false;
        }
        if ch == '-' {
            dash = true;
        } else if !ch.is_whitespace() {
            dash = false;
        }
    }
    let mut i = 0;
    while i < nums.len() {
        let (a, _) = nums[i];
        if let Some(&(b, true)) = nums.get(i + 1) {
            out.extend((a..=b).filter_map(|p| u16::try_from(p).ok()));
            i += 2;
        } else {
            out.extend(u16::try_from(a).ok());
            i += 1;
        }
    }
    out.retain(|&p| p > 0);
    out
}

fn findings<'a>(r: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    r["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |f| f["kind"] == kind)
}

fn entry_id(f: &Value) -> &str {
    f["entry"]["id"].as_str().unwrap_or("")
}

fn peers(f: &Value) -> BTreeSet<String> {
    f["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["addr"].as_str().map(str::to_owned))
        .collect()
}

/// Whether the report examined listening sockets (an agent does; an offline analysis cannot).
pub fn listeners_examined(r: &Value) -> bool {
    r["capture"]["listeners_unavailable"].is_null()
}

/// The checks of issue 8 item 3 on the per-node reports (`reports` has n1, n2, n3).
pub fn node_reports(reports: &BTreeMap<Host, Value>, spec: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let documented = documented_ports(spec)?;
    for h in Host::NODES {
        if !reports.contains_key(&h) {
            problems.push(format!("{h}: no report"));
        }
    }
    for (&h, r) in reports {
        // Redis: undocumented traffic and listener where it runs, only there as a server.
        let redis: Vec<&Value> = findings(r, "undocumented")
            .filter(|f| f["transport"] == "tcp" && f["port"] == 6379 && f["role"] == "server")
            .collect();
        if h == Host::N3 {
            match redis.as_slice() {
                [f] => {
                    let p = peers(f);
                    for want in [Host::Admin.v4(), Host::N1.v4()] {
                        if !p.contains(&want.to_string()) {
                            problems.push(format!(
                                "n3: undocumented tcp/6379 should name peer {want}; peers {p:?}"
                            ));
                        }
                    }
                    if !p.contains(&Host::Admin.v6().to_string()) {
                        problems.push(format!(
                            "n3: undocumented tcp/6379 should name the IPv6 peer {}; peers {p:?}",
                            Host::Admin.v6()
                        ));
                    }
                }
                other => problems.push(format!(
                    "n3: expected one undocumented finding for tcp/6379 served there, found {}",
                    other.len()
                )),
            }
        } else if !redis.is_empty() {
            problems.push(format!(
                "{h}: undocumented tcp/6379 served there, but Redis runs on n3"
            ));
        }
        if listeners_examined(r) {
            let listener = findings(r, "undocumented_listener")
                .any(|f| f["transport"] == "tcp" && f["port"] == 6379);
            if listener
                && !findings(r, "undocumented_listener").any(|f| {
                    f["port"] == 6379
                        && f["processes"]
                            .as_array()
                            .is_some_and(|p| p.iter().any(|n| n == "redis-server"))
                })
            {
                problems.push(format!(
                    "{h}: the tcp/6379 listener should name its process, redis-server"
                ));
            }
            if listener != (h == Host::N3) {
                problems.push(format!(
                    "{h}: undocumented listener tcp/6379 {}",
                    if listener {
                        "reported, but Redis runs on n3"
                    } else {
                        "missing"
                    }
                ));
            }
        }
        // Nothing the spec documents is called undocumented.
        for kind in ["undocumented", "undocumented_listener"] {
            for f in findings(r, kind) {
                let t = f["transport"].as_str().unwrap_or("");
                if let Some(p) = f["port"].as_u64().and_then(|p| u16::try_from(p).ok())
                    && documented.contains(&(t.to_owned(), p))
                {
                    problems.push(format!(
                        "{h}: {kind} finding for {t}/{p}, which the spec documents: {f}"
                    ));
                }
            }
        }
        // Unused entries: the never-used ones are listed; the used ones are not.
        let unused: BTreeSet<&str> = findings(r, "unused").map(entry_id).collect();
        for id in NEVER_USED {
            if !unused.contains(id) {
                problems.push(format!(
                    "{h}: entry {id} saw no traffic but is not reported unused"
                ));
            }
        }
        for id in used_on(h) {
            if unused.contains(id) {
                problems.push(format!(
                    "{h}: entry {id} carried traffic but is reported unused"
                ));
            }
        }
        // The broker nodes use AMQP 5672, management 15672, epmd 4369 and distribution 25672:
        // of the broker's ports only the TLS variant never saw traffic.
        if matches!(h, Host::N1 | Host::N2) {
            let broker: Vec<Vec<&str>> = findings(r, "unused_ports")
                .filter(|f| entry_id(f) == "broker")
                .map(|f| {
                    f["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect()
                })
                .collect();
            if broker != [vec!["5671 (TLS)", "15671 (TLS)"]] {
                problems.push(format!(
                    "{h}: broker's unused ports should be the TLS variant's, found {broker:?}"
                ));
            }
        }
        // The spec's outbound rows name no process, so no outbound traffic is a process
        // mismatch; the inbound rows' processes name listeners only.
        for f in findings(r, "process_mismatch").filter(|f| f["role"] == "client") {
            problems.push(format!("{h}: unexpected outbound process_mismatch: {f}"));
        }
        if h != Host::N1 {
            for id in USED_ON_N1_ONLY {
                if !unused.contains(id) {
                    problems.push(format!(
                        "{h}: entry {id} is used on n1 only but not reported unused here"
                    ));
                }
            }
        }
        // Zones: the only peer outside its zone is the outside client on the admin-only port.
        for f in findings(r, "peer_outside_zone") {
            let outside: Vec<&str> = f["outside"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let expected = h == Host::N1
                && entry_id(f) == "ops-22-ssh"
                && outside == [Host::Outside.v4().to_string()];
            if !expected {
                problems.push(format!("{h}: unexpected peer_outside_zone finding: {f}"));
            }
        }
        if h == Host::N1 && !findings(r, "peer_outside_zone").any(|f| entry_id(f) == "ops-22-ssh") {
            problems.push(
                "n1: the outside client reached the admin-only ssh port, but no peer_outside_zone finding names ops-22-ssh".into(),
            );
        }
        // memcached over UDP: the spec documents TCP.
        let want_role = match h {
            Host::N2 => Some("server"),
            Host::N1 => Some("client"),
            _ => None,
        };
        if let Some(role) = want_role
            && !findings(r, "wrong_transport").any(|f| {
                entry_id(f) == "intra-11211-memcached"
                    && f["transport"] == "udp"
                    && f["role"] == role
            })
        {
            problems.push(format!(
                "{h}: memcached over UDP ({role}) should be a wrong_transport finding of intra-11211-memcached"
            ));
        }
        let health = &r["health"];
        for k in [
            "capture_drops",
            "flow_table_full",
            "port_table_full",
            "malformed",
        ] {
            if health[k].as_u64().unwrap_or(0) != 0 {
                problems.push(format!("{h}: health.{k} = {}", health[k]));
            }
        }
    }
    // Outbound flows name the process holding their connection when it is open at the socket
    // scan: the RabbitMQ cluster link (beam.smp on one broker node connects to the other's
    // distribution port) and the ZooKeeper followers' links to the leader (java). Only where
    // sockets were read (the agents; `portwatch analyze` of captures reads none).
    let scanned = Host::NODES
        .iter()
        .all(|h| reports.get(h).is_some_and(listeners_examined));
    let outbound_owners: &[(&str, &str, &[Host])] = if scanned {
        &[
            ("broker", "beam.smp", &[Host::N1, Host::N2]),
            ("intra-2888-zookeeper-peer", "java", &Host::NODES),
        ]
    } else {
        &[]
    };
    for &(entry, process, nodes) in outbound_owners {
        let named = nodes.iter().filter_map(|h| reports.get(h)).any(|r| {
            findings(r, "documented").any(|f| {
                entry_id(f) == entry
                    && f["role"] == "client"
                    && f["processes"]
                        .as_array()
                        .is_some_and(|p| p.iter().any(|n| n == process))
            })
        });
        if !named {
            let seen: Vec<String> = nodes
                .iter()
                .filter_map(|h| reports.get(h).map(|r| (h, r)))
                .flat_map(|(h, r)| {
                    findings(r, "documented")
                        .filter(|f| entry_id(f) == entry)
                        .map(move |f| format!("{h} {} {}", f["role"], f["processes"]))
                })
                .collect();
            problems.push(format!(
                "no node's documented client traffic of {entry} names its process {process} \
                 (documented: {seen:?})"
            ));
        }
    }
    Ok(problems)
}

/// The checks of issue 8 item 4 on the cluster report (`portwatch merge` of n1, n2, n3): an
/// entry used on one node only is not unused in the cluster; entries nothing used are.
pub fn cluster_report(c: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect()
    };
    let unused: BTreeSet<&str> = c["unused"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["id"].as_str())
        .collect();
    for id in NEVER_USED {
        if !unused.contains(id) {
            problems.push(format!(
                "cluster: entry {id} saw no traffic anywhere but is not unused"
            ));
        }
    }
    for h in Host::NODES {
        for id in used_on(h) {
            if unused.contains(id) {
                problems.push(format!(
                    "cluster: entry {id} is used on {h} but unused in the cluster"
                ));
            }
        }
    }
    for id in USED_ON_N1_ONLY {
        let usage = c["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|u| u["entry"]["id"] == *id);
        match usage {
            Some(u) => {
                let (used, not) = (names(&u["used_on"]), names(&u["unused_on"]));
                if used != ["n1"] || not != ["n2", "n3"] {
                    problems.push(format!(
                        "cluster: entry {id} should be used on n1 and unused on n2, n3; used_on {used:?}, unused_on {not:?}"
                    ));
                }
            }
            None => problems.push(format!("cluster: no usage line for entry {id}")),
        }
    }
    let nodes: Vec<String> = c["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["name"].as_str().map(str::to_owned))
        .collect();
    if nodes != ["n1", "n2", "n3"] {
        problems.push(format!("cluster: nodes {nodes:?}, expected n1, n2, n3"));
    }
    let findings: Vec<&Value> = c["findings"].as_array().into_iter().flatten().collect();
    if !findings
        .iter()
        .any(|f| f["node"] == "n3" && f["kind"] == "undocumented" && f["port"] == 6379)
    {
        problems.push("cluster: the findings should list n3's undocumented tcp/6379".into());
    }
    if !findings.iter().any(|f| {
        f["node"] == "n1" && f["kind"] == "peer_outside_zone" && f["entry"]["id"] == "ops-22-ssh"
    }) {
        problems.push(
            "cluster: the findings should list n1's peer outside the zone of ops-22-ssh".into(),
        );
    }
    problems
}

/// Per-port totals portwatch reports against tshark's, exactly (packets and link-layer bytes),
/// for every key of the oracle whose port is on this node's side.
pub fn port_counts(
    h: Host,
    portwatch: &BTreeMap<PortKey, (u64, u64)>,
    oracle: &BTreeMap<PortKey, Counts>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (k, c) in oracle.iter().filter(|(k, _)| k.side == Side::Local) {
        let got = portwatch.get(k).copied().unwrap_or((0, 0));
        if got != (c.packets, c.frame_bytes) {
            problems.push(format!(
                "{h} {k}: portwatch counted {} packets / {} bytes, tshark {} / {}",
                got.0, got.1, c.packets, c.frame_bytes
            ));
        }
    }
    problems
}

/// The exact per-port counts a report's findings carry (`port_totals`: the service ports on the
/// service side, summed over `ports_seen`) against tshark's, for every finding whose ports the
/// oracle counted. Returns the problems and how many findings were compared.
pub fn finding_port_totals(
    h: Host,
    report: &Value,
    oracle: &BTreeMap<PortKey, Counts>,
) -> (Vec<String>, usize) {
    use super::daemons::Transport;
    use super::oracle::Dir;
    let mut problems = Vec::new();
    let mut compared = 0;
    for f in report["findings"].as_array().into_iter().flatten() {
        let t = &f["port_totals"];
        if t.is_null() {
            continue;
        }
        let transport = match f["transport"].as_str() {
            Some("tcp") => Transport::Tcp,
            Some("udp") => Transport::Udp,
            _ => continue,
        };
        let side = if f["role"] == "client" {
            Side::Remote
        } else {
            Side::Local
        };
        let ports: Vec<u16> = match f["port"].as_u64() {
            Some(p) => vec![u16::try_from(p).unwrap_or(0)],
            None => f["ports_seen"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_u64().and_then(|p| u16::try_from(p).ok()))
                .collect(),
        };
        let sum = |dir: Dir| -> Option<(u64, u64)> {
            let mut acc = (0, 0);
            for &port in &ports {
                let c = oracle.get(&PortKey {
                    transport,
                    port,
                    side,
                    dir,
                })?;
                acc.0 += c.packets;
                acc.1 += c.frame_bytes;
            }
            Some(acc)
        };
        let (Some(want_in), Some(want_out)) = (sum(Dir::In), sum(Dir::Out)) else {
            continue;
        };
        if ports.is_empty() {
            continue;
        }
        compared += 1;
        let got_in = (
            t["packets_in"].as_u64().unwrap_or(0),
            t["bytes_in"].as_u64().unwrap_or(0),
        );
        let got_out = (
            t["packets_out"].as_u64().unwrap_or(0),
            t["bytes_out"].as_u64().unwrap_or(0),
        );
        if (got_in, got_out) != (want_in, want_out) {
            problems.push(format!(
                "{h} {} finding on {}/{ports:?} ({side:?} side): port_totals in {got_in:?} out {got_out:?} (packets, bytes), tshark in {want_in:?} out {want_out:?}",
                f["kind"].as_str().unwrap_or("?"),
                transport.name(),
            ));
        }
    }
    (problems, compared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_of_reads_every_shape() {
        let v = |s: &str| toml::Value::String(s.into());
        assert_eq!(ports_of(Some(&toml::Value::Integer(22))), vec![22]);
        assert_eq!(
            ports_of(Some(&v(
                "Default: 5672, 15672; TLS: 5671, 15671; Dist: 25672; Discovery (ERL): 4369"
            ))),
            vec![5672, 15672, 5671, 15671, 25672, 4369]
        );
        assert_eq!(ports_of(Some(&v("445, 137-139"))), vec![445, 137, 138, 139]);
        assert_eq!(ports_of(Some(&v("25 or 587"))), vec![25, 587]);
        assert!(ports_of(Some(&v("none"))).is_empty());
    }

    #[test]
    fn the_scenario_spec_documents_the_services_but_not_redis() {
        let d = documented_ports(&super::super::portwatch::spec_path()).expect("reading the spec");
        for p in [
            22, 80, 443, 2181, 2888, 3888, 4369, 5432, 5672, 11211, 15672, 25672,
        ] {
            assert!(
                d.contains(&("tcp".into(), p)),
                "tcp/{p} should be documented"
            );
        }
        assert!(
            !d.contains(&("tcp".into(), 6379)),
            "Redis must not be documented"
        );
        assert!(
            !d.contains(&("udp".into(), 11211)),
            "memcached is documented over TCP only"
        );
    }
}
