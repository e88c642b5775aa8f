//! The agent binary as a child process inside a network namespace, for the end-to-end tests:
//! started (optionally under capsh with a reduced capability set), waited on until it captures,
//! its log collected, and killed on drop so a failing test leaves no agent behind.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running agent; SIGKILLed and reaped on drop if still running.
pub struct Agent {
    pub child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Runs `program args...` inside the namespace at `ns`, with only the capabilities in `caps`
/// (comma-separated capsh names) when given: uid stays 0 but SECBIT_NOROOT is set and locked,
/// so exec grants nothing beyond the ambient set (what the systemd unit does).
pub fn command(ns: &Path, caps: Option<&str>, program: &Path, args: &[String]) -> Command {
    let mut cmd = match caps {
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
        Some(caps) => {
            let mut c = Command::new("capsh");
            c.arg(format!("--caps={caps},cap_setpcap+eip"))
                .arg("--secbits=0x2f")
                .arg(format!("--addamb={caps}"))
                .args(["--", "-c", "exec \"$0\" \"$@\""])
                .arg(program)
                .args(args);
            c
        }
    };
    let ns = ns.to_owned();
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only open and setns run (async-signal-safe syscalls).
    unsafe {
        cmd.pre_exec(move || crate::enter(&ns));
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

/// Whether capsh (libcap2-bin) is installed; prints why the caller skips otherwise.
pub fn require_capsh(test: &str) -> bool {
    let ok = Command::new("capsh")
        .arg("--print")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED {test}: needs capsh (apt-get install libcap2-bin)");
    }
    ok
}

impl Agent {
    /// Spawns `cmd` and collects its standard error in the background.
    pub fn spawn(mut cmd: Command) -> std::io::Result<Agent> {
        let mut child = cmd.spawn()?;
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr piped");
        let l = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut g = l.lock().unwrap_or_else(|p| p.into_inner());
                g.push_str(&line);
                g.push('\n');
            }
        });
        Ok(Agent {
            child,
            log,
            reader: Some(reader),
        })
    }

    /// Spawns the agent `cmd` runs (see [`command`]) and waits up to `timeout` until it
    /// captures with eBPF; panics with its log otherwise.
    pub fn start_ebpf(cmd: Command, timeout: Duration) -> Agent {
        let mut agent = Agent::spawn(cmd).expect("starting the agent");
        assert!(
            agent.wait_for("capturing with ebpf", timeout),
            "the agent did not start:\n{}",
            agent.log()
        );
        agent
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until the log contains `needle` (true) or the agent exited or `timeout` passed
    /// (false).
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log().contains(needle) {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                // Let the reader finish the last lines.
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return self.log().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Sends `sig` to the agent.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill on the pid of a child we own and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the exit and returns the status with the whole log.
    pub fn wait(mut self) -> (ExitStatus, String) {
        let status = self.child.wait().expect("waiting for the agent");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status, self.log())
    }

    /// The agent's peak resident set (VmHWM) in KiB, from /proc.
    pub fn vm_hwm_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Its effective capability set (CapEff), from /proc.
    pub fn cap_eff(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// (packets in, bytes in) of the per-port totals for `transport`/`port` in a JSON report, or
/// (0, 0) when no finding carries them. Every finding about the port (documented, undocumented,
/// or of unknown direction when flow detail alone cannot tell who served) carries the same
/// lossless per-port totals; this asserts they agree, so no finding kind hides the count.
pub fn port_totals(report: &Value, transport: &str, port: u64) -> (u64, u64) {
    let totals: Vec<(u64, u64)> = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["transport"] == transport && f["port"] == port)
        .filter_map(|f| f.get("port_totals"))
        .map(|t| {
            (
                t["packets_in"].as_u64().unwrap_or(0),
                t["bytes_in"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    if let Some(first) = totals.first() {
        assert!(
            totals.iter().all(|t| t == first),
            "findings for {transport}/{port} disagree on the per-port totals: {totals:?}"
        );
    }
    totals.first().copied().unwrap_or((0, 0))
}

/// A spec with one documented inbound UDP port.
pub fn udp_spec(name: &str, port: u16) -> String {
    format!(
        r#"[spec]
name = "{name}"
vendor = "test"
product = "test"
document = "issue 9"

[zones]
all-nodes = "the two ends of the veth"

[[entry]]
id = "app-udp"
service = "App datagrams"
ports = {port}
transport = "udp"
direction = "inbound"
sources = ["all-nodes"]
destinations = ["all-nodes"]
"#
    )
}
