//! `cargo xtask setup`: installs what a fresh machine lacks, idempotently, and says what it did:
//! the pinned nightly with rust-src, bpf-linker built against that nightly's own libLLVM, the
//! cross-check targets, and the Debian packages the tests and benchmarks use.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{self, output, sh};

/// The nightly that builds the eBPF object (must match portwatch-common's EBPF_TOOLCHAIN).
pub const NIGHTLY: &str = "nightly-2026-05-20";
const BPF_LINKER_VERSION: &str = "0.13";
const CROSS_TARGETS: &[&str] = &["x86_64-pc-windows-gnu", "x86_64-apple-darwin"];

/// Debian packages: build (libpcap-dev), tests and benchmarks (tcpdump, tshark, trafgen,
/// iperf3, bpftool, softflowd, promtool, chromium) and the real daemons of the cluster scenario.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "libpcap-dev",
    // C cross compiler for the Windows `cargo check` (build scripts of -sys crates).
    "gcc-mingw-w64-x86-64",
    "iproute2",
    "tcpdump",
    "tshark",
    "iperf3",
    "netsniff-ng",
    "bpftool",
    "softflowd",
    "prometheus",
    // systemd-analyze verifies deploy/systemd/portwatch.service offline (portwatch/tests/deploy.rs).
    "systemd",
    "libcap2-bin",
    "python3",
    "python3-pip",
    // The cluster scenario (tests/src/cluster): daemons started inside namespaces, their clients.
    "postgresql",
    "postgresql-client",
    "nginx",
    "openssh-server",
    "openssh-client",
    "memcached",
    "rabbitmq-server",
    "zookeeper",
    "libslf4j-java",
    "redis-server",
    "redis-tools",
    "python3-pika",
    "python3-kazoo",
    "openssl",
    "curl",
    "chromium",
];

#[derive(Debug, clap::Args)]
pub struct SetupArgs {
    /// Skip the Debian packages (toolchain only).
    #[arg(long)]
    pub no_packages: bool,
}

pub fn run(args: &SetupArgs) -> Result<()> {
    let mut did = Vec::new();
    nightly(&mut did)?;
    cross_targets(&mut did)?;
    bpf_linker(&mut did)?;
    if !args.no_packages {
        packages(&mut did)?;
        python_packages(&mut did)?;
    }
    bpffs(&mut did);
    if did.is_empty() {
        eprintln!("xtask setup: nothing to do, everything is installed");
    } else {
        eprintln!("xtask setup: done:");
        for d in &did {
            eprintln!("  - {d}");
        }
    }
    Ok(())
}

fn nightly(did: &mut Vec<String>) -> Result<()> {
    let have = output(Command::new("rustup").args(["run", NIGHTLY, "rustc", "-V"])).is_some();
    let src = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))
    .is_some_and(|s| s.lines().any(|l| l.starts_with("rust-src")));
    if have && src {
        return Ok(());
    }
    sh(Command::new("rustup").args([
        "toolchain",
        "install",
        NIGHTLY,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))?;
    did.push(format!("installed toolchain {NIGHTLY} with rust-src"));
    Ok(())
}

fn cross_targets(did: &mut Vec<String>) -> Result<()> {
    let installed =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    let missing: Vec<&str> = CROSS_TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    sh(Command::new("rustup")
        .arg("target")
        .arg("add")
        .args(&missing))?;
    did.push(format!("added targets {}", missing.join(", ")));
    Ok(())
}

/// The nightly's LLVM: (major version, sysroot lib dir).
fn nightly_llvm() -> Result<(String, PathBuf)> {
    let vv = output(Command::new("rustup").args(["run", NIGHTLY, "rustc", "-vV"]))
        .context("could not ask the pinned nightly for its version")?;
    let llvm = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("the nightly's `rustc -vV` names no LLVM version")?;
    let major = llvm.split('.').next().unwrap_or(llvm).to_owned();
    let sysroot =
        output(Command::new("rustup").args(["run", NIGHTLY, "rustc", "--print", "sysroot"]))
            .context("could not ask the pinned nightly for its sysroot")?;
    Ok((major, PathBuf::from(sysroot.trim()).join("lib")))
}

fn bpf_linker_works() -> bool {
    // Run it the way aya-build will: outside `rustup run`, without a library path.
    output(
        Command::new("bpf-linker")
            .arg("--version")
            .env_remove("LD_LIBRARY_PATH")
            .env_remove("RUSTUP_TOOLCHAIN"),
    )
    .is_some_and(|v| v.contains(&format!("bpf-linker {BPF_LINKER_VERSION}")))
}

fn bpf_linker(did: &mut Vec<String>) -> Result<()> {
    if bpf_linker_works() {
        return Ok(());
    }
    let (major, lib) = nightly_llvm()?;
    // A persistent prefix holding both names the linker needs: libLLVM.so (build time) and the
    // versioned file names (run time, via the binary's rpath).
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let prefix = Path::new(&home).join(format!(".local/share/portwatch/llvm-{NIGHTLY}"));
    let plib = prefix.join("lib");
    std::fs::create_dir_all(&plib).with_context(|| format!("creating {}", plib.display()))?;
    let mut main_lib = None;
    for e in std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("libLLVM") {
            link(&e.path(), &plib.join(&name))?;
            if name.ends_with(".so") {
                main_lib = Some(e.path());
            }
        }
    }
    let Some(main_lib) = main_lib else {
        bail!(
            "no libLLVM*.so in {}: is {NIGHTLY} complete?",
            lib.display()
        );
    };
    link(&main_lib, &plib.join("libLLVM.so"))?;
    sh(util::cargo()
        .args(["install", "--force", "bpf-linker", "--version"])
        .arg(format!("^{BPF_LINKER_VERSION}"))
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", &prefix))?;
    if !bpf_linker_works() {
        bail!(
            "bpf-linker was installed but does not start outside `rustup run`; check that {} holds the LLVM library names it needs (ldd $(which bpf-linker))",
            plib.display()
        );
    }
    did.push(format!(
        "installed bpf-linker {BPF_LINKER_VERSION} against LLVM {major} of {NIGHTLY} (prefix {})",
        prefix.display()
    ));
    Ok(())
}

fn link(src: &Path, dst: &Path) -> Result<()> {
    if std::fs::read_link(dst).is_ok_and(|t| t == src) {
        return Ok(());
    }
    let _ = std::fs::remove_file(dst);
    std::os::unix::fs::symlink(src, dst)
        .with_context(|| format!("linking {} -> {}", dst.display(), src.display()))
}

fn installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

fn packages(did: &mut Vec<String>) -> Result<()> {
    if output(Command::new("dpkg-query").arg("--version")).is_none() {
        eprintln!("xtask setup: not a Debian system; install libpcap and the test tools yourself");
        return Ok(());
    }
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let sudo: &[&str] = if util::is_root() {
        &[]
    } else {
        &["sudo", "-E"]
    };
    let apt = |args: &[&str]| -> Command {
        let mut all: Vec<&str> = sudo.to_vec();
        all.extend_from_slice(args);
        let mut c = Command::new(all[0]);
        c.args(&all[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    sh(&mut apt(&["apt-get", "update", "-qq"]))?;
    let mut args = vec!["apt-get", "install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    // Package scripts must not start the daemons in the host's namespace (the tests start them
    // inside their own): a policy-rc.d that refuses every start, for the install only.
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let own_policy = util::is_root() && !policy.exists();
    if own_policy {
        std::fs::write(policy, "#!/bin/sh\nexit 101\n")?;
        std::fs::set_permissions(
            policy,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
        )?;
    }
    let installed = sh(&mut apt(&args));
    if own_policy {
        let _ = std::fs::remove_file(policy);
    }
    installed?;
    did.push(format!("installed Debian packages: {}", missing.join(" ")));
    Ok(())
}

/// Python packages the tests run (from PyPI): kubernetes-validate checks
/// deploy/kubernetes/daemonset.yaml against the Kubernetes API schemas it ships.
pub const PYTHON_PACKAGES: &[(&str, &str)] = &[("kubernetes-validate", "kubernetes_validate")];

fn python_packages(did: &mut Vec<String>) -> Result<()> {
    for (package, module) in PYTHON_PACKAGES {
        let have = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if have {
            continue;
        }
        let pip = |extra: &[&str]| {
            Command::new("python3")
                .args(["-m", "pip", "install", "--quiet"])
                .args(extra)
                .arg(package)
                .status()
                .is_ok_and(|s| s.success())
        };
        // Debian's own python3 refuses pip installs into the system without the flag.
        if !pip(&[]) && !pip(&["--break-system-packages"]) {
            bail!("could not install the Python package {package} with pip");
        }
        did.push(format!("installed Python package {package}"));
    }
    Ok(())
}

fn bpffs(did: &mut Vec<String>) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("bpf"))
        || !util::is_root()
    {
        return;
    }
    if sh(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"])).is_ok() {
        did.push("mounted bpffs on /sys/fs/bpf".into());
    }
}
