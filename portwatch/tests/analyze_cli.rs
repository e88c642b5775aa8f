//! `portwatch analyze` end to end: capture files written by the test, a small spec, the real
//! binary; checks findings, damage reporting and the observation view.
use std::path::Path;
use std::process::Command;

use portwatch::capture::testdata as td;

const NODE: [u8; 4] = [10, 0, 0, 5];
const CLIENT: [u8; 4] = [10, 0, 9, 7];

const SPEC: &str = r#"
[spec]
name = "pcap-test"
vendor = "Acme"

[[entry]]
id = "https"
service = "Web"
ports = 443
transport = "tcp"
direction = "inbound"
"#;

fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    td::ethernet(
        &[],
        0x0800,
        &td::ipv4(src, dst, 6, &[], 0, false, &td::tcp(sport, dport, flags)),
    )
}

fn capture() -> Vec<td::Record> {
    vec![
        td::Record::new(1_000_000_000, tcp(CLIENT, NODE, 40000, 443, 0x02)),
        td::Record::new(1_000_100_000, tcp(NODE, CLIENT, 443, 40000, 0x12)),
        td::Record::new(1_000_200_000, tcp(CLIENT, NODE, 40000, 443, 0x10)),
        // Undocumented: a client opens TCP 6379 on the node.
        td::Record::new(2_000_000_000, tcp(CLIENT, NODE, 40001, 6379, 0x02)),
        td::Record::new(2_000_100_000, tcp(NODE, CLIENT, 6379, 40001, 0x12)),
    ]
}

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portwatch"))
        .current_dir(dir)
        .arg("analyze")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn analyze_reports_documented_and_undocumented_traffic_from_pcap_and_pcapng() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spec.toml"), SPEC).unwrap();
    std::fs::write(
        dir.path().join("a.pcap"),
        td::pcap_file(1, false, false, &capture()),
    )
    .unwrap();
    let ng = td::pcapng_file(
        &[td::NgIface {
            linktype: 1,
            tsresol: Some(9),
        }],
        &capture(),
    );
    std::fs::write(dir.path().join("a.pcapng"), ng).unwrap();
    for file in ["a.pcap", "a.pcapng"] {
        let (code, out, err) = run(
            dir.path(),
            &[
                "--spec",
                "spec.toml",
                "--local",
                "10.0.0.5",
                "--format",
                "json",
                "--exit-code",
                file,
            ],
        );
        assert_eq!(code, 1, "undocumented traffic and --exit-code: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let findings = v["findings"].as_array().unwrap();
        let find = |kind: &str, port: u64| {
            findings
                .iter()
                .find(|f| f["kind"] == kind && f["port"] == port)
                .unwrap_or_else(|| panic!("no {kind} finding on {port} in {out}"))
        };
        let doc = find("documented", 443);
        assert_eq!(doc["entry"]["id"], "https");
        assert_eq!(doc["traffic"]["packets_in"], 2);
        assert_eq!(doc["traffic"]["packets_out"], 1);
        assert_eq!(doc["traffic"]["flows"], 1);
        let und = find("undocumented", 6379);
        assert_eq!(und["role"], "server");
        assert_eq!(v["health"]["packets_seen"], 5);
        assert_eq!(v["capture"]["backend"], "file");
    }
}

#[test]
fn analyze_reads_a_damaged_file_up_to_the_damage_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spec.toml"), SPEC).unwrap();
    let full = td::pcap_file(1, false, false, &capture());
    // Cut inside the fourth record.
    let rec = 16 + capture()[0].data.len();
    let cut = 24 + 3 * rec + 10;
    std::fs::write(dir.path().join("cut.pcap"), &full[..cut]).unwrap();
    let (code, out, err) = run(
        dir.path(),
        &[
            "--spec",
            "spec.toml",
            "--observations",
            "--format",
            "json",
            "cut.pcap",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("at byte offset {}", 24 + 3 * rec)),
        "{err}"
    );
    assert!(err.contains("3 frames before it"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["observations"]["health"]["packets_seen"], 3);
    assert!(
        v["files"][0]["error"]
            .as_str()
            .unwrap()
            .contains("file ends inside a pcap record")
    );
}

#[test]
fn observations_need_no_spec_and_a_report_does() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.pcap"),
        td::pcap_file(1, false, false, &capture()),
    )
    .unwrap();
    // A spec path that does not exist is not even opened with --observations.
    for args in [
        &["--observations", "--format", "json", "a.pcap"][..],
        &[
            "--spec",
            "missing.toml",
            "--observations",
            "--format",
            "json",
            "a.pcap",
        ][..],
    ] {
        let (code, out, err) = run(dir.path(), args);
        assert_eq!(code, 0, "{args:?}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["observations"]["health"]["packets_seen"], 5);
        assert_eq!(v["observations"]["flows"].as_array().unwrap().len(), 2);
    }
    let (code, _, err) = run(dir.path(), &["a.pcap"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--spec"), "{err}");
}

#[test]
fn analyze_rejects_a_file_that_is_not_a_capture() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spec.toml"), SPEC).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    let (code, _, err) = run(dir.path(), &["--spec", "spec.toml", "notes.txt"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("notes.txt is not a readable capture file"),
        "{err}"
    );
    assert!(err.contains("not a pcap or pcapng file"), "{err}");
}
