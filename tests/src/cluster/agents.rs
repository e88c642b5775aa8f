//! One portwatch agent per node namespace (`portwatch run` on the node's interface, eBPF
//! backend), started before any daemon and stopped with SIGTERM after the traffic, as an operator
//! would run it; their reports are read back as JSON. Each agent gets its own pin directory,
//! history database and report directory; the lab removes them all.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::daemons::tail;
use super::error::{ClusterError, Result, io_err};
use super::lab::{Host, IFACE, Lab, Proc, check_interrupted};
use super::portwatch::{INVENTORY_ARG, SPEC_ARG, workspace_root};

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    pub host: Host,
    pub proc: Proc,
    /// Its `--out` directory.
    pub out: PathBuf,
}

/// Starts an agent on every node and waits until each captures on the interface.
/// The interval is longer than the scenario, so the report written at SIGTERM covers it all.
pub fn start(lab: &mut Lab, bin: &Path, out_root: &Path) -> Result<Vec<Agent>> {
    let mut agents = Vec::new();
    for h in Host::NODES {
        let out = out_root.join(h.name());
        std::fs::create_dir_all(&out).map_err(io_err("creating", &out))?;
        let pin = lab.bpffs_dir(h.name())?;
        let history = lab.dir().join(format!("{}-history.db", h.name()));
        let bin_s = bin.to_string_lossy().into_owned();
        let args: Vec<String> = vec![
            bin_s,
            "run".into(),
            "--spec".into(),
            SPEC_ARG.into(),
            "--inventory".into(),
            INVENTORY_ARG.into(),
            "--backend".into(),
            "ebpf".into(),
            "--iface".into(),
            IFACE.into(),
            "--interval".into(),
            "30m".into(),
            "--node".into(),
            h.name().into(),
            "--out".into(),
            out.to_string_lossy().into_owned(),
            "--format".into(),
            "json".into(),
            "--format".into(),
            "text".into(),
            "--format".into(),
            "markdown".into(),
            "--pin-dir".into(),
            pin.to_string_lossy().into_owned(),
            "--history".into(),
            history.to_string_lossy().into_owned(),
            "--no-metrics".into(),
            "-v".into(),
        ];
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut c = lab.nsenter(h, &refs);
        c.current_dir(workspace_root());
        let log = lab
            .dir()
            .join("logs")
            .join(format!("{}-portwatch.log", h.name()));
        let proc = lab.spawn_graceful(h, "portwatch", c, log)?;
        agents.push(Agent { host: h, proc, out });
    }
    for a in &agents {
        wait_attached(lab, a)?;
    }
    Ok(agents)
}

/// Waits until the agent says it captures with eBPF on the interface (its log line "capturing
/// with ebpf on eth0", written once the TC programs are attached on ingress and egress). Debian's
/// bpftool (7.1) cannot show TCX attachments, so the agent's own word is the signal.
fn wait_attached(lab: &Lab, a: &Agent) -> Result<()> {
    let limit = Duration::from_secs(60);
    let deadline = Instant::now() + limit;
    let want = format!("capturing with ebpf on {IFACE}");
    loop {
        check_interrupted()?;
        let text = std::fs::read_to_string(&a.proc.log).unwrap_or_default();
        if text.contains(&want) {
            return Ok(());
        }
        if let Some(status) = lab.exited(&a.proc) {
            return Err(ClusterError::Exited {
                service: "portwatch agent",
                host: a.host,
                status: status.to_string(),
                log: a.proc.log.clone(),
                tail: tail(&a.proc.log, 30),
            });
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::NotReady {
                service: "portwatch agent",
                host: a.host,
                check: format!("{want:?} in its log"),
                waited: limit,
                log: a.proc.log.clone(),
                tail: tail(&a.proc.log, 30),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM to every agent (a final report, then a clean detach); waits for them and reads each
/// node's JSON report.
pub fn stop(lab: &Lab, agents: &[Agent]) -> Result<BTreeMap<Host, Value>> {
    for a in agents {
        super::lab::signal(a.proc.pid, libc::SIGTERM);
    }
    let mut reports = BTreeMap::new();
    for a in agents {
        let status = lab.stop(&a.proc, libc::SIGTERM, Duration::from_secs(30));
        match status {
            Some(s) if s.success() => {}
            other => {
                return Err(ClusterError::Exited {
                    service: "portwatch agent (at SIGTERM)",
                    host: a.host,
                    status: format!("{other:?}"),
                    log: a.proc.log.clone(),
                    tail: tail(&a.proc.log, 30),
                });
            }
        }
        let f = a.out.join(format!("portwatch-{}.json", a.host.name()));
        let text = std::fs::read_to_string(&f).map_err(io_err("reading the agent's report", &f))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| ClusterError::UnexpectedOutput {
            command: format!("reading {}", f.display()),
            expected: format!("a JSON report ({e})"),
            output: text.chars().take(2000).collect(),
        })?;
        reports.insert(a.host, v);
    }
    Ok(reports)
}
