//! `cargo xtask demo` runs this: the cluster scenario of the privileged test (tests/src/cluster)
//! for a person. It leaves portwatch's reports (per node and for the cluster, in JSON, text and
//! Markdown), the captures and the oracle's counts in a folder, prints the cluster view and where
//! everything is, and removes every namespace and process it made, also on Ctrl-C.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::Ordering;

use portwatch_tests::cluster::lab::{INTERRUPTED, is_root};
use portwatch_tests::cluster::scenario::{self, Options, Outcome};
use portwatch_tests::cluster::{Host, checks, portwatch};

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe. Every wait loop of the scenario checks it.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn usage() -> ExitCode {
    eprintln!("usage: cluster-demo [--out DIR]   (needs root; `cargo xtask demo` runs it)");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut out = PathBuf::from("portwatch-demo");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => match args.next() {
                Some(d) => out = PathBuf::from(d),
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    if !is_root() {
        eprintln!(
            "cluster-demo: needs root (it creates network namespaces and starts daemons in them); run `cargo xtask demo`, which uses sudo"
        );
        return ExitCode::from(2);
    }
    let handler = on_signal as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t;
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    if out.exists() {
        let _ = std::fs::remove_dir_all(&out);
    }
    let out = std::path::absolute(&out).unwrap_or(out);
    let opts = Options {
        keep_pcaps: Some(out.join("pcap")),
        analyze: true,
        agents: true,
        reports_dir: Some(out.clone()),
    };
    eprintln!(
        "cluster-demo: three nodes, an admin workstation and an outside client in network namespaces; real PostgreSQL, nginx, sshd, memcached, RabbitMQ (2 nodes), ZooKeeper (3 nodes) and Redis; about a minute"
    );
    let o = match scenario::run(&opts) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cluster-demo: the scenario failed: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                eprintln!("  caused by: {s}");
                src = s.source();
            }
            eprintln!("cluster-demo: everything it had started was removed");
            return ExitCode::from(1);
        }
    };
    match finish(&o, &out) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cluster-demo: {e}");
            ExitCode::from(1)
        }
    }
}

fn finish(o: &Outcome, out: &Path) -> Result<ExitCode, String> {
    let bin = portwatch::binary().map_err(|e| e.to_string())?;
    let agents = out.join("agents");
    let analyze = out.join("analyze");
    // The cluster view of the agents' reports in every format, and text and Markdown forms of
    // the offline analysis of the captures.
    let agent_json: Vec<PathBuf> = Host::NODES
        .iter()
        .map(|h| {
            agents
                .join(h.name())
                .join(format!("portwatch-{}.json", h.name()))
        })
        .collect();
    let analyze_json: Vec<PathBuf> = Host::NODES
        .iter()
        .map(|h| analyze.join(format!("{}.json", h.name())))
        .collect();
    for (format, ext) in [("text", "txt"), ("markdown", "md"), ("html", "html")] {
        merge(
            &bin,
            &agent_json,
            format,
            &agents.join(format!("cluster.{ext}")),
        )?;
        if format != "html" {
            merge(
                &bin,
                &analyze_json,
                format,
                &analyze.join(format!("cluster.{ext}")),
            )?;
            for h in Host::NODES {
                let pcap = out.join("pcap").join(format!("{}.pcap", h.name()));
                let to = analyze.join(format!("{}.{ext}", h.name()));
                render_node(&bin, h, &pcap, format, &to)?;
            }
        }
    }
    let oracle = out.join("oracle.txt");
    std::fs::write(&oracle, oracle_table(o)).map_err(|e| format!("{}: {e}", oracle.display()))?;

    // What a person wants to see: the cluster view, then whether it says what it should.
    let text = std::fs::read_to_string(agents.join("cluster.txt")).unwrap_or_default();
    println!("{text}");
    let mut problems = Vec::new();
    let spec = portwatch::spec_path();
    if let Some(ag) = &o.agents {
        problems.extend(checks::node_reports(&ag.reports, &spec).map_err(|e| e.to_string())?);
        for h in Host::NODES {
            problems.extend(checks::finding_port_totals(h, &ag.reports[&h], &o.oracle[&h]).0);
        }
        problems.extend(checks::cluster_report(&ag.cluster));
    }
    if let Some(a) = &o.analysis {
        let mut p = checks::node_reports(&a.reports, &spec).map_err(|e| e.to_string())?;
        for h in Host::NODES {
            p.extend(checks::port_counts(h, &a.totals[&h], &o.oracle[&h]));
        }
        p.extend(checks::cluster_report(&a.cluster));
        problems.extend(p.into_iter().map(|p| format!("offline analysis: {p}")));
    }
    let total: f64 = o.phases.iter().map(|(_, d)| d.as_secs_f64()).sum();
    println!("scenario: {total:.0} s in all; phases:");
    for (name, d) in &o.phases {
        println!("  {name:<28} {:>6.1} s", d.as_secs_f64());
    }
    if problems.is_empty() {
        println!(
            "checks: Redis undocumented (traffic and listener) on n3, unused entries, the outside client on the admin-only ssh port, memcached over UDP, per-port counts equal to tshark's, the cluster view: all as expected"
        );
    } else {
        println!("checks: {} problem(s):", problems.len());
        for p in &problems {
            println!("  - {p}");
        }
    }
    if !o.leftovers.is_empty() {
        println!("could not clean up: {:?}", o.leftovers);
    }
    println!("\nEverything is in {}:", out.display());
    println!(
        "  agents/NODE/portwatch-NODE.{{json,txt,md}}  each node's agent report (written at SIGTERM)"
    );
    println!("  agents/cluster.{{json,txt,md,html}}         portwatch merge of the three");
    println!(
        "  analyze/                                    portwatch analyze of each node's capture (offline), and merged"
    );
    println!("  pcap/NODE.pcap                              tcpdump on each node's interface");
    println!(
        "  oracle.txt                                  tshark's per-port counts of those captures"
    );
    println!(
        "  the scenario's spec and inventory: {} and {}",
        spec.display(),
        portwatch::inventory_path().display()
    );
    Ok(if problems.is_empty() && o.leftovers.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn merge(bin: &Path, reports: &[PathBuf], format: &str, to: &Path) -> Result<(), String> {
    let st = Command::new(bin)
        .args(["merge", "--format", format, "-o"])
        .arg(to)
        .args(reports)
        .status()
        .map_err(|e| format!("running {}: {e}", bin.display()))?;
    // Exit status 1 means the cluster has findings (documented); 2 is an error.
    if matches!(st.code(), Some(0 | 1)) {
        Ok(())
    } else {
        Err(format!(
            "portwatch merge --format {format} failed with {st}"
        ))
    }
}

fn render_node(bin: &Path, h: Host, pcap: &Path, format: &str, to: &Path) -> Result<(), String> {
    let out = Command::new(bin)
        .current_dir(portwatch::workspace_root())
        .arg("analyze")
        .arg("--spec")
        .arg(portwatch::SPEC_ARG)
        .arg("--inventory")
        .arg(portwatch::INVENTORY_ARG)
        .args(["--node", h.name(), "--no-progress", "--format", format])
        .arg(pcap)
        .output()
        .map_err(|e| format!("running {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "portwatch analyze --format {format} of {} failed: {}",
            pcap.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::write(to, &out.stdout).map_err(|e| format!("{}: {e}", to.display()))
}

/// tshark's per-port counts, one table per node.
fn oracle_table(o: &Outcome) -> String {
    let mut s = String::from(
        "Per-port counts computed by tshark from a tcpdump capture on each node's interface\n(the oracle portwatch's counts are checked against). bytes = link-layer frame bytes.\n",
    );
    let by_node: BTreeMap<_, _> = o.oracle.iter().collect();
    for (h, counts) in by_node {
        let _ = writeln!(
            s,
            "\n{h}:\n  {:<34} {:>8} {:>10} {:>10}",
            "port", "packets", "bytes", "payload"
        );
        for (k, c) in counts.iter().filter(|(_, c)| c.packets > 0) {
            let _ = writeln!(
                s,
                "  {:<34} {:>8} {:>10} {:>10}",
                k.to_string(),
                c.packets,
                c.frame_bytes,
                c.payload_bytes
            );
        }
    }
    s
}
