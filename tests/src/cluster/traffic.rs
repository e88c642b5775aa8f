//! Real clients generating the scenario's traffic from the admin workstation, the outside client
//! and between nodes: psql, curl (HTTP, HTTPS, management API), ssh-keyscan, memcached over TCP
//! and UDP, AMQP publish and consume (pika), rabbitmqctl (epmd and Erlang distribution on the
//! wire), ZooKeeper client operations (kazoo) and redis-cli. Each step checks its client's answer
//! so a broken service fails here, named, rather than as a missing count later. Every client
//! run is bounded in time; nothing is sent outside the lab's namespaces.
use std::fmt;
use std::time::{Duration, Instant};

use super::daemons::{Daemons, Transport};
use super::error::{ClusterError, Result};
use super::lab::{Host, Lab};

/// One client action on the wire.
#[derive(Clone, Debug)]
pub struct Step {
    pub from: Host,
    pub to: Host,
    pub transport: Transport,
    pub port: u16,
    pub what: String,
    pub took: Duration,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>7} -> {:<3} {}/{:<5} {} ({} ms)",
            self.from.name(),
            self.to.name(),
            self.transport.name(),
            self.port,
            self.what,
            self.took.as_millis()
        )
    }
}

/// What the memcached UDP client sent and received (UDP payload bytes): ground truth the
/// oracle's UDP counts must equal exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpFacts {
    pub from: Host,
    pub to: Host,
    pub port: u16,
    pub requests: u64,
    pub request_bytes: u64,
    pub replies: u64,
    pub reply_bytes: u64,
}

/// The workload that ran.
#[derive(Clone, Debug)]
pub struct Workload {
    pub steps: Vec<Step>,
    pub memcached_udp: UdpFacts,
    pub took: Duration,
}

/// Number of memcached UDP get requests (each answered by one datagram).
pub const UDP_REQUESTS: u64 = 40;
/// Number of AMQP messages published then consumed.
pub const AMQP_MESSAGES: u64 = 25;

/// Debian's interpreter, which has the python3-pika and python3-kazoo modules (a `python3`
/// earlier on PATH, e.g. pyenv's, may not).
pub const PYTHON: &str = "/usr/bin/python3";

const CLIENT_LIMIT: Duration = Duration::from_secs(30);

const MEMCACHED_TCP: &str = r#"
import socket, sys
host, port, value = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
s = socket.create_connection((host, port), timeout=5)
def ask(req, until):
    s.sendall(req)
    buf = b""
    while not buf.endswith(until):
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("memcached closed the connection; got %r" % buf)
        buf += chunk
    return buf
assert ask(b"set pw:udp 0 0 %d\r\n%s\r\n" % (len(value), value), b"\r\n") == b"STORED\r\n"
got = ask(b"get pw:udp\r\n", b"END\r\n")
assert value in got, got
s.sendall(b"quit\r\n")
s.close()
print("memcached tcp ok")
"#;

const MEMCACHED_UDP: &str = r#"
import socket, struct, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
sent_bytes = recv_bytes = replies = 0
for i in range(n):
    # memcached's UDP frame header: request id, sequence number, datagram count, reserved.
    req = struct.pack(">HHHH", i, 0, 1, 0) + b"get pw:udp\r\n"
    s.sendto(req, (host, port))
    sent_bytes += len(req)
    data, _ = s.recvfrom(65535)
    assert data[:2] == req[:2] and b"VALUE pw:udp" in data, data
    replies += 1
    recv_bytes += len(data)
print("requests=%d request_bytes=%d replies=%d reply_bytes=%d" % (n, sent_bytes, replies, recv_bytes))
"#;

const AMQP: &str = r#"
import sys, pika
mode, host, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
params = pika.ConnectionParameters(host=host, port=5672, credentials=pika.PlainCredentials("guest", "guest"),
                                   connection_attempts=1, socket_timeout=5, blocked_connection_timeout=10)
conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.queue_declare(queue="portwatch", durable=False, auto_delete=False)
if mode == "publish":
    for i in range(n):
        ch.basic_publish(exchange="", routing_key="portwatch", body=(b"portwatch message %04d " % i) * 8)
    print("published=%d" % n)
else:
    got = 0
    for method, props, body in ch.consume("portwatch", inactivity_timeout=10):
        if method is None:
            break
        ch.basic_ack(method.delivery_tag)
        got += 1
        if got == n:
            break
    ch.cancel()
    print("consumed=%d" % got)
conn.close()
"#;

const ZOOKEEPER: &str = r#"
import logging, sys
logging.basicConfig(level=logging.ERROR)
from kazoo.client import KazooClient
host = sys.argv[1]
zk = KazooClient(hosts=host + ":2181", timeout=5)
zk.start(timeout=15)
zk.ensure_path("/portwatch")
path = zk.create("/portwatch/item-", b"from " + host.encode(), sequence=True)
data, stat = zk.get(path)
children = zk.get_children("/portwatch")
zk.set(path, b"updated")
zk.delete(path)
zk.stop()
zk.close()
print("zookeeper ok at %s: %d children seen" % (host, len(children)))
"#;

struct Runner<'a> {
    lab: &'a Lab,
    steps: Vec<Step>,
}

impl Runner<'_> {
    /// Runs `args` on `from`, checks its output holds `expect`, records the step.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        from: Host,
        to: Host,
        transport: Transport,
        port: u16,
        what: &str,
        args: &[&str],
        env: &[(&str, &str)],
        expect: &str,
    ) -> Result<String> {
        let t = Instant::now();
        let out = self.lab.run_env(from, args, env, CLIENT_LIMIT)?;
        if !out.contains(expect) {
            return Err(ClusterError::UnexpectedOutput {
                command: format!("[{}] {}", from.name(), args.join(" ")),
                expected: expect.into(),
                output: out,
            });
        }
        let step = Step {
            from,
            to,
            transport,
            port,
            what: what.into(),
            took: t.elapsed(),
        };
        eprintln!("cluster: traffic {step}");
        self.steps.push(step);
        Ok(out)
    }
}

/// Runs the whole workload against ready daemons.
pub fn run(lab: &Lab, daemons: &Daemons) -> Result<Workload> {
    let started = Instant::now();
    let mut r = Runner {
        lab,
        steps: Vec::new(),
    };
    use Host::*;
    use Transport::Tcp;
    let n1 = N1.v4().to_string();
    let n2 = N2.v4().to_string();
    let n3 = N3.v4().to_string();
    let pg = |sql: &str| -> Vec<String> {
        [
            "psql",
            "-h",
            &n1,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let pgenv = [("PGCONNECT_TIMEOUT", "5")];

    // PostgreSQL: node to node only (the spec allows all-nodes as clients).
    let a = pg("create table if not exists pw(id int, note text); \
                insert into pw select g, 'row ' || g from generate_series(1, 200) g; \
                select count(*) from pw;");
    r.step(
        N2,
        N1,
        Tcp,
        5432,
        "psql: create, insert 200 rows, count",
        &refs(&a),
        &pgenv,
        "200",
    )?;
    let a = pg("select sum(id) from pw;");
    r.step(N3, N1, Tcp, 5432, "psql: sum", &refs(&a), &pgenv, "20100")?;

    // nginx: HTTP and HTTPS from the admin workstation and from the outside client.
    let body = "portwatch cluster node n1";
    let http = format!("http://{n1}/");
    let https = format!("https://{n1}/");
    let http6 = format!("http://[{}]/", N1.v6());
    for from in [Admin, Outside] {
        r.step(
            from,
            N1,
            Tcp,
            80,
            "curl http",
            &["curl", "-sS", "--max-time", "5", &http],
            &[],
            body,
        )?;
        r.step(
            from,
            N1,
            Tcp,
            443,
            "curl https (self-signed)",
            &["curl", "-sS", "-k", "--max-time", "5", &https],
            &[],
            body,
        )?;
    }
    r.step(
        Outside,
        N1,
        Tcp,
        80,
        "curl http over IPv6",
        &["curl", "-sS", "-g", "--max-time", "5", &http6],
        &[],
        body,
    )?;

    // sshd: an admin-only port, reached from the admin workstation (in its zone) and from the
    // outside client (a peer outside its zone).
    for from in [Admin, Outside] {
        r.step(
            from,
            N1,
            Tcp,
            22,
            "ssh-keyscan",
            &["ssh-keyscan", "-T", "5", "-t", "ed25519", &n1],
            &[],
            "ssh-ed25519",
        )?;
    }

    // memcached: TCP set/get node to node, then UDP gets (the spec documents TCP only).
    r.step(
        N3,
        N2,
        Tcp,
        11211,
        "memcached set/get",
        &[PYTHON, "-c", MEMCACHED_TCP, &n2, "11211", "portwatch-value"],
        &[],
        "memcached tcp ok",
    )?;
    let count = UDP_REQUESTS.to_string();
    let out = r.step(
        N1,
        N2,
        Transport::Udp,
        11211,
        "memcached UDP gets",
        &[PYTHON, "-c", MEMCACHED_UDP, &n2, "11211", &count],
        &[],
        "replies=",
    )?;
    let memcached_udp = parse_udp_facts(&out, N1, N2, 11211)?;

    // RabbitMQ: publish on n1, consume through n2 (the queue lives on n1: the messages cross the
    // Erlang distribution link), the management API on both, rabbitmqctl from n3.
    let count = AMQP_MESSAGES.to_string();
    r.step(
        Admin,
        N1,
        Tcp,
        5672,
        "AMQP publish",
        &[PYTHON, "-c", AMQP, "publish", &n1, &count],
        &[],
        &format!("published={count}"),
    )?;
    r.step(
        Admin,
        N2,
        Tcp,
        5672,
        "AMQP consume",
        &[PYTHON, "-c", AMQP, "consume", &n2, &count],
        &[],
        &format!("consumed={count}"),
    )?;
    for (to, addr) in [(N1, &n1), (N2, &n2)] {
        let url = format!("http://{addr}:15672/api/overview");
        r.step(
            Admin,
            to,
            Tcp,
            15672,
            "management API",
            &["curl", "-sS", "--max-time", "10", "-u", "guest:guest", &url],
            &[],
            "rabbitmq_version",
        )?;
    }
    // rabbitmqctl from n3 to each RabbitMQ node: epmd (4369) then Erlang distribution (25672)
    // on both, whichever node opened the link between n1 and n2 at start-up.
    let home = daemons.erlang_home.to_string_lossy().into_owned();
    for to in [N1, N2] {
        let node = format!("rabbit@{}", to.name());
        let other = if to == N1 { "rabbit@n2" } else { "rabbit@n1" };
        r.step(
            N3,
            to,
            Tcp,
            25672,
            "rabbitmqctl cluster_status (epmd 4369, then distribution)",
            &[
                "/usr/lib/rabbitmq/bin/rabbitmqctl",
                "-n",
                &node,
                "cluster_status",
            ],
            &[("HOME", home.as_str())],
            other,
        )?;
    }

    // ZooKeeper: client operations against each server from another node (writes on followers
    // reach the leader over 2888).
    for (from, to, addr) in [(N3, N1, &n1), (N1, N2, &n2), (N2, N3, &n3)] {
        r.step(
            from,
            to,
            Tcp,
            2181,
            "zookeeper create/get/set/delete",
            &[PYTHON, "-c", ZOOKEEPER, addr],
            &[],
            "zookeeper ok",
        )?;
    }

    // Redis, which the spec does not document: admin over IPv4 and IPv6, and node to node.
    r.step(
        Admin,
        N3,
        Tcp,
        6379,
        "redis-cli set/get",
        &["redis-cli", "-h", &n3, "set", "portwatch", "undocumented"],
        &[],
        "OK",
    )?;
    let n3v6 = N3.v6().to_string();
    r.step(
        Admin,
        N3,
        Tcp,
        6379,
        "redis-cli get over IPv6",
        &["redis-cli", "-h", &n3v6, "get", "portwatch"],
        &[],
        "undocumented",
    )?;
    r.step(
        N1,
        N3,
        Tcp,
        6379,
        "redis-cli ping",
        &["redis-cli", "-h", &n3, "ping"],
        &[],
        "PONG",
    )?;

    Ok(Workload {
        steps: r.steps,
        memcached_udp,
        took: started.elapsed(),
    })
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn parse_udp_facts(out: &str, from: Host, to: Host, port: u16) -> Result<UdpFacts> {
    let get = |key: &str| -> Option<u64> {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    };
    match (
        get("requests"),
        get("request_bytes"),
        get("replies"),
        get("reply_bytes"),
    ) {
        (Some(requests), Some(request_bytes), Some(replies), Some(reply_bytes)) => Ok(UdpFacts {
            from,
            to,
            port,
            requests,
            request_bytes,
            replies,
            reply_bytes,
        }),
        _ => Err(ClusterError::UnexpectedOutput {
            command: "memcached UDP client".into(),
            expected: "requests=N request_bytes=N replies=N reply_bytes=N".into(),
            output: out.into(),
        }),
    }
}
