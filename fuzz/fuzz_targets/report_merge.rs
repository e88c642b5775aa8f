//! Arbitrary bytes read as node reports (pieces separated by 0xFF, a byte JSON never holds)
//! and merged: reading and merging never panic, and a merged view renders and reads back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portwatch::report::{ClusterReport, Report, json, merge};

fuzz_target!(|data: &[u8]| {
    let reports: Vec<Report> = data
        .split(|&b| b == 0xFF)
        .take(8)
        .filter_map(|piece| Report::from_json(piece, "fuzz.json").ok())
        .collect();
    // A report that reads must render and read back the same.
    for r in &reports {
        let mut out = Vec::new();
        json::render(r, &mut out).expect("rendering to memory");
        let back = Report::from_json(out.as_slice(), "rendered.json")
            .unwrap_or_else(|e| panic!("a rendered report does not read back: {e}"));
        assert_eq!(&back, r, "report round trip");
    }
    let Ok(cluster) = merge(&reports) else {
        return;
    };
    assert_eq!(cluster.nodes.len(), reports.len());
    let mut out = Vec::new();
    json::render_cluster(&cluster, &mut out).expect("rendering to memory");
    let back: ClusterReport = serde_json::from_slice(&out).expect("cluster JSON reads back");
    assert_eq!(back, cluster, "cluster round trip");
});
