//! Any text given to the inventory parser gives an inventory or a located error, never a panic;
//! lookups on a parsed inventory never panic either.
#![no_main]
use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use portwatch::inventory::Inventory;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Inventory::parse(text, "fuzz.toml") {
        Ok(inv) => {
            let probes: [IpAddr; 4] = [
                "10.0.0.1".parse().unwrap(),
                "::ffff:10.0.0.1".parse().unwrap(),
                "fd00::1".parse().unwrap(),
                "0.0.0.0".parse().unwrap(),
            ];
            for ip in probes {
                for z in inv.zones.keys().map(String::as_str).chain(["all-nodes", "any", "nope"]) {
                    let _ = inv.zone_contains(z, ip);
                }
                let _ = inv.is_node(ip);
                // An address and its IPv4-mapped form are the same peer.
                if let IpAddr::V4(v4) = ip {
                    assert_eq!(inv.is_node(ip), inv.is_node(IpAddr::V6(v4.to_ipv6_mapped())));
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
