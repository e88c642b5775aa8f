//! The importer's tests: each vendor format and the row shapes of the shipped seeds.
use super::*;

fn one(text: &str, format: Format) -> DraftRow {
    let d = import(text, format);
    assert_eq!(d.rows.len(), 1, "{d:#?}");
    d.rows.into_iter().next().unwrap()
}

#[test]
fn text_port_first_table() {
    let text = "Intro\n\nPort Protocol Service Name Direction Source Destination Description\n\
                22 SSH SSH bidirectional Administrators IP addresses All nodes Secure shell access.\n\
                25 or 587 SMTP SMTP or Secure SMTP outbound All nodes and SMTP relay (provided by customer) All nodes Alerts.\n\
                \x20 ICMPv4 Used for health check bidirectional All nodes All nodes Services\n";
    let d = import(text, Format::Text);
    assert_eq!(d.rows.len(), 3, "{d:#?}");
    let ssh = &d.rows[0];
    assert_eq!(ssh.ports.to_string(), "22");
    assert_eq!(
        (ssh.transport, ssh.app.as_deref()),
        (Some(TransportSpec::Tcp), Some("SSH"))
    );
    assert_eq!(ssh.sources, [Peer::Zone("admin".into())]);
    assert_eq!(ssh.description, "Secure shell access.");
    assert!(ssh.doubts.is_empty(), "{:?}", ssh.doubts);
    let smtp = &d.rows[1];
    assert_eq!(smtp.ports.to_string(), "25 or 587");
    assert_eq!(smtp.service, "SMTP or Secure SMTP");
    assert_eq!(smtp.destinations, [Peer::Zone("smtp-relay".into())]);
    assert_eq!(smtp.doubts.len(), 1, "{:?}", smtp.doubts);
    let icmp = &d.rows[2];
    assert_eq!(
        (icmp.transport, icmp.ports.clone()),
        (Some(TransportSpec::Icmp), Ports::None)
    );
    assert_eq!(d.zones["admin"], "Administrators IP addresses");
}

#[test]
fn text_service_first_table_with_multiline_rows() {
    let text = "Service Description Protocol Ports/Range Direction Process Name\n\
                Acme.Web Web front HTTP 8080 Inbound acme-web.exe\n\
                HTTP 443 Outbound\n\
                Acme.Bus\n\nMessage bus\n  • one\nAMQP Default: 5672, 15672TLS: 5671,15671\nDist: 25672\nInbound\n\nbus.exe\n\nerl.exe\n\
                Acme.Ship Shipper TCP 5052 Outbound\n\nship.exe\n\nExternal Address:\n\nlogs.example.com\n\
                Acme.Idle Watchdog N/A N/A N/A idle.exe\n\n\
                Note:\n\nDuring installation port 5986 should be open on all nodes; it can be closed after.\n";
    let d = import(text, Format::Text);
    let summary: Vec<(u32, u32, String, String)> = d
        .rows
        .iter()
        .map(|r| (r.line, r.line_end, r.service.clone(), r.ports.to_string()))
        .collect();
    assert_eq!(
        summary,
        [
            (2, 2, "Acme.Web".to_string(), "8080".to_string()),
            (3, 3, "Acme.Web".into(), "443".into()),
            (
                4,
                14,
                "Acme.Bus".into(),
                "Default: 5672, 15672; TLS: 5671, 15671; Dist: 25672".into()
            ),
            (15, 21, "Acme.Ship".into(), "5052".into()),
            (22, 22, "Acme.Idle".into(), "none".into()),
            (26, 26, "Port 5986 (from a note)".into(), "5986".into()),
        ],
        "{d:#?}"
    );
    assert_eq!(d.rows[2].processes, ["bus.exe", "erl.exe"]);
    assert_eq!(d.rows[2].description, "Message bus one");
    assert_eq!(
        d.rows[3].destinations,
        [Peer::Host("logs.example.com".into())]
    );
    assert_eq!(d.rows[3].processes, ["ship.exe"]);
    assert_eq!(d.rows[1].direction, Some(DirectionSpec::Outbound));
    assert_eq!(d.rows[4].transport, None);
    assert!(d.rows[5].flags.install_only);
}

#[test]
fn csv_and_markdown_read_explicit_cells() {
    let csv = "Port,Protocol,Service,Direction,Source,Destination\n\"389 or 636\",TCP,\"LDAP, or LDAPS\",outbound,All nodes,LDAP server (provided by customer)\n";
    let r = one(csv, Format::Csv);
    assert_eq!(r.ports.to_string(), "389 or 636");
    assert_eq!(r.service, "LDAP, or LDAPS");
    assert_eq!(r.destinations, [Peer::Zone("ldap-server".into())]);
    assert_eq!(r.line, 2);
    let md = "# Ports\n\n| Port | Protocol | Service | Direction | Source |\n|---|---|---|---|---|\n| 623 | UDP | Serial-over-LAN | bidirectional | Web servers |\n";
    let r = one(md, Format::Markdown);
    assert_eq!(
        (r.ports.to_string(), r.transport),
        ("623".to_string(), Some(TransportSpec::Udp))
    );
    assert_eq!(r.sources, [Peer::Zone("web-servers".into())]);
    assert_eq!(r.table, "Ports");
    assert!(
        r.doubts.iter().any(|d| d.contains("not a known zone")),
        "{:?}",
        r.doubts
    );
}

#[test]
fn draft_parses_as_a_spec() {
    let text = "Port Protocol Service Name Direction Source Destination Description\n\
                80 HTTP HTTP bidirectional All users IP addresses All nodes Web.\n\
                80 HTTP HTTP bidirectional All users IP addresses All nodes Web.\n\
                20123 - 32768 TCP (dynamic) Dynamic range for services All nodes Services\n";
    let d = import(text, Format::Text);
    let toml = d.to_toml("My Vendor!", "doc.txt");
    let spec = Spec::parse(&toml, "draft.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(spec.entries.len(), 3);
    assert_eq!(spec.name, "my-vendor");
    assert_eq!(spec.entries[1].id, "http-80-2");
    let dynamic = &spec.entries[2];
    assert!(dynamic.flags.dynamic_range);
    assert_eq!(dynamic.direction, Some(DirectionSpec::Bidirectional));
    assert!(toml.contains("# unsure: no direction given"), "{toml}");
}

/// Found by the spec_import fuzz target: a control character in a cell ended up in an
/// `# unsure:` comment, where TOML forbids it, and the draft did not parse.
#[test]
fn regression_control_character_in_a_doubt_comment() {
    let csv = "Port,Protocol,Service,Direction,Source,Destination\n25 or 587,SMTP,,outbound,All nodes,\u{1}tSMTP relay\u{7f} (x)\n";
    let d = import(csv, Format::Csv);
    assert!(
        d.rows[0].doubts.iter().any(|d| d.contains('\u{1}')),
        "{:?}",
        d.rows[0].doubts
    );
    let toml = d.to_toml("x", "x.csv");
    Spec::parse(&toml, "draft.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert!(toml.contains("\\u{1}tSMTP"), "{toml}");
}

#[test]
fn garbage_gives_an_empty_draft() {
    for f in [Format::Text, Format::Csv, Format::Markdown] {
        let d = import("\u{0}\"|||\n,,,\nPort Protocol Direction\n||\n\"", f);
        let toml = d.to_toml("", "");
        Spec::parse(&toml, "x.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
    }
}
