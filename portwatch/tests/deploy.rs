//! The deployment files under deploy/ checked by the tools that consume them: the systemd unit
//! with `systemd-analyze verify` (offline) and `systemd-analyze security`, the Kubernetes
//! manifest with `kubernetes-validate --strict` (the API schemas), the Prometheus rules with
//! `promtool check rules` and `promtool test rules`; plus the security-relevant fields parsed
//! and asserted here, and the shipped config examples parsed by the agent's own config code.
//! The tools come from `cargo xtask setup` (Debian: systemd, prometheus; PyPI:
//! kubernetes-validate); a missing one fails the test with the command that installs it.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use portwatch::config::{AgentConfig, ConfigFile, Overrides};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> Output {
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!(
            "could not run {:?} ({e}): install the deployment checkers with `cargo xtask setup`",
            cmd.get_program()
        ),
    }
}

fn show(o: &Output) -> String {
    format!(
        "{}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The capabilities the agent needs, in Linux names (docs/agent.md says why each).
const CAPABILITIES: [&str; 5] = [
    "CAP_BPF",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_DAC_READ_SEARCH",
    "CAP_SYS_PTRACE",
];

/// `[Section] Key=Value` lines of a unit file; repeated keys keep every value.
fn unit_keys(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_owned();
            continue;
        }
        let (k, v) = line.split_once('=').expect("Key=Value");
        out.entry((section.clone(), k.trim().to_owned()))
            .or_default()
            .push(v.trim().to_owned());
    }
    out
}

#[test]
fn the_systemd_unit_verifies_offline_and_holds_only_the_needed_capabilities() {
    let unit = std::fs::read_to_string(root().join("deploy/systemd/portwatch.service")).unwrap();
    let keys = unit_keys(&unit);
    let get = |k: &str| -> Vec<String> {
        keys.get(&("Service".to_owned(), k.to_owned()))
            .cloned()
            .unwrap_or_default()
    };
    let one = |k: &str| -> String {
        let v = get(k);
        assert_eq!(v.len(), 1, "{k}: {v:?}");
        v[0].clone()
    };
    let caps: BTreeSet<&str> = CAPABILITIES.into_iter().collect();
    for k in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let v = one(k);
        let have: BTreeSet<&str> = v.split_whitespace().collect();
        assert_eq!(have, caps, "{k}");
    }
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("PrivateDevices", "yes"),
        ("ReadWritePaths", "/sys/fs/bpf"),
        ("StateDirectory", "portwatch"),
        ("UMask", "0027"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(one(k), v, "{k}");
    }
    assert!(one("ExecStart").starts_with("/usr/bin/portwatch run --config "));
    assert!(
        get("SystemCallFilter")[0]
            .split_whitespace()
            .any(|s| s == "bpf"),
        "bpf(2) must stay allowed"
    );

    // systemd-analyze verify checks the unit as systemd would load it, including that the
    // command exists: point it at the binary this test built.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("portwatch.service");
    std::fs::write(
        &local,
        unit.replace("/usr/bin/portwatch", env!("CARGO_BIN_EXE_portwatch")),
    )
    .unwrap();
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&local));
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify: {}",
        show(&out)
    );
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&local));
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for portwatch.service: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {}", show(&out)));
    println!("systemd-analyze security: exposure {exposure} (0 = fully sandboxed, 10 = none)");
    assert!(exposure <= 4.0, "exposure {exposure} above 4.0:\n{text}");
}

/// The YAML documents of the manifest as JSON values.
fn manifest() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[test]
fn the_daemonset_is_minimal_and_matches_the_kubernetes_schemas() {
    let docs = manifest();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k} in the manifest"))
    };
    let ds = kind("DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true, "the node's own traffic");
    assert_eq!(pod["hostPID"], false);
    assert_eq!(pod["automountServiceAccountToken"], false);
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let added: BTreeSet<String> = sc["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| format!("CAP_{}", v.as_str().unwrap()))
        .collect();
    let want: BTreeSet<String> = CAPABILITIES.iter().map(|s| s.to_string()).collect();
    assert_eq!(added, want, "the same capabilities as the systemd unit");

    let volumes: BTreeMap<&str, &serde_json::Value> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    let mounts: BTreeMap<&str, &serde_json::Value> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["mountPath"].as_str().unwrap(), m))
        .collect();
    let host = |mount: &str| {
        let m = mounts[mount];
        let v = volumes[m["name"].as_str().unwrap()];
        (v["hostPath"]["path"].as_str().map(str::to_owned), m)
    };
    let (path, m) = host("/sys/fs/bpf");
    assert_eq!(
        path.as_deref(),
        Some("/sys/fs/bpf"),
        "pinned maps on the host's bpffs"
    );
    assert_ne!(m["readOnly"], true);
    let (path, m) = host("/host/proc");
    assert_eq!(path.as_deref(), Some("/proc"));
    assert_eq!(m["readOnly"], true, "the host's /proc is only read");
    let (path, _) = host("/var/lib/portwatch");
    assert_eq!(
        path.as_deref(),
        Some("/var/lib/portwatch"),
        "history survives pods"
    );

    // The config in the ConfigMap is one the agent accepts, pointing at the mounts.
    let cm = kind("ConfigMap");
    let cfg: ConfigFile = toml::from_str(cm["data"]["portwatch.toml"].as_str().unwrap())
        .expect("the ConfigMap's portwatch.toml parses");
    assert_eq!(cfg.proc_root.as_deref(), Some(Path::new("/host/proc")));
    assert_eq!(
        cfg.pin_dir.as_deref(),
        Some(Path::new("/sys/fs/bpf/portwatch"))
    );
    assert!(cfg.history.unwrap().starts_with("/var/lib/portwatch"));
    portwatch::spec::Spec::parse(
        cm["data"]["spec.toml"].as_str().unwrap(),
        "configmap/spec.toml",
    )
    .expect("the placeholder spec parses");

    let out = run(Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(root().join("deploy/kubernetes/daemonset.yaml")));
    assert!(out.status.success(), "kubernetes-validate: {}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("passed").count(), docs.len(), "{text}");
}

#[test]
fn the_shipped_config_file_resolves() {
    let path = root().join("deploy/systemd/portwatch.toml");
    let file = ConfigFile::load(&path).unwrap();
    let cfg = AgentConfig::resolve(Overrides::default(), file).unwrap();
    assert_eq!(
        cfg.metrics,
        Some("127.0.0.1:9187".parse().unwrap()),
        "loopback by default"
    );
    assert_eq!(
        cfg.history,
        Some(PathBuf::from("/var/lib/portwatch/history.db"))
    );
    assert_eq!(cfg.retention.as_secs(), 90 * 86_400);
    assert_eq!(
        cfg.history.as_deref(),
        Some(Path::new(portwatch::cli::report::DEFAULT_HISTORY)),
        "`portwatch report` finds the agent's history without --history"
    );
}

#[test]
fn the_prometheus_rules_load_and_pass_their_unit_tests() {
    let dir = root().join("deploy/prometheus");
    let out = run(Command::new("promtool")
        .args(["check", "rules", "portwatch-rules.yml"])
        .current_dir(&dir));
    assert!(out.status.success(), "promtool check rules: {}", show(&out));
    let out = run(Command::new("promtool")
        .args(["test", "rules", "portwatch-rules.test.yml"])
        .current_dir(&dir));
    assert!(out.status.success(), "promtool test rules: {}", show(&out));
}
