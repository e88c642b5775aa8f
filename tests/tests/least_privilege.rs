//! Least privilege (issue 9): the real agent binary, eBPF backend, run with only the documented
//! capabilities (uid 0 with SECBIT_NOROOT locked, so nothing beyond the ambient set, as in the
//! systemd unit), counts UDP exactly; with any one of them dropped it fails and names the one
//! missing.
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use portwatch_tests::agent::{Agent, command, port_totals, require_capsh, udp_spec};
use portwatch_tests::{Link, PinDir, portwatch_bin, require_root};
use serde_json::Value;

/// What docs/agent.md documents for the eBPF backend.
const EBPF_CAPS: [&str; 2] = ["cap_bpf", "cap_net_admin"];
const N: u64 = 300;

fn args(link: &Link, dir: &std::path::Path, pins: &PinDir) -> Vec<String> {
    vec![
        "run".into(),
        "--backend".into(),
        "ebpf".into(),
        "-v".into(),
        "--spec".into(),
        dir.join("spec.toml").display().to_string(),
        "--iface".into(),
        link.a_if.clone(),
        "--interval".into(),
        "1h".into(),
        "--node".into(),
        "a".into(),
        "--out".into(),
        dir.join("out").display().to_string(),
        "--format".into(),
        "json".into(),
        "--pin-dir".into(),
        pins.path.display().to_string(),
        "--no-metrics".into(),
    ]
}

#[test]
fn ebpf_agent_runs_with_only_the_documented_capabilities() {
    let name = "ebpf_agent_runs_with_only_the_documented_capabilities";
    if !require_root(name) || !require_capsh(name) {
        return;
    }
    let link = Link::new().expect("veth pair");
    let pins = PinDir::new("lp").expect("bpffs pin dir");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("spec.toml"),
        udp_spec("least-privilege", 7000),
    )
    .unwrap();
    let caps = EBPF_CAPS.join(",");
    let mut agent = Agent::spawn(command(
        &link.a.path(),
        Some(&caps),
        &portwatch_bin(),
        &args(&link, dir.path(), &pins),
    ))
    .expect("starting capsh");
    assert!(
        agent.wait_for("capturing with ebpf", Duration::from_secs(60)),
        "the agent did not start with {caps}:\n{}",
        agent.log()
    );
    // It really runs without the rest of root's capabilities: CAP_BPF (39) and CAP_NET_ADMIN
    // (12), nothing else (no CAP_PERFMON: the programs do no variable packet-pointer arithmetic).
    assert_eq!(
        agent.cap_eff(),
        Some((1 << 39) | (1 << 12)),
        "effective set of the agent"
    );

    let a_v4 = link.a_v4;
    let b_v4 = link.b_v4;
    link.b
        .spawn_thread(move || {
            let s = UdpSocket::bind((b_v4, 0)).unwrap();
            for _ in 0..N {
                s.send_to(&[0x5a; 100], SocketAddr::from((a_v4, 7000)))
                    .unwrap();
            }
        })
        .join()
        .unwrap();
    agent.signal(libc::SIGTERM);
    let (status, log) = agent.wait();
    assert!(status.success(), "agent exit {status}:\n{log}");
    let report: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("out/portwatch-a.json")).expect("report written"),
    )
    .expect("report is JSON");
    assert_eq!(
        port_totals(&report, "udp", 7000),
        (N, N * (14 + 20 + 8 + 100))
    );
}

#[test]
fn each_missing_capability_is_named() {
    let name = "each_missing_capability_is_named";
    if !require_root(name) || !require_capsh(name) {
        return;
    }
    let link = Link::new().expect("veth pair");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("spec.toml"),
        udp_spec("least-privilege", 7000),
    )
    .unwrap();
    for dropped in EBPF_CAPS {
        let pins = PinDir::new("lpd").expect("bpffs pin dir");
        let caps: Vec<&str> = EBPF_CAPS
            .iter()
            .copied()
            .filter(|c| *c != dropped)
            .collect();
        // A bounded run, in case it starts after all.
        let mut a = args(&link, dir.path(), &pins);
        a.extend(["--duration".into(), "20s".into()]);
        let agent = Agent::spawn(command(
            &link.a.path(),
            Some(&caps.join(",")),
            &portwatch_bin(),
            &a,
        ))
        .expect("starting capsh");
        let (status, log) = agent.wait();
        assert!(!status.success(), "started without {dropped}:\n{log}");
        let wanted = format!("lacks {}", dropped.to_uppercase());
        assert!(
            log.contains(&wanted),
            "without {dropped} the error does not say `{wanted}`:\n{log}"
        );
    }
}
