//! The shipped specs (specs/*.toml) against the vendor documents they transcribe
//! (specs/vendor-docs/*.txt): entry counts pinned, a sample of rows checked against the
//! document text, every entry's ports found on the line it cites, and the linter reporting the
//! documents' known inconsistencies.
use std::path::PathBuf;

use portwatch::inventory::Inventory;
use portwatch::spec::lint::{LintKind, lint};
use portwatch::spec::{DirectionSpec, Entry, Peer, Ports, Spec, TransportSpec};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load(name: &str) -> (Spec, String) {
    let path = repo().join("specs").join(name);
    let spec = Spec::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let copy = spec
        .document
        .copy
        .clone()
        .expect("shipped specs name their document copy");
    let doc = std::fs::read_to_string(repo().join("specs").join(copy)).unwrap();
    (spec, doc)
}

/// The document lines an entry cites, joined.
fn cited<'a>(doc: &'a str, e: &Entry) -> Vec<&'a str> {
    let a = e.origin.line.expect("every shipped entry cites its line") as usize;
    let b = e.origin.line_end.map_or(a, |b| b as usize);
    doc.lines().skip(a - 1).take(b - a + 1).collect()
}

fn entry<'a>(s: &'a Spec, id: &str) -> &'a Entry {
    s.entry(id).unwrap_or_else(|| panic!("no entry {id}"))
}

fn zone(z: &str) -> Peer {
    Peer::Zone(z.to_string())
}

#[test]
fn entry_counts_are_pinned() {
    // Sisense: 28 table rows (Oxygen and Orchestrator have continuation rows) + 2 notes.
    assert_eq!(load("sisense-multinode.toml").0.entries.len(), 30);
    // ThoughtSpot: 8 + 79 + 6 + 5 + 3 rows in its four tables (the third has two parts).
    assert_eq!(load("thoughtspot.toml").0.entries.len(), 101);
}

#[test]
fn every_entry_cites_a_document_line_that_carries_its_ports() {
    for name in ["sisense-multinode.toml", "thoughtspot.toml"] {
        let (spec, doc) = load(name);
        for e in &spec.entries {
            assert!(!cited(&doc, e).is_empty(), "{}: line out of range", e.id);
        }
        let w: Vec<_> = lint(&spec, None, Some(&doc))
            .into_iter()
            .filter(|w| w.kind == LintKind::OriginMismatch)
            .collect();
        assert!(w.is_empty(), "{name}: {w:#?}");
    }
}

#[test]
fn sisense_sample_rows_match_the_document() {
    let (s, doc) = load("sisense-multinode.toml");
    let oxy = entry(&s, "oxygen-licensing-in");
    assert_eq!(oxy.ports, "31112".parse().unwrap());
    assert_eq!(oxy.direction, Some(DirectionSpec::Inbound));
    assert_eq!(oxy.processes, ["Sisense.Oxygen.exe"]);
    assert!(cited(&doc, oxy)[0].contains("HTTP 31112 Inbound Sisense.Oxygen.exe"));
    for id in ["oxygen-licensing-out", "oxygen-tracking-out"] {
        let e = entry(&s, id);
        assert_eq!(
            (e.ports.to_string(), e.direction),
            ("443".into(), Some(DirectionSpec::Outbound))
        );
        assert!(cited(&doc, e)[0].contains("HTTP 443 Outbound"), "{id}");
    }
    let broker = entry(&s, "broker");
    let Ports::Variants(v) = &broker.ports else {
        panic!("{:?}", broker.ports)
    };
    let labels: Vec<(&str, String)> = v
        .iter()
        .map(|v| (v.label.as_str(), v.ports.to_string()))
        .collect();
    assert_eq!(
        labels,
        [
            ("Default", "5672, 15672".to_string()),
            ("TLS", "5671, 15671".into()),
            ("Dist", "25672".into()),
            ("Discovery (ERL)", "4369".into())
        ]
    );
    assert_eq!(
        broker.ports.matches(4369).and_then(|m| m.label),
        Some("Discovery (ERL)")
    );
    assert_eq!(broker.alternatives, ["Default", "TLS"]);
    assert_eq!(broker.app.as_deref(), Some("AMQP"));
    assert_eq!(
        broker.processes,
        ["Sisense.AlertingMQ.exe", "epmd.exe", "erl.exe"]
    );
    let text = cited(&doc, broker).join("\n");
    assert!(text.contains("Default: 5672, 15672TLS: 5671,15671") && text.contains("erl.exe"));

    let winrm = entry(&s, "install-remote-management");
    assert!(winrm.flags.install_only);
    assert_eq!(winrm.ports, "5986".parse().unwrap());
    assert!(cited(&doc, winrm)[0].contains("port 5986 should be open"));

    let ping = entry(&s, "elasticube-ping");
    assert_eq!(
        (ping.transport, ping.ports.clone()),
        (Some(TransportSpec::Icmp), Ports::None)
    );
    assert!(cited(&doc, ping)[0].contains("Make sure that ICMP communication is enabled"));

    let shipper = entry(&s, "shipper");
    assert_eq!(
        shipper.destinations,
        [Peer::Host("listener.logz.io".into())]
    );
    assert_eq!(
        (shipper.ports.to_string(), shipper.direction),
        ("5052".into(), Some(DirectionSpec::Outbound))
    );
    assert!(cited(&doc, shipper).contains(&"listener.logz.io"));

    let smb = entry(&s, "orchestrator-elasticube-distribution");
    assert_eq!(smb.ports.to_string(), "445, 137-139");
    assert_eq!(smb.transport, Some(TransportSpec::Any));

    // Corrections keep what the document wrote.
    let sm = entry(&s, "storage-manager");
    assert_eq!(sm.ports.to_string(), "15000-15050");
    assert_eq!(
        sm.origin
            .document_ports
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("1500-15050")
    );
    assert!(
        cited(&doc, sm)
            .last()
            .unwrap()
            .contains("HTTP 1500-15050 Inbound")
    );
    let clr = entry(&s, "clr-connectors-container");
    assert!(cited(&doc, clr)[0].ends_with("Sisense.JVMConnectorsContainer.exe"));
    assert_eq!(
        clr.origin.document_processes.as_deref(),
        Some(&["Sisense.JVMConnectorsContainer.exe".to_string()][..])
    );

    // N/A rows document processes that should not use the network.
    for id in ["collector", "housekeeper", "jobs"] {
        let e = entry(&s, id);
        assert!(!e.is_network() && e.direction.is_none(), "{id}");
    }
}

#[test]
fn thoughtspot_sample_rows_match_the_document() {
    let (t, doc) = load("thoughtspot.toml");
    let dynamic = entry(&t, "intra-dynamic-20123-32768");
    assert_eq!(dynamic.ports.to_string(), "20123-32768");
    assert!(dynamic.flags.dynamic_range);
    assert!(cited(&doc, dynamic)[0].starts_with("20123 - 32768 TCP (dynamic)"));

    let icmp = entry(&t, "intra-icmp-health-check");
    assert_eq!(
        (icmp.transport, icmp.ports.clone()),
        (Some(TransportSpec::Icmp), Ports::None)
    );
    assert!(cited(&doc, icmp)[0].contains("ICMPv4 Used for health check of cluster nodes"));

    let egnyte = entry(&t, "egress-443-egnyte");
    assert_eq!(
        egnyte.destinations,
        [Peer::Addr("208.83.110.20".parse().unwrap())]
    );
    assert_eq!(egnyte.direction, Some(DirectionSpec::Outbound));
    let influx = entry(&t, "egress-443-influxcloud");
    assert_eq!(influx.destinations.len(), 4);
    assert!(
        influx
            .destinations
            .contains(&Peer::Host("s3.dualstack.us-west-1.amazonaws.com".into()))
    );
    assert_eq!(cited(&doc, influx).len(), 5);

    let smtp = entry(&t, "egress-smtp");
    assert_eq!(smtp.ports, "25 or 587".parse().unwrap());
    assert_eq!(smtp.ports.matches(587).map(|m| m.group), Some(1));
    assert_eq!(
        (smtp.sources.clone(), smtp.destinations.clone()),
        (vec![zone("all-nodes")], vec![zone("smtp-relay")])
    );
    assert!(cited(&doc, smtp)[0].starts_with("25 or 587 SMTP SMTP or Secure SMTP outbound"));
    let ldap = entry(&t, "egress-ldap");
    assert_eq!(ldap.ports, "389 or 636".parse().unwrap());
    assert_eq!(ldap.destinations, [zone("ldap-server")]);

    let ipmi: Vec<&Entry> = t
        .entries
        .iter()
        .filter(|e| e.id.starts_with("ipmi-"))
        .collect();
    let got: Vec<(String, Option<TransportSpec>)> = ipmi
        .iter()
        .map(|e| (e.ports.to_string(), e.transport))
        .collect();
    assert_eq!(
        got,
        [
            ("80".to_string(), Some(TransportSpec::Tcp)),
            ("443".into(), Some(TransportSpec::Tcp)),
            ("623".into(), Some(TransportSpec::Udp))
        ]
    );
    assert!(
        cited(&doc, ipmi[2])[0]
            .starts_with("623 UDP Serial-over-LAN bidirectional ThoughtSpot Support")
    );

    let ssh = entry(&t, "ops-22-ssh");
    assert_eq!(
        (ssh.sources.clone(), ssh.destinations.clone()),
        (vec![zone("admin")], vec![zone("all-nodes")])
    );
    let oreo = entry(&t, "intra-2101-oreo-http");
    assert_eq!(oreo.sources, [zone("admin"), zone("all-nodes")]);
    let ntp = entry(&t, "access-123-ntp-service");
    assert_eq!(ntp.transport, Some(TransportSpec::Udp));
    assert!(entry(&t, "access-2049-nfs").flags.optional);
}

#[test]
fn lint_reports_the_documents_inconsistencies() {
    let (s, sdoc) = load("sisense-multinode.toml");
    let w = lint(&s, None, Some(&sdoc));
    let got: Vec<(LintKind, Vec<String>)> = w.iter().map(|w| (w.kind, w.entries.clone())).collect();
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        got,
        [
            (LintKind::NoPorts, ids(&["collector"])),
            (LintKind::NoPorts, ids(&["housekeeper"])),
            (
                LintKind::SwappedProcess,
                ids(&["clr-connectors-container", "jvm-connectors-container"])
            ),
            (LintKind::NoPorts, ids(&["jobs"])),
            (LintKind::SuspiciousRange, ids(&["storage-manager"])),
            (LintKind::NoPorts, ids(&["query-proxy"])),
        ],
        "{w:#?}"
    );
    assert!(w[4].message.contains("1500-15050") && w[4].message.contains("15000-15050"));

    let (t, tdoc) = load("thoughtspot.toml");
    let w = lint(&t, None, Some(&tdoc));
    let find = |kind: LintKind, needle: &str| {
        w.iter()
            .find(|w| w.kind == kind && w.message.contains(needle))
            .unwrap_or_else(|| panic!("no {kind} with {needle:?} in {w:#?}"))
    };
    let dup = find(LintKind::DuplicateRow, "4243");
    assert_eq!(
        dup.entries,
        [
            "intra-4243-sage-auto-complete-metadata",
            "intra-4243-sage-auto-complete-metadata-2"
        ]
    );
    for port in ["port 3181/tcp", "port 4181/tcp"] {
        let c = find(LintKind::PortConflict, port);
        assert!(
            c.message.contains("client connections") && c.message.contains("between themselves"),
            "{}",
            c.message
        );
    }
    let c = find(LintKind::PortConflict, "port 4853/tcp");
    assert!(
        c.message.contains("under two protocols: HTTP") && c.message.contains("RPC"),
        "{}",
        c.message
    );
    find(LintKind::PortConflict, "port 4251/tcp");
    find(LintKind::DuplicateRow, "`ipmi-80-http`");
    assert_eq!(w.len(), 6, "{w:#?}");
}

#[test]
fn example_inventory_binds_every_zone_and_host_of_the_shipped_specs() {
    let inv = Inventory::load(repo().join("specs/inventory.example.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    for name in ["sisense-multinode.toml", "thoughtspot.toml"] {
        let (spec, _) = load(name);
        let unbound: Vec<_> = lint(&spec, Some(&inv), None)
            .into_iter()
            .filter(|w| matches!(w.kind, LintKind::UnboundZone | LintKind::UnboundHost))
            .collect();
        assert!(unbound.is_empty(), "{name}: {unbound:#?}");
    }
    assert_eq!(
        inv.zone_contains("all-nodes", "::ffff:10.0.1.12".parse().unwrap()),
        Some(true)
    );
}
