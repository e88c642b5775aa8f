//! What a SIGKILLed test leaves (its network namespaces and bpffs pin directories) is removed by
//! the next test process, and nothing of a live process is touched.
use std::path::Path;
use std::process::Command;

use portwatch_tests::{ip, require_root, sweep_stale};

#[test]
fn leftovers_of_dead_test_processes_are_swept_and_live_ones_kept() {
    if !require_root("leftovers_of_dead_test_processes_are_swept_and_live_ones_kept") {
        return;
    }
    // A process id that is gone: a child that has exited and been reaped.
    let dead = Command::new("true")
        .spawn()
        .and_then(|mut c| c.wait().map(|_| c.id()))
        .expect("running true");
    assert!(!Path::new(&format!("/proc/{dead}")).exists());
    let me = std::process::id();
    let stale_ns = format!("pwt-sweep-{dead}-0");
    let live_ns = format!("pwt-sweep-{me}-900");
    let stale_pin = Path::new("/sys/fs/bpf").join(format!("pwtest-sweep-{dead}-0"));
    let live_pin = Path::new("/sys/fs/bpf").join(format!("pwtest-sweep-{me}-900"));
    for ns in [&stale_ns, &live_ns] {
        ip(&["netns", "add", ns]).expect("ip netns add");
    }
    for d in [&stale_pin, &live_pin] {
        std::fs::create_dir_all(d).expect("mkdir on bpffs");
    }

    sweep_stale();

    let netns = |n: &str| Path::new("/run/netns").join(n).exists();
    let (stale_ns_left, live_ns_left) = (netns(&stale_ns), netns(&live_ns));
    let (stale_pin_left, live_pin_left) = (stale_pin.exists(), live_pin.exists());
    let _ = ip(&["netns", "del", &live_ns]);
    let _ = ip(&["netns", "del", &stale_ns]);
    let _ = std::fs::remove_dir_all(&live_pin);
    let _ = std::fs::remove_dir_all(&stale_pin);
    assert!(
        !stale_ns_left,
        "{stale_ns} of dead process {dead} was not removed"
    );
    assert!(!stale_pin_left, "{} was not removed", stale_pin.display());
    assert!(live_ns_left, "{live_ns} of this live process was removed");
    assert!(
        live_pin_left,
        "{} of this live process was removed",
        live_pin.display()
    );
}
