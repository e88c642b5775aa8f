//! The importer reads any text in any format without panicking, and its draft is always a spec
//! the parser accepts (with one entry per imported row).
#![no_main]
use libfuzzer_sys::fuzz_target;
use portwatch::spec::Spec;
use portwatch::spec::import::{Format, import};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = match selector % 3 {
        0 => Format::Text,
        1 => Format::Csv,
        _ => Format::Markdown,
    };
    let draft = import(text, format);
    let toml = draft.to_toml("fuzz", "fuzz.txt");
    match Spec::parse(&toml, "draft.toml") {
        Ok(spec) => assert_eq!(spec.entries.len(), draft.rows.len()),
        Err(e) => panic!("the draft does not parse: {e}\n{toml}"),
    }
});
