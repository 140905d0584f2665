//! Builders shared by the state tests.

use std::net::{IpAddr, Ipv4Addr};

use crate::model::{ConnectionStats, ConnectionTuple, Direction, Protocol};

pub(crate) fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

pub(crate) fn conn_between(
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    protocol: Protocol,
) -> ConnectionStats {
    let tuple = ConnectionTuple {
        src,
        dst,
        sport,
        dport,
        pid: 1,
        netns: 1,
        protocol,
    };
    ConnectionStats::new(tuple, Direction::Outgoing, u64::from(sport))
}

/// A TCP connection 10.0.0.1:sport → 10.0.0.2:443 with the given cookie.
pub(crate) fn conn(cookie: u64, sport: u16) -> ConnectionStats {
    let mut c = conn_between(ip(10, 0, 0, 1), sport, ip(10, 0, 0, 2), 443, Protocol::Tcp);
    c.cookie = cookie;
    c
}
