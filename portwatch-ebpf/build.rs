//! Tells bpf-linker to let LLVM expand small memset/memcpy inline. By default bpf-linker defers
//! that expansion (`--bpf-expand-memcpy-in-order`), which leaves memset as a call to a byte
//! loop: slow on every packet, and rejected by the verifier without CAP_PERFMON ("pointer
//! arithmetic ... prohibited for !root").
fn main() {
    println!("cargo:rustc-link-arg=--disable-expand-memcpy-in-order");
}
