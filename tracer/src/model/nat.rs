//! NAT translation of a connection, from conntrack.

use std::net::IpAddr;

/// The conntrack *reply* tuple of a NATed connection. For an outgoing connection to a
/// DNATed service, `repl_src_ip:repl_sport` is the real server and `repl_dst_ip:repl_dport`
/// is this host's address as the server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpTranslation {
    /// Reply source address (the real remote end).
    pub repl_src_ip: IpAddr,
    /// Reply destination address (the local end after SNAT).
    pub repl_dst_ip: IpAddr,
    /// Reply source port.
    pub repl_sport: u16,
    /// Reply destination port.
    pub repl_dport: u16,
}
