//! The packet decoder never panics on any bytes under any link type, and what it decodes is
//! consistent: portless transports carry no ports, flags only on TCP.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portwatch::capture::decode::{LinkType, decode};
use portwatch::flow::Transport;

const LINKS: [u32; 10] = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276];

fuzz_target!(|data: &[u8]| {
    let Some((sel, frame)) = data.split_first() else { return };
    let link = LinkType::from_number(LINKS[usize::from(*sel) % LINKS.len()]);
    if let Ok(d) = decode(link, frame) {
        if d.transport() != Transport::Tcp {
            assert_eq!(d.tcp_flags, 0);
        }
        if matches!(d.transport(), Transport::Other(_)) {
            assert_eq!((d.sport, d.dport), (0, 0));
        }
        let _ = d.wire_bytes(frame.len() as u32);
    }
});
