//! Any text given to the spec parser gives a spec or a located error, never a panic; a parsed
//! spec lints without panicking (the text doubling as the vendor document) and its ports print
//! back to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portwatch::spec::{Ports, Spec, lint};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Spec::parse(text, "fuzz.toml") {
        Ok(spec) => {
            let _ = lint::lint(&spec, None, Some(text));
            for e in &spec.entries {
                let back: Ports = e.ports.to_string().parse().expect("ports print back");
                assert_eq!(back, e.ports);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
