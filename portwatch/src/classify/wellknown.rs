//! The checked-in table of well-known ports used for direction scoring: ports where the
//! server side is (nearly) always the one bound to that number, and the few well-known
//! client-side ports. Data only; its size is pinned by a test.

/// Which end a well-known port belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Server,
    Client,
}

/// Sorted by port. Sources: IANA service names registry and the services commonly found in
/// vendor port tables (databases, brokers, cluster coordination, Kubernetes).
const TABLE: &[(u16, Kind)] = &[
    (20, Kind::Server),    // ftp-data
    (21, Kind::Server),    // ftp
    (22, Kind::Server),    // ssh
    (23, Kind::Server),    // telnet
    (25, Kind::Server),    // smtp
    (53, Kind::Server),    // dns
    (67, Kind::Server),    // dhcp server
    (68, Kind::Client),    // dhcp client
    (69, Kind::Server),    // tftp
    (80, Kind::Server),    // http
    (88, Kind::Server),    // kerberos
    (110, Kind::Server),   // pop3
    (111, Kind::Server),   // rpcbind
    (123, Kind::Server),   // ntp
    (135, Kind::Server),   // msrpc
    (137, Kind::Server),   // netbios-ns
    (138, Kind::Server),   // netbios-dgm
    (139, Kind::Server),   // netbios-ssn
    (143, Kind::Server),   // imap
    (161, Kind::Server),   // snmp
    (162, Kind::Server),   // snmp trap
    (179, Kind::Server),   // bgp
    (389, Kind::Server),   // ldap
    (443, Kind::Server),   // https
    (445, Kind::Server),   // smb
    (464, Kind::Server),   // kpasswd
    (465, Kind::Server),   // smtps
    (514, Kind::Server),   // syslog
    (546, Kind::Client),   // dhcpv6 client
    (547, Kind::Server),   // dhcpv6 server
    (587, Kind::Server),   // submission
    (623, Kind::Server),   // ipmi rmcp
    (636, Kind::Server),   // ldaps
    (873, Kind::Server),   // rsync
    (993, Kind::Server),   // imaps
    (995, Kind::Server),   // pop3s
    (1433, Kind::Server),  // mssql
    (1521, Kind::Server),  // oracle
    (1812, Kind::Server),  // radius
    (2049, Kind::Server),  // nfs
    (2181, Kind::Server),  // zookeeper
    (2379, Kind::Server),  // etcd client
    (2380, Kind::Server),  // etcd peer
    (3268, Kind::Server),  // global catalog
    (3306, Kind::Server),  // mysql
    (3389, Kind::Server),  // rdp
    (4369, Kind::Server),  // epmd
    (5432, Kind::Server),  // postgresql
    (5671, Kind::Server),  // amqps
    (5672, Kind::Server),  // amqp
    (5985, Kind::Server),  // winrm http
    (5986, Kind::Server),  // winrm https
    (6379, Kind::Server),  // redis
    (6443, Kind::Server),  // kubernetes api
    (8080, Kind::Server),  // http-alt
    (8443, Kind::Server),  // https-alt
    (9092, Kind::Server),  // kafka
    (9200, Kind::Server),  // elasticsearch
    (10250, Kind::Server), // kubelet
    (11211, Kind::Server), // memcached
    (27017, Kind::Server), // mongodb
];

/// The kind of a well-known port, if it is one.
pub fn lookup(port: u16) -> Option<Kind> {
    TABLE
        .binary_search_by_key(&port, |&(p, _)| p)
        .ok()
        .map(|i| TABLE[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_its_size_is_pinned() {
        assert!(TABLE.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(TABLE.len(), 61);
        assert_eq!(TABLE.iter().filter(|(_, k)| *k == Kind::Client).count(), 2);
        assert_eq!(lookup(443), Some(Kind::Server));
        assert_eq!(lookup(68), Some(Kind::Client));
        assert_eq!(lookup(444), None);
    }
}
