//! Thin wrappers over the `bpf(2)` commands aya 0.14 does not expose for our use (key iteration
//! and lookup-and-delete on a hash map, batch reads and writes of per-CPU arrays,
//! `BPF_PROG_TEST_RUN`) and over `membarrier(2)`. Nothing else calls `bpf(2)` directly.
use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;

/// The `bpf_attr` member used by the map element commands.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value_or_next_key: u64,
    flags: u64,
}

/// The `bpf_attr` member used by `BPF_MAP_CREATE` (the fields this module sets).
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// The `bpf_attr` member used by `BPF_OBJ_PIN` and `BPF_OBJ_GET`.
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// The `bpf_attr` member used by the batch commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The `bpf_attr` member used by `BPF_PROG_TEST_RUN`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

fn sys_bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, properly sized #[repr(C)] prefix of `union bpf_attr`; the
    // kernel reads and writes at most `size_of::<A>()` bytes of it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            size_of::<A>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The key after `key` (the first key when `key` is `None`); `Ok(None)` at the end.
pub(crate) fn map_next_key<K: Copy + Default>(
    fd: BorrowedFd<'_>,
    key: Option<&K>,
) -> io::Result<Option<K>> {
    let mut next = K::default();
    let mut attr = MapElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: key.map_or(0, |k| std::ptr::from_ref(k) as u64),
        value_or_next_key: std::ptr::from_mut(&mut next) as u64,
        ..MapElemAttr::default()
    };
    match sys_bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
        Ok(_) => Ok(Some(next)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Looks `key` up and deletes it in one step (`BPF_MAP_LOOKUP_AND_DELETE_ELEM`, hash maps
/// since Linux 5.14) on a per-CPU hash map: the kernel returns every possible CPU's value (`cpus` of them, each `size_of::<V>()` rounded up to 8 bytes) and deletes the entry.
/// `Ok(None)` when the key is gone.
pub(crate) fn map_lookup_and_delete_percpu<K, V: Copy + Default>(
    fd: BorrowedFd<'_>,
    key: &K,
    cpus: usize,
) -> io::Result<Option<Vec<V>>> {
    // The kernel writes each CPU's value at a stride of the size rounded up to 8 bytes; a V
    // whose size is a multiple of 8 makes that stride its own, so a Vec<V> is the buffer.
    const { assert!(size_of::<V>().is_multiple_of(8)) };
    let mut values = vec![V::default(); cpus];
    let mut attr = MapElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: std::ptr::from_ref(key) as u64,
        value_or_next_key: values.as_mut_ptr() as u64,
        ..MapElemAttr::default()
    };
    match sys_bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) {
        Ok(_) => Ok(Some(values)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads the values at indices `first .. first + entries` of a per-CPU array of `value_size`
/// bytes with `BPF_MAP_LOOKUP_BATCH` (Linux 5.6), a few calls instead of one per index, handing
/// `each` the values chunk by chunk in index order (one reused buffer of a few thousand values,
/// not the whole range at once), each value as `cpus` consecutive slots of `value_size` rounded
/// up to 8 bytes.
pub(crate) fn percpu_array_read_each(
    fd: BorrowedFd<'_>,
    first: u32,
    entries: u32,
    value_size: usize,
    cpus: usize,
    mut each: impl FnMut(&[u8]),
) -> io::Result<()> {
    const CHUNK: u32 = 4096;
    let stride = value_size.next_multiple_of(8) * cpus;
    let mut buf = vec![0u8; CHUNK as usize * stride];
    let mut keys = vec![0u32; CHUNK as usize];
    // The batch token is the last index returned; the kernel goes on after it.
    let mut token = first.wrapping_sub(1);
    let mut done = 0usize;
    let mut start = first == 0;
    while done < entries as usize {
        let want = CHUNK.min(entries - done as u32);
        let mut attr = BatchAttr {
            in_batch: if start {
                0
            } else {
                std::ptr::from_ref(&token) as u64
            },
            out_batch: std::ptr::from_mut(&mut token) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: buf.as_mut_ptr() as u64,
            count: want,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let r = sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let got = (attr.count as usize).min(want as usize);
        // The kernel returns the values in key order from the token on.
        if let Some(&k) = keys.first()
            && got > 0
            && k as usize != first as usize + done
        {
            return Err(io::Error::other(format!(
                "BPF_MAP_LOOKUP_BATCH resumed at index {k}, expected {}",
                first as usize + done
            )));
        }
        each(&buf[..got * stride]);
        done += got;
        start = false;
        match r {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(e),
        }
        if got == 0 {
            break;
        }
    }
    Ok(())
}

/// Sets the values at `indices` of a per-CPU array of `value_size` bytes to zero on every CPU
/// with `BPF_MAP_UPDATE_BATCH` (Linux 5.6), a chunk of indices per call.
pub(crate) fn percpu_array_zero(
    fd: BorrowedFd<'_>,
    indices: &[u32],
    value_size: usize,
    cpus: usize,
) -> io::Result<()> {
    const CHUNK: usize = 1024;
    let stride = value_size.next_multiple_of(8) * cpus;
    let zeros = vec![0u8; CHUNK.min(indices.len()) * stride];
    for chunk in indices.chunks(CHUNK) {
        let mut attr = BatchAttr {
            keys: chunk.as_ptr() as u64,
            values: zeros.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        sys_bpf(BPF_MAP_UPDATE_BATCH, &mut attr)?;
        if attr.count as usize != chunk.len() {
            return Err(io::Error::other(format!(
                "BPF_MAP_UPDATE_BATCH wrote {} of {} values",
                attr.count,
                chunk.len()
            )));
        }
    }
    Ok(())
}

/// `membarrier(MEMBARRIER_CMD_GLOBAL)`: returns after an RCU grace period, so every BPF program
/// run that started before the call (they run inside RCU read-side sections) has ended.
/// Fails with `EINVAL` on kernels booted with `nohz_full`.
pub(crate) fn membarrier_global() -> io::Result<()> {
    // SAFETY: membarrier takes no pointers.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waits for an RCU grace period through the map-in-map rule, where `membarrier` is unavailable
/// (`nohz_full` kernels): an update of an `ARRAY_OF_MAPS` element with an inner map's fd
/// returns only after `synchronize_rcu()` (`maybe_wait_bpf_programs` in kernel/bpf/syscall.c,
/// Linux 5.0 and later; the kernel's own selftests use it to the same end), so every BPF program
/// run that started before the update has ended. Holds a one-entry outer map and its inner map.
pub(crate) struct GracePeriod {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl GracePeriod {
    /// Creates the two (unpinned) maps.
    pub(crate) fn new() -> io::Result<Self> {
        let inner = array_create("pw_gp_inner", 4, 1)?;
        let mut attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY_OF_MAPS,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            inner_map_fd: inner.as_raw_fd() as u32,
            ..MapCreateAttr::default()
        };
        for (d, s) in attr.map_name.iter_mut().zip(b"pw_gp_outer") {
            *d = *s;
        }
        let fd = sys_bpf(BPF_MAP_CREATE, &mut attr)?;
        // SAFETY: BPF_MAP_CREATE returned a new file descriptor that we now own.
        let outer = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Self { outer, inner })
    }

    /// Returns after an RCU grace period (see the type).
    pub(crate) fn wait(&self) -> io::Result<()> {
        let key = 0u32;
        let value = self.inner.as_raw_fd() as u32;
        let mut attr = MapElemAttr {
            map_fd: self.outer.as_raw_fd() as u32,
            key: std::ptr::from_ref(&key) as u64,
            value_or_next_key: std::ptr::from_ref(&value) as u64,
            ..MapElemAttr::default()
        };
        sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
    }
}

/// Creates an array map of `entries` values of `value_size` bytes (u32 keys).
pub(crate) fn array_create(name: &str, value_size: u32, entries: u32) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size,
        max_entries: entries,
        ..MapCreateAttr::default()
    };
    for (d, s) in attr.map_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let fd = sys_bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: BPF_MAP_CREATE returned a new file descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Writes `value` (exactly the map's value size) at index `key`.
pub(crate) fn array_set(fd: BorrowedFd<'_>, key: u32, value: &[u8]) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: std::ptr::from_ref(&key) as u64,
        value_or_next_key: value.as_ptr() as u64,
        ..MapElemAttr::default()
    };
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
}

/// Reads the value at index `key` into `value` (exactly the map's value size).
pub(crate) fn array_get(fd: BorrowedFd<'_>, key: u32, value: &mut [u8]) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: std::ptr::from_ref(&key) as u64,
        value_or_next_key: value.as_mut_ptr() as u64,
        ..MapElemAttr::default()
    };
    sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).map(|_| ())
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Pins the object `fd` at `path` on bpffs.
pub(crate) fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
    };
    sys_bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

/// Opens the object pinned at `path`.
pub(crate) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        ..ObjAttr::default()
    };
    let fd = sys_bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: BPF_OBJ_GET returned a new file descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Result of one `BPF_PROG_TEST_RUN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value.
    pub retval: i32,
    /// Mean run time per repetition, in nanoseconds, as the kernel measured it.
    pub duration_ns: u32,
}

/// Runs the program `prog` `repeat` times on `frame` (an Ethernet frame) inside the kernel.
pub(crate) fn prog_test_run(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    repeat: u32,
) -> io::Result<TestRun> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    sys_bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(TestRun {
        retval: attr.retval as i32,
        duration_ns: attr.duration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_in_map_grace_period_is_accepted_by_the_kernel() {
        // Needs CAP_BPF (the unit tests run as root in CI and in `cargo xtask test`).
        let g = match GracePeriod::new() {
            Ok(g) => g,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
                eprintln!("skipped: creating BPF maps needs CAP_BPF ({e})");
                return;
            }
            Err(e) => panic!("creating the map-in-map: {e}"),
        };
        // The update replaces the element every time; each returns after a grace period.
        g.wait().expect("first wait");
        g.wait().expect("second wait");
    }

    #[test]
    fn membarrier_global_is_either_available_or_refused_as_nohz_full_refuses_it() {
        match membarrier_global() {
            Ok(()) => {}
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}"),
        }
    }
}
