//! The value parsers (ports, peers, transports, directions) accept or reject any string without
//! panicking, and what they accept prints back to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portwatch::spec::{DirectionSpec, Peer, Ports, TransportSpec};

fuzz_target!(|s: &str| {
    if let Ok(p) = s.parse::<Ports>() {
        let printed = p.to_string();
        assert_eq!(printed.parse::<Ports>().as_ref(), Ok(&p), "{printed:?}");
        for (_, r) in p.iter_ranges() {
            assert!(p.matches(r.start).is_some() && p.matches(r.end).is_some());
        }
        let _ = p.port_count();
    }
    if let Ok(peer) = s.parse::<Peer>() {
        let printed = peer.to_string();
        assert_eq!(printed.parse::<Peer>().as_ref(), Ok(&peer), "{printed:?}");
    }
    let _ = s.parse::<TransportSpec>();
    let _ = s.parse::<DirectionSpec>();
});
