//! The node's network interfaces (name, index, flags, addresses) via getifaddrs. Read-only; used
//! to pick interfaces to watch, to list the ones that exist in errors, and to know the node's
//! own addresses.
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub up: bool,
    pub loopback: bool,
    pub addrs: Vec<IpAddr>,
}

/// Every interface of this network namespace, sorted by name.
pub fn interfaces() -> std::io::Result<Vec<Interface>> {
    imp::interfaces()
}

/// Every address of every interface (the node's own addresses).
pub fn local_addrs() -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = interfaces()
        .unwrap_or_default()
        .into_iter()
        .flat_map(|i| i.addrs)
        .collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(unix)]
mod imp {
    use super::*;
    use std::ffi::CStr;
    use std::net::{Ipv4Addr, Ipv6Addr};

    pub fn interfaces() -> std::io::Result<Vec<Interface>> {
        let mut map: BTreeMap<String, Interface> = BTreeMap::new();
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        // SAFETY: getifaddrs allocates a list we free below with freeifaddrs.
        if unsafe { libc::getifaddrs(&mut head) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut cur = head;
        while !cur.is_null() {
            // SAFETY: cur is a valid node of the list until freeifaddrs.
            let ifa = unsafe { &*cur };
            cur = ifa.ifa_next;
            if ifa.ifa_name.is_null() {
                continue;
            }
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
                .to_string_lossy()
                .into_owned();
            let flags = ifa.ifa_flags as libc::c_int;
            let e = map.entry(name.clone()).or_insert_with(|| Interface {
                name,
                up: false,
                loopback: false,
                addrs: Vec::new(),
            });
            e.up |= flags & libc::IFF_UP != 0;
            e.loopback |= flags & libc::IFF_LOOPBACK != 0;
            if let Some(a) = addr(ifa.ifa_addr) {
                e.addrs.push(a);
            }
        }
        // SAFETY: head came from getifaddrs.
        unsafe { libc::freeifaddrs(head) };
        Ok(map.into_values().collect())
    }

    fn addr(sa: *const libc::sockaddr) -> Option<IpAddr> {
        if sa.is_null() {
            return None;
        }
        // SAFETY: sa points to a sockaddr whose family tells its real type.
        match unsafe { (*sa).sa_family } as libc::c_int {
            libc::AF_INET => {
                // SAFETY: family is AF_INET.
                let sin = unsafe { &*(sa as *const libc::sockaddr_in) };
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))))
            }
            libc::AF_INET6 => {
                // SAFETY: family is AF_INET6.
                let sin6 = unsafe { &*(sa as *const libc::sockaddr_in6) };
                Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

#[cfg(not(unix))]
mod imp {
    use super::*;
    pub fn interfaces() -> std::io::Result<Vec<Interface>> {
        let _ = BTreeMap::<String, Interface>::new();
        Ok(Vec::new())
    }
}

#[cfg(all(test, unix))]
mod tests {
    #[test]
    fn loopback_is_listed_with_its_address() {
        let all = super::interfaces().unwrap();
        let lo = all
            .iter()
            .find(|i| i.loopback)
            .expect("a loopback interface");
        assert!(lo.addrs.iter().any(|a| a.is_loopback()), "{lo:?}");
    }
}
