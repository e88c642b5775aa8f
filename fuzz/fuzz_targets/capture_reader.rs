//! The pcap/pcapng reader and the decoder never panic on any file: every frame either decodes
//! or is counted, reading stops at an error with an offset inside the file, and the counts
//! the flow table keeps add up to the frames read. The file driver (batched, pipelined flow
//! table updates) gives the same snapshot as feeding the table one packet at a time.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use portwatch::capture::decode;
use portwatch::capture::file::{Orienter, Reader, ingest_bytes};
use portwatch::flow::FlowTable;

fuzz_target!(|data: &[u8]| {
    let Ok(mut r) = Reader::new(data) else {
        return;
    };
    // A small capacity so that full tables are exercised too.
    let mut table = FlowTable::new(64, 0);
    let mut frames = 0u64;
    while let Some(f) = r.next_frame() {
        match f {
            Ok(f) => {
                frames += 1;
                assert!(f.data.len() as u64 <= f.wire_len as u64);
                match decode::decode(f.link, f.data) {
                    Ok(d) => table.ingest(&d.into_meta(f.ts, f.wire_len, f.dir)),
                    Err(skip) => skip.count(table.health_mut()),
                }
            }
            Err(e) => {
                assert!(e.offset <= data.len() as u64, "{e}");
                let _ = e.to_string();
            }
        }
    }
    assert!(r.offset() <= data.len() as u64);
    let one_by_one = table.drain(1);
    assert_eq!(one_by_one.health.packets_seen, frames);

    let mut batched = FlowTable::new(64, 0);
    let summary = ingest_bytes(
        Path::new("fuzz.pcap"),
        data,
        &mut batched,
        &Orienter::default(),
        &mut |_| {},
    )
    .expect("Reader::new accepted the file");
    assert_eq!(summary.frames, frames);
    assert_eq!(batched.drain(1), one_by_one);
});
