//! A minimal agent for the restart tests: opens the eBPF backend on the interfaces given, then
//! obeys one command per stdin line (`collect` prints the interval as one JSON line, commits
//! the baseline, then prints `committed`; `quit` detaches and exits). Between commands it is
//! idle, so a test that waits for `committed` can SIGKILL it at a known point.
use std::io::{BufRead, Write};
use std::path::PathBuf;

use portwatch::capture::Backend;
use portwatch::capture::ebpf::{EbpfBackend, EbpfConfig};
use portwatch::clock::{Clock, SystemClock};

fn main() {
    let mut cfg = EbpfConfig::default();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().expect("missing value");
        match a.as_str() {
            "--iface" => cfg.ifaces.get_or_insert_with(Vec::new).push(val()),
            "--pin-dir" => cfg.pin_dir = PathBuf::from(val()),
            "--flow-capacity" => cfg.flow_capacity = val().parse().expect("number"),
            other => panic!("unknown argument {other}"),
        }
    }
    let mut backend = match EbpfBackend::open(cfg) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("pw_ebpf_driver: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                eprintln!("  caused by: {s}");
                src = s.source();
            }
            std::process::exit(2);
        }
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {}", std::process::id()).unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        match line.unwrap_or_default().trim() {
            "collect" => {
                let snap = backend.collect(SystemClock.now()).expect("collect");
                writeln!(out, "{}", serde_json::to_string(&snap).unwrap()).unwrap();
                out.flush().unwrap();
                // Handed out: the agent commits at this point too (after its sinks).
                backend.commit().expect("commit");
                writeln!(out, "committed").unwrap();
                out.flush().unwrap();
            }
            "quit" | "" => break,
            other => panic!("unknown command {other}"),
        }
    }
    backend.close().expect("detach");
}
