//! Network interfaces of the calling thread's network namespace (names, indices, up/loopback
//! flags) and the pure rule that picks which ones the TC programs attach to. Attaching itself is
//! done by the backend.
use std::ffi::CStr;
use std::io;

/// One interface as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceInfo {
    /// Interface name.
    pub name: String,
    /// Interface index (changes when an interface is re-created with the same name).
    pub index: u32,
    /// IFF_UP is set.
    pub up: bool,
    /// IFF_LOOPBACK is set.
    pub loopback: bool,
}

/// Lists the interfaces of the calling thread's network namespace.
pub fn list() -> io::Result<Vec<IfaceInfo>> {
    // SAFETY: if_nameindex returns a heap array terminated by a zero entry, or NULL.
    let head = unsafe { libc::if_nameindex() };
    if head.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut names = Vec::new();
    let mut p = head;
    // SAFETY: walking the array up to its terminator; names are NUL-terminated C strings.
    unsafe {
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            let name = CStr::from_ptr((*p).if_name).to_string_lossy().into_owned();
            names.push((name, (*p).if_index));
            p = p.add(1);
        }
        libc::if_freenameindex(head);
    }
    // SAFETY: plain socket(2) call; the fd is closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::with_capacity(names.len());
    for (name, index) in names {
        let flags = if_flags(sock, &name).unwrap_or(0);
        out.push(IfaceInfo {
            name,
            index,
            up: flags & libc::IFF_UP != 0,
            loopback: flags & libc::IFF_LOOPBACK != 0,
        });
    }
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(sock) };
    Ok(out)
}

fn if_flags(sock: libc::c_int, name: &str) -> io::Result<libc::c_int> {
    // SAFETY: ifreq is plain old data; zero is a valid bit pattern.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills ifr_ifru.ifru_flags of the ifreq we own.
    let rc = unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote the flags member.
    Ok(libc::c_int::from(unsafe { req.ifr_ifru.ifru_flags }))
}

/// Picks the interfaces to observe: the named ones when `wanted` is given (loopback included
/// if named), otherwise every interface that is up except loopback (unless `include_lo`).
pub fn select(all: &[IfaceInfo], wanted: Option<&[String]>, include_lo: bool) -> Vec<IfaceInfo> {
    all.iter()
        .filter(|i| match wanted {
            Some(names) => names.contains(&i.name),
            None => i.up && (!i.loopback || include_lo),
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(name: &str, index: u32, up: bool, loopback: bool) -> IfaceInfo {
        IfaceInfo {
            name: name.into(),
            index,
            up,
            loopback,
        }
    }

    fn names(v: Vec<IfaceInfo>) -> Vec<String> {
        v.into_iter().map(|i| i.name).collect()
    }

    #[test]
    fn default_is_every_up_interface_but_loopback() {
        let all = [
            i("lo", 1, true, true),
            i("eth0", 2, true, false),
            i("eth1", 3, false, false),
            i("veth9", 4, true, false),
        ];
        assert_eq!(names(select(&all, None, false)), ["eth0", "veth9"]);
        assert_eq!(names(select(&all, None, true)), ["lo", "eth0", "veth9"]);
    }

    #[test]
    fn named_interfaces_are_taken_even_loopback_or_down() {
        let all = [
            i("lo", 1, true, true),
            i("eth0", 2, true, false),
            i("eth1", 3, false, false),
        ];
        let want = vec!["lo".to_owned(), "eth1".to_owned(), "nope".to_owned()];
        assert_eq!(names(select(&all, Some(&want), false)), ["lo", "eth1"]);
    }

    #[test]
    fn listing_this_namespace_finds_loopback() {
        let all = list().unwrap();
        assert!(all.iter().any(|i| i.loopback), "{all:?}");
    }
}
