//! Runs portwatch's own binary on the scenario, as an operator would: `analyze` on the captures
//! (offline), and reads what it writes as JSON (the versioned report schema, not portwatch's
//! Rust types). It owns no process that outlives a call.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::daemons::Transport;
use super::error::{ClusterError, Result, io_err};
use super::lab::Host;
use super::oracle::{Dir, PortKey, Side};

/// The scenario's spec and inventory (tests/scenario/).
pub fn scenario_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenario")
        .join(name)
}

pub fn spec_path() -> PathBuf {
    scenario_file("cluster-spec.toml")
}

pub fn inventory_path() -> PathBuf {
    scenario_file("cluster-inventory.toml")
}

/// The spec and inventory as portwatch is given them: relative to the workspace root, where it
/// runs, so reports name `tests/scenario/cluster-spec.toml:LINE` wherever the checkout is.
pub const SPEC_ARG: &str = "tests/scenario/cluster-spec.toml";
pub const INVENTORY_ARG: &str = "tests/scenario/cluster-inventory.toml";

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The portwatch binary: `$PORTWATCH_BIN` if set, else built now with cargo (a no-op when it is
/// up to date) into the target directory this program runs from.
pub fn binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PORTWATCH_BIN") {
        return Ok(PathBuf::from(p));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["build", "--quiet", "-p", "portwatch", "--bin", "portwatch"])
        .current_dir(workspace_root());
    let dir = target_profile_dir()?;
    // Build into the target directory we run from, whatever CARGO_TARGET_DIR says.
    if let Some(target) = dir.parent() {
        c.env("CARGO_TARGET_DIR", target);
    }
    let command = super::show(&c);
    super::checked_output(&mut c, command)?;
    let bin = dir.join("portwatch");
    if !bin.exists() {
        return Err(ClusterError::MissingTools {
            missing: format!("{} (cargo built it elsewhere?)", bin.display()),
        });
    }
    Ok(bin)
}

/// target/<profile> of the running executable (a test binary lives one level deeper, in deps/).
/// Only debug builds are made here.
fn target_profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(io_err("locating the running executable", "."))?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    if dir.ends_with("release") {
        // The demo may run from a release build; the agent is built in debug next to it.
        dir.pop();
        dir.push("debug");
    }
    Ok(dir)
}

fn run_json(bin: &Path, args: &[&str]) -> Result<Value> {
    run_json_ok(bin, args, &[0])
}

/// Runs portwatch and parses its standard output as JSON; `ok` lists the exit codes that are
/// not failures (`merge` exits 1 when the cluster has findings, as documented).
fn run_json_ok(bin: &Path, args: &[&str], ok: &[i32]) -> Result<Value> {
    let mut c = Command::new(bin);
    c.args(args).current_dir(workspace_root());
    let command = super::show(&c);
    let out = c.output().map_err(|source| ClusterError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !out.status.code().is_some_and(|c| ok.contains(&c)) {
        return Err(ClusterError::Failed {
            command,
            status: out.status.to_string(),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    serde_json::from_slice(&out.stdout).map_err(|e| ClusterError::UnexpectedOutput {
        command,
        expected: format!("JSON ({e})"),
        output: String::from_utf8_lossy(&out.stdout)
            .chars()
            .take(2000)
            .collect(),
    })
}

/// `portwatch analyze --format json` of one node's capture against the scenario's spec.
pub fn analyze(bin: &Path, h: Host, pcap: &Path) -> Result<Value> {
    run_json(
        bin,
        &[
            "analyze",
            "--spec",
            SPEC_ARG,
            "--inventory",
            INVENTORY_ARG,
            "--node",
            h.name(),
            "--no-progress",
            "--format",
            "json",
            &pcap.to_string_lossy(),
        ],
    )
}

/// `portwatch merge --format json` of node reports (JSON files). Exit status 1 (the cluster has
/// findings) is expected here.
pub fn merge(bin: &Path, reports: &[PathBuf]) -> Result<Value> {
    let mut args = vec!["merge".to_owned(), "--format".into(), "json".into()];
    args.extend(reports.iter().map(|p| p.to_string_lossy().into_owned()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run_json_ok(bin, &refs, &[0, 1])
}

/// portwatch's per-port totals (packets, bytes) of one node's capture (`analyze
/// --observations`), keyed like the oracle's.
pub fn observed_port_totals(
    bin: &Path,
    h: Host,
    pcap: &Path,
) -> Result<BTreeMap<PortKey, (u64, u64)>> {
    let v = run_json(
        bin,
        &[
            "analyze",
            "--spec",
            SPEC_ARG,
            "--node",
            h.name(),
            "--inventory",
            INVENTORY_ARG,
            "--no-progress",
            "--observations",
            "--format",
            "json",
            &pcap.to_string_lossy(),
        ],
    )?;
    port_totals(&v["observations"]["ports"]).ok_or_else(|| ClusterError::UnexpectedOutput {
        command: format!("portwatch analyze --observations {}", pcap.display()),
        expected: "observations.ports: [{transport, port, side, dir, counts: {packets, bytes}}]"
            .into(),
        output: v["observations"]["ports"]
            .to_string()
            .chars()
            .take(2000)
            .collect(),
    })
}

/// Reads a JSON list of per-port totals.
pub fn port_totals(list: &Value) -> Option<BTreeMap<PortKey, (u64, u64)>> {
    let mut out = BTreeMap::new();
    for p in list.as_array()? {
        // Other transports are named or numbered ({"other": 2}); the scenario counts TCP and UDP.
        let transport = match p["transport"].as_str() {
            Some("tcp") => Transport::Tcp,
            Some("udp") => Transport::Udp,
            _ => continue,
        };
        let side = match p["side"].as_str()? {
            "local" => Side::Local,
            "remote" => Side::Remote,
            _ => return None,
        };
        let dir = match p["dir"].as_str()? {
            "in" => Dir::In,
            "out" => Dir::Out,
            _ => return None,
        };
        let port = u16::try_from(p["port"].as_u64()?).ok()?;
        let c = &p["counts"];
        out.insert(
            PortKey {
                transport,
                port,
                side,
                dir,
            },
            (c["packets"].as_u64()?, c["bytes"].as_u64()?),
        );
    }
    Some(out)
}
