//! Real daemons from Debian's packages, configured under the lab's scratch directory and started
//! bound inside the node namespaces (no systemd, no init scripts): PostgreSQL, nginx (80, 443),
//! sshd, memcached (TCP and UDP), a two-node RabbitMQ cluster, a three-node ZooKeeper ensemble,
//! and Redis (the service the scenario's spec does not document). Readiness is polled on the
//! wire; nothing here sleeps blindly. It starts processes only through [`Lab`].
use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::error::{ClusterError, Result, io_err};
use super::lab::{Host, Lab, Proc, check_interrupted};

/// The Erlang cookie shared by both RabbitMQ nodes and the rabbitmqctl client.
pub const ERLANG_COOKIE: &str = "PORTWATCHCLUSTERSCENARIO";
pub const RABBIT_HOSTS: [Host; 2] = [Host::N1, Host::N2];
pub const ZK_HOSTS: [Host; 3] = [Host::N1, Host::N2, Host::N3];

/// Transport of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// How a service proves it is ready.
#[derive(Clone, Debug)]
enum Check {
    /// A TCP connect succeeds.
    Tcp(SocketAddr),
    /// ZooKeeper's `srvr` answers with a Mode line (it is in a quorum).
    ZkServing(SocketAddr),
    /// memcached answers a UDP `version` request.
    MemcachedUdp(SocketAddr),
    /// The service's log holds this line.
    LogLine(&'static str),
}

impl Check {
    fn describe(&self) -> String {
        match self {
            Check::Tcp(a) => format!("TCP connect to {a}"),
            Check::ZkServing(a) => format!("`srvr` at {a} reporting a quorum mode"),
            Check::MemcachedUdp(a) => format!("UDP `version` answered at {a}"),
            Check::LogLine(l) => format!("log line {l:?}"),
        }
    }
}

/// One started daemon.
#[derive(Clone, Debug)]
pub struct Service {
    pub name: &'static str,
    pub host: Host,
    pub proc: Proc,
    checks: Vec<Check>,
}

/// The started, ready daemons.
#[derive(Debug)]
pub struct Daemons {
    pub services: Vec<Service>,
    /// The ZooKeeper leader (the only node listening on 2888; it changes between runs).
    pub zk_leader: Host,
    /// Per service, how long it took from start to ready.
    pub ready_after: Vec<(String, Host, Duration)>,
    /// The HOME holding the Erlang cookie, for rabbitmqctl.
    pub erlang_home: PathBuf,
}

/// Every tool the daemons need.
pub const TOOLS: &[&str] = &[
    "nginx",
    "memcached",
    "redis-server",
    "java",
    "openssl",
    "ssh-keygen",
    "/usr/sbin/sshd",
    "setpriv",
    "/usr/lib/rabbitmq/bin/rabbitmq-server",
    "/usr/share/java/zookeeper.jar",
];

/// Writes the configurations, then starts every daemon at once and waits until all are ready.
pub fn start(lab: &mut Lab) -> Result<Daemons> {
    super::lab::require_tools(TOOLS)?;
    let pg_bin = postgres_bin()?;
    lab.ensure_run_sshd()?;
    let lab: &Lab = lab;
    // initdb is the slowest preparation: run it while the rest is written.
    let pg_dir = lab.subdir("postgres")?;
    sh(Command::new("chown")
        .args(["postgres:postgres"])
        .arg(&pg_dir))?;
    let data = pg_dir.join("data");
    let mut initdb = Command::new("setpriv");
    initdb
        .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
        .arg(pg_bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]);
    let initdb_child = initdb
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| ClusterError::Spawn {
            command: super::show(&initdb),
            source,
        })?;

    let nginx_dir = prepare_nginx(lab)?;
    let ssh_key = prepare_sshd(lab)?;
    let rabbit_dirs = prepare_rabbit(lab)?;
    let zk_cfgs = prepare_zookeeper(lab)?;
    let erlang_home = lab.subdir("erlang-home")?;
    write_cookie(&erlang_home)?;

    let out = initdb_child
        .wait_with_output()
        .map_err(io_err("waiting for initdb in", &pg_dir))?;
    if !out.status.success() {
        return Err(ClusterError::Failed {
            command: "initdb".into(),
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    let hba = data.join("pg_hba.conf");
    let mut hba_text = fs::read_to_string(&hba).map_err(io_err("reading", &hba))?;
    hba_text.push_str("host all all 10.77.0.0/24 trust\nhost all all fd77::/64 trust\n");
    fs::write(&hba, hba_text).map_err(io_err("writing", &hba))?;

    // Everything starts now, in parallel; the slow ones (JVMs, Erlang) first.
    let started = Instant::now();
    let mut services = Vec::new();
    for (h, cfg) in &zk_cfgs {
        let cp = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar";
        let p = lab.spawn(
            *h,
            "zookeeper",
            &[
                "java",
                "-Xmx96m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Djava.net.preferIPv4Stack=true",
                "-cp",
                cp,
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                &cfg.to_string_lossy(),
            ],
            &[],
        )?;
        services.push(Service {
            name: "zookeeper",
            host: *h,
            proc: p,
            checks: vec![Check::ZkServing(sock(h.v4().into(), 2181))],
        });
    }
    for (h, dir) in &rabbit_dirs {
        let env = rabbit_env(*h, dir);
        let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let p = lab.spawn(
            *h,
            "rabbitmq",
            &["/usr/lib/rabbitmq/bin/rabbitmq-server"],
            &env_ref,
        )?;
        services.push(Service {
            name: "rabbitmq",
            host: *h,
            proc: p,
            checks: vec![
                Check::Tcp(sock(h.v4().into(), 5672)),
                Check::Tcp(sock(h.v4().into(), 15672)),
            ],
        });
    }
    let pg_dir_s = pg_dir.to_string_lossy().into_owned();
    let data_s = data.to_string_lossy().into_owned();
    let postgres = pg_bin.join("postgres").to_string_lossy().into_owned();
    let listen = format!("listen_addresses={},{}", Host::N1.v4(), Host::N1.v6());
    let sockdir = format!("unix_socket_directories={pg_dir_s}");
    let p = lab.spawn(
        Host::N1,
        "postgres",
        &[
            "setpriv",
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            &postgres,
            "-D",
            &data_s,
            "-c",
            &listen,
            "-c",
            &sockdir,
            "-c",
            "fsync=off",
            "-c",
            "logging_collector=off",
        ],
        &[],
    )?;
    services.push(Service {
        name: "postgresql",
        host: Host::N1,
        proc: p,
        checks: vec![
            Check::Tcp(sock(Host::N1.v4().into(), 5432)),
            Check::LogLine("database system is ready to accept connections"),
        ],
    });
    let conf = nginx_dir.join("nginx.conf").to_string_lossy().into_owned();
    let prefix = nginx_dir.to_string_lossy().into_owned();
    let elog = nginx_dir.join("error.log").to_string_lossy().into_owned();
    let p = lab.spawn(
        Host::N1,
        "nginx",
        &["nginx", "-e", &elog, "-p", &prefix, "-c", &conf],
        &[],
    )?;
    services.push(Service {
        name: "nginx",
        host: Host::N1,
        proc: p,
        checks: vec![
            Check::Tcp(sock(Host::N1.v4().into(), 80)),
            Check::Tcp(sock(Host::N1.v4().into(), 443)),
            Check::Tcp(sock(Host::N1.v6().into(), 80)),
        ],
    });
    let key = ssh_key.to_string_lossy().into_owned();
    let listen = format!("ListenAddress={}", Host::N1.v4());
    let p = lab.spawn(
        Host::N1,
        "sshd",
        &[
            "/usr/sbin/sshd",
            "-D",
            "-e",
            "-f",
            "/dev/null",
            "-h",
            &key,
            "-o",
            &listen,
            "-o",
            "PidFile=none",
        ],
        &[],
    )?;
    services.push(Service {
        name: "sshd",
        host: Host::N1,
        proc: p,
        checks: vec![Check::Tcp(sock(Host::N1.v4().into(), 22))],
    });
    let addr = Host::N2.v4().to_string();
    let p = lab.spawn(
        Host::N2,
        "memcached",
        &[
            "memcached",
            "-u",
            "nobody",
            "-l",
            &addr,
            "-p",
            "11211",
            "-U",
            "11211",
            "-m",
            "16",
        ],
        &[],
    )?;
    services.push(Service {
        name: "memcached",
        host: Host::N2,
        proc: p,
        checks: vec![
            Check::Tcp(sock(Host::N2.v4().into(), 11211)),
            Check::MemcachedUdp(sock(Host::N2.v4().into(), 11211)),
        ],
    });
    let redis_dir = lab.subdir("redis")?.to_string_lossy().into_owned();
    let bind = format!("{} {}", Host::N3.v4(), Host::N3.v6());
    let p = lab.spawn(
        Host::N3,
        "redis",
        &[
            "redis-server",
            "--bind",
            &bind,
            "--port",
            "6379",
            "--dir",
            &redis_dir,
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
        ],
        &[],
    )?;
    services.push(Service {
        name: "redis",
        host: Host::N3,
        proc: p,
        checks: vec![
            Check::Tcp(sock(Host::N3.v4().into(), 6379)),
            Check::Tcp(sock(Host::N3.v6().into(), 6379)),
        ],
    });

    let ready_after = wait_all_ready(lab, &services, started)?;
    let zk_leader = zk_leader(lab)?;
    Ok(Daemons {
        services,
        zk_leader,
        ready_after,
        erlang_home,
    })
}

fn sock(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

fn sh(c: &mut Command) -> Result<()> {
    let command = super::show(c);
    super::checked_output(c, command).map(drop)
}

/// The newest installed PostgreSQL's bin directory.
fn postgres_bin() -> Result<PathBuf> {
    let base = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(base)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, b)| b)
        .ok_or_else(|| ClusterError::MissingTools {
            missing: "postgresql (no /usr/lib/postgresql/*/bin/postgres)".into(),
        })
}

fn prepare_nginx(lab: &Lab) -> Result<PathBuf> {
    let d = lab.subdir("nginx")?;
    let (key, cert) = (d.join("key.pem"), d.join("cert.pem"));
    // A self-signed certificate made now, for this run only.
    sh(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "2", "-subj", "/CN=n1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert))?;
    let p = |n: &str| d.join(n).to_string_lossy().into_owned();
    let (v4, v6) = (Host::N1.v4(), Host::N1.v6());
    let conf = format!(
        "daemon off;
master_process on;
worker_processes 1;
pid {pid};
error_log {elog} info;
events {{ worker_connections 64; }}
http {{
  access_log {alog};
  client_body_temp_path {body};
  proxy_temp_path {proxy};
  fastcgi_temp_path {fcgi};
  uwsgi_temp_path {uwsgi};
  scgi_temp_path {scgi};
  server {{
    listen {v4}:80;
    listen [{v6}]:80;
    listen {v4}:443 ssl;
    listen [{v6}]:443 ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{ default_type text/plain; return 200 \"portwatch cluster node n1\\n\"; }}
  }}
}}
",
        pid = p("nginx.pid"),
        elog = p("error.log"),
        alog = p("access.log"),
        body = p("body"),
        proxy = p("proxy"),
        fcgi = p("fastcgi"),
        uwsgi = p("uwsgi"),
        scgi = p("scgi"),
        cert = cert.display(),
        key = key.display(),
    );
    let f = d.join("nginx.conf");
    fs::write(&f, conf).map_err(io_err("writing", &f))?;
    Ok(d)
}

fn prepare_sshd(lab: &Lab) -> Result<PathBuf> {
    let d = lab.subdir("sshd")?;
    let key = d.join("host_ed25519");
    sh(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key))?;
    Ok(key)
}

fn write_cookie(home: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let f = home.join(".erlang.cookie");
    fs::write(&f, ERLANG_COOKIE).map_err(io_err("writing", &f))?;
    fs::set_permissions(&f, fs::Permissions::from_mode(0o400)).map_err(io_err("chmod", &f))
}

fn prepare_rabbit(lab: &Lab) -> Result<Vec<(Host, PathBuf)>> {
    let mut out = Vec::new();
    for h in RABBIT_HOSTS {
        let d = lab.subdir(&format!("rabbitmq-{}", h.name()))?;
        for sub in ["home", "mnesia", "log"] {
            fs::create_dir_all(d.join(sub)).map_err(io_err("creating", d.join(sub)))?;
        }
        write_cookie(&d.join("home"))?;
        let plugins = d.join("enabled_plugins");
        fs::write(&plugins, "[rabbitmq_management].\n").map_err(io_err("writing", &plugins))?;
        let env = d.join("rabbitmq-env.conf");
        fs::write(&env, "").map_err(io_err("writing", &env))?;
        let mut conf = format!(
            "loopback_users.guest = false
listeners.tcp.default = {ip}:5672
management.tcp.port = 15672
management.tcp.ip = {ip}
cluster_formation.peer_discovery_backend = classic_config
",
            ip = h.v4()
        );
        for (i, n) in RABBIT_HOSTS.iter().enumerate() {
            conf.push_str(&format!(
                "cluster_formation.classic_config.nodes.{} = rabbit@{}\n",
                i + 1,
                n.name()
            ));
        }
        let f = d.join("rabbitmq.conf");
        fs::write(&f, conf).map_err(io_err("writing", &f))?;
        out.push((h, d));
    }
    Ok(out)
}

fn rabbit_env(h: Host, d: &Path) -> Vec<(&'static str, String)> {
    let p = |n: &str| d.join(n).to_string_lossy().into_owned();
    vec![
        ("HOME", p("home")),
        ("RABBITMQ_NODENAME", format!("rabbit@{}", h.name())),
        ("RABBITMQ_CONFIG_FILE", p("rabbitmq.conf")),
        ("RABBITMQ_CONF_ENV_FILE", p("rabbitmq-env.conf")),
        ("RABBITMQ_ENABLED_PLUGINS_FILE", p("enabled_plugins")),
        ("RABBITMQ_MNESIA_BASE", p("mnesia")),
        ("RABBITMQ_LOG_BASE", p("log")),
        ("RABBITMQ_PID_FILE", p("rabbit.pid")),
        ("RABBITMQ_LOGS", "-".into()),
    ]
}

fn prepare_zookeeper(lab: &Lab) -> Result<Vec<(Host, PathBuf)>> {
    let mut out = Vec::new();
    for (i, h) in ZK_HOSTS.iter().enumerate() {
        let id = i + 1;
        let d = lab.subdir(&format!("zookeeper-{}", h.name()))?;
        let myid = d.join("myid");
        fs::write(&myid, format!("{id}\n")).map_err(io_err("writing", &myid))?;
        let mut cfg = format!(
            "tickTime=500
initLimit=20
syncLimit=10
dataDir={dir}
clientPort=2181
clientPortAddress={ip}
admin.enableServer=false
4lw.commands.whitelist=srvr,ruok
",
            dir = d.display(),
            ip = h.v4()
        );
        for (j, peer) in ZK_HOSTS.iter().enumerate() {
            cfg.push_str(&format!("server.{}={}:2888:3888\n", j + 1, peer.v4()));
        }
        let f = d.join("zoo.cfg");
        fs::write(&f, cfg).map_err(io_err("writing", &f))?;
        out.push((*h, f));
    }
    Ok(out)
}

/// Polls every service's checks in parallel, each from inside the service's own namespace: the
/// probes go over loopback, so they never show up on the captured interfaces (a probe from the
/// admin workstation would be a peer outside the zone of an all-nodes entry).
fn wait_all_ready(
    lab: &Lab,
    services: &[Service],
    started: Instant,
) -> Result<Vec<(String, Host, Duration)>> {
    let results: Vec<Result<Duration>> = std::thread::scope(|s| {
        let handles: Vec<_> = services
            .iter()
            .map(|svc| {
                s.spawn(move || {
                    lab.in_netns(svc.host, || wait_ready(lab, svc, started))
                        .and_then(|r| r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut out = Vec::new();
    for (svc, r) in services.iter().zip(results) {
        out.push((svc.name.to_owned(), svc.host, r?));
    }
    Ok(out)
}

fn limit_for(name: &str) -> Duration {
    match name {
        // Erlang boot, the management plugin and the cluster lock take ~15 s when idle.
        "rabbitmq" => Duration::from_secs(120),
        "zookeeper" => Duration::from_secs(90),
        _ => Duration::from_secs(45),
    }
}

/// Runs in a thread inside the service's namespace.
fn wait_ready(lab: &Lab, svc: &Service, started: Instant) -> Result<Duration> {
    let limit = limit_for(svc.name);
    let deadline = started + limit;
    for check in &svc.checks {
        loop {
            check_interrupted()?;
            if probe(check, &svc.proc.log) {
                break;
            }
            if let Some(status) = lab.exited(&svc.proc) {
                return Err(ClusterError::Exited {
                    service: svc.name,
                    host: svc.host,
                    status: status.to_string(),
                    log: svc.proc.log.clone(),
                    tail: tail(&svc.proc.log, 25),
                });
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::NotReady {
                    service: svc.name,
                    host: svc.host,
                    check: check.describe(),
                    waited: limit,
                    log: svc.proc.log.clone(),
                    tail: tail(&svc.proc.log, 25),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(started.elapsed())
}

fn probe(check: &Check, log: &Path) -> bool {
    let t = Duration::from_millis(300);
    match check {
        Check::Tcp(a) => TcpStream::connect_timeout(a, t).is_ok(),
        Check::ZkServing(a) => four_letter(*a, "srvr").is_some_and(|s| s.contains("Mode: ")),
        Check::MemcachedUdp(a) => {
            let Ok(s) = UdpSocket::bind(("0.0.0.0", 0)) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(t));
            // memcached's UDP frame header: request id, sequence, datagram count, reserved.
            let req = b"\x00\x07\x00\x00\x00\x01\x00\x00version\r\n";
            let mut buf = [0u8; 256];
            s.send_to(req, a).is_ok()
                && s.recv(&mut buf)
                    .is_ok_and(|n| buf[8..n.max(8)].starts_with(b"VERSION"))
        }
        Check::LogLine(l) => fs::read_to_string(log).is_ok_and(|s| s.contains(l)),
    }
}

/// Sends a ZooKeeper four-letter word and returns the answer.
pub fn four_letter(a: SocketAddr, word: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&a, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(word.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn zk_leader(lab: &Lab) -> Result<Host> {
    let mut modes: Vec<(Host, String)> = Vec::new();
    for h in ZK_HOSTS {
        let mode = lab.in_netns(h, || {
            four_letter(sock(h.v4().into(), 2181), "srvr")
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Mode: ").map(str::to_owned))
                })
                .unwrap_or_default()
        })?;
        modes.push((h, mode));
    }
    let leaders: Vec<Host> = modes
        .iter()
        .filter(|(_, m)| m == "leader")
        .map(|(h, _)| *h)
        .collect();
    match leaders.as_slice() {
        [one] => Ok(*one),
        _ => Err(ClusterError::UnexpectedOutput {
            command: "zookeeper srvr on n1, n2, n3".into(),
            expected: "exactly one `Mode: leader`".into(),
            output: format!("{modes:?}"),
        }),
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
