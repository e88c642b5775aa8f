//! A headless Chromium driven over the DevTools protocol through `--remote-debugging-pipe`
//! (fd 3 in, fd 4 out, NUL-separated JSON), so no WebSocket client or browser download is
//! needed: Debian's `chromium` package is enough. Owns the browser process and its throw-away
//! profile directory; it never touches the network (the pages it opens are local files).
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde_json::{Value, json};

/// Where the browser is looked for: `$PORTWATCH_CHROMIUM`, then these.
const CANDIDATES: &[&str] = &[
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
];

/// How long one protocol call may take before the driver gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The Chromium binary, if installed.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PORTWATCH_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Something the page said on its console or threw, or the browser logged (failed loads, CSP
/// violations).
#[derive(Clone, Debug)]
pub struct ConsoleMessage {
    /// `exception`, `console.error`, `log.error`, `console.warning`, ...
    pub kind: String,
    pub text: String,
}

impl ConsoleMessage {
    /// Whether it is an error (an exception, console.error or assert, or a browser error).
    pub fn is_error(&self) -> bool {
        self.kind == "exception" || self.kind.ends_with(".error") || self.kind.ends_with(".assert")
    }
}

/// A running headless Chromium.
pub struct Browser {
    child: Child,
    tx: File,
    rx: Receiver<Value>,
    next_id: u64,
    /// Events received while waiting for call results, oldest first.
    events: VecDeque<Value>,
    profile: PathBuf,
}

/// A tab attached with a flat session.
pub struct Tab {
    session: String,
    /// Everything the page said so far.
    pub console: Vec<ConsoleMessage>,
}

impl Tab {
    /// The DevTools session id, for [`Browser::call`].
    pub fn session(&self) -> &str {
        &self.session
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid two-element array; pipe2 fills it on success.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Browser {
    /// Starts the browser with a fresh profile under `scratch` (removed on drop), headless,
    /// without sandbox, GPU, first-run, background networking, component updates or sync.
    pub fn launch(chromium: &Path, scratch: &Path) -> Result<Browser> {
        use std::os::fd::AsRawFd;
        static LAUNCHES: AtomicU64 = AtomicU64::new(0);
        let profile = scratch.join(format!(
            "chromium-profile-{}-{}",
            std::process::id(),
            LAUNCHES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile)
            .with_context(|| format!("cannot create {}", profile.display()))?;
        let (to_browser_r, to_browser_w) = pipe()?;
        let (from_browser_r, from_browser_w) = pipe()?;
        let (in_fd, out_fd) = (to_browser_r.as_raw_fd(), from_browser_w.as_raw_fd());
        let mut cmd = Command::new(chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Move both ends above 10 first so the dup2s below cannot clobber each other.
                let a = libc::fcntl(in_fd, libc::F_DUPFD, 10);
                let b = libc::fcntl(out_fd, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", chromium.display()))?;
        drop(to_browser_r);
        drop(from_browser_w);
        let (send, rx) = mpsc::channel();
        let reader = File::from(from_browser_r);
        std::thread::spawn(move || {
            let mut r = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if buf.last() == Some(&0) {
                            buf.pop();
                        }
                        match serde_json::from_slice::<Value>(&buf) {
                            Ok(v) => {
                                if send.send(v).is_err() {
                                    return;
                                }
                            }
                            Err(_) => continue,
                        }
                    }
                }
            }
        });
        Ok(Browser {
            child,
            tx: File::from(to_browser_w),
            rx,
            next_id: 1,
            events: VecDeque::new(),
            profile,
        })
    }

    /// The browser's process id (its renderers are descendants).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one command and waits for its result (events that arrive meanwhile are queued).
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg)?;
        bytes.push(0);
        self.tx
            .write_all(&bytes)
            .with_context(|| format!("browser pipe closed while sending {method}"))?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = match self.rx.recv_timeout(left) {
                Ok(v) => v,
                Err(RecvTimeoutError::Timeout) => {
                    bail!("{method}: no answer from the browser in {CALL_TIMEOUT:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("{method}: the browser closed its pipe (did it crash?)")
                }
            };
            if v.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(e) = v.get("error") {
                    bail!("{method}: {e}");
                }
                return Ok(v.get("result").cloned().unwrap_or(Value::Null));
            }
            self.events.push_back(v);
        }
    }

    /// Waits for an event `method` of `session` (queued or new), up to `timeout`.
    pub fn wait_event(&mut self, session: &str, method: &str, timeout: Duration) -> Result<Value> {
        let matches = |v: &Value| {
            v.get("method").and_then(Value::as_str) == Some(method)
                && v.get("sessionId").and_then(Value::as_str) == Some(session)
        };
        if let Some(i) = self.events.iter().position(matches) {
            return Ok(self.events.remove(i).unwrap_or_default());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) if matches(&v) => return Ok(v),
                Ok(v) => self.events.push_back(v),
                Err(_) => bail!("no {method} event within {timeout:?}"),
            }
        }
    }

    /// Opens a new tab with console, log and page events on, at `width` x `height` CSS pixels.
    pub fn new_tab(&mut self, width: u32, height: u32) -> Result<Tab> {
        let t = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }))?;
        let target = t["targetId"]
            .as_str()
            .context("createTarget: no targetId")?;
        let a = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        )?;
        let session = a["sessionId"]
            .as_str()
            .context("attachToTarget: no sessionId")?
            .to_owned();
        for m in ["Page.enable", "Runtime.enable", "Log.enable"] {
            self.call(Some(&session), m, json!({}))?;
        }
        self.call(
            Some(&session),
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )?;
        Ok(Tab {
            session,
            console: Vec::new(),
        })
    }

    /// Loads `url` in `tab` and waits for its load event.
    pub fn navigate(&mut self, tab: &mut Tab, url: &str) -> Result<()> {
        let r = self.call(Some(&tab.session), "Page.navigate", json!({ "url": url }))?;
        if let Some(e) = r.get("errorText").and_then(Value::as_str) {
            bail!("cannot load {url}: {e}");
        }
        self.wait_event(&tab.session, "Page.loadEventFired", CALL_TIMEOUT)?;
        self.collect_console(tab);
        Ok(())
    }

    /// Moves the queued console, exception and log events of `tab` into `tab.console`.
    pub fn collect_console(&mut self, tab: &mut Tab) {
        let mut keep = VecDeque::new();
        while let Some(v) = self.events.pop_front() {
            if v.get("sessionId").and_then(Value::as_str) != Some(tab.session.as_str()) {
                keep.push_back(v);
                continue;
            }
            let p = &v["params"];
            match v["method"].as_str().unwrap_or_default() {
                "Runtime.exceptionThrown" => {
                    let d = &p["exceptionDetails"];
                    let text = d["exception"]["description"]
                        .as_str()
                        .or_else(|| d["text"].as_str())
                        .unwrap_or("exception")
                        .to_owned();
                    tab.console.push(ConsoleMessage {
                        kind: "exception".into(),
                        text,
                    });
                }
                "Runtime.consoleAPICalled" => {
                    let args: Vec<String> = p["args"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|x| {
                                    x.get("value")
                                        .map(|v| v.to_string())
                                        .or_else(|| {
                                            x.get("description")
                                                .and_then(Value::as_str)
                                                .map(str::to_owned)
                                        })
                                        .unwrap_or_default()
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    tab.console.push(ConsoleMessage {
                        kind: format!("console.{}", p["type"].as_str().unwrap_or("log")),
                        text: args.join(" "),
                    });
                }
                "Log.entryAdded" => {
                    let e = &p["entry"];
                    tab.console.push(ConsoleMessage {
                        kind: format!("log.{}", e["level"].as_str().unwrap_or("info")),
                        text: format!(
                            "{} {}",
                            e["text"].as_str().unwrap_or_default(),
                            e["url"].as_str().unwrap_or_default()
                        ),
                    });
                }
                _ => {}
            }
        }
        self.events = keep;
    }

    /// Evaluates `expr` in the page and returns its value (awaiting promises).
    pub fn eval(&mut self, tab: &mut Tab, expr: &str) -> Result<Value> {
        let r = self.call(
            Some(&tab.session),
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        )?;
        self.collect_console(tab);
        if let Some(d) = r.get("exceptionDetails") {
            bail!("{expr}: threw {d}");
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// A PNG of the page: the whole page up to `max_height` CSS pixels.
    pub fn screenshot(&mut self, tab: &Tab, max_height: u32) -> Result<Vec<u8>> {
        let m = self.call(Some(&tab.session), "Page.getLayoutMetrics", json!({}))?;
        let size = &m["cssContentSize"];
        let w = size["width"].as_f64().unwrap_or(1280.0);
        let h = size["height"]
            .as_f64()
            .unwrap_or(800.0)
            .min(f64::from(max_height));
        let r = self.call(
            Some(&tab.session),
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": { "x": 0, "y": 0, "width": w, "height": h, "scale": 1 }
            }),
        )?;
        let data = r["data"].as_str().context("captureScreenshot: no data")?;
        Ok(base64::engine::general_purpose::STANDARD.decode(data)?)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Browser.close answers and then the process exits; if the pipe is already broken the
        // process is gone or going, and kill makes sure.
        if self.call(None, "Browser.close", json!({})).is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `file://` URL of a local path.
pub fn file_url(p: &Path) -> Result<String> {
    let abs = std::fs::canonicalize(p).with_context(|| format!("{}", p.display()))?;
    let mut s = String::from("file://");
    for b in abs.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(s)
}
