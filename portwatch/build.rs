//! Builds the eBPF object with the pinned nightly (via aya-build) on Linux targets. Where the
//! toolchain is missing it writes an empty object and a warning: the agent then reports that the
//! eBPF backend is unavailable and `cargo xtask setup` is the fix, while pcap still works.
use std::{env, fs, path::PathBuf};

const TOOLCHAIN: &str = "nightly-2026-05-20";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=PORTWATCH_SKIP_EBPF");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let obj = out.join("portwatch");
    let linux = env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    let skip = env::var_os("PORTWATCH_SKIP_EBPF").is_some();
    if !linux || skip {
        return Ok(fs::write(&obj, [])?);
    }
    if which::which("bpf-linker").is_err() {
        println!(
            "cargo:warning=bpf-linker not found: building without the eBPF object (run `cargo xtask setup`)"
        );
        return Ok(fs::write(&obj, [])?);
    }
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../portwatch-ebpf");
    let root = root.to_str().expect("utf-8 path");
    println!("cargo:rerun-if-changed=../portwatch-common/src");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "portwatch-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(TOOLCHAIN),
    )
}
