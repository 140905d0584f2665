//! Endpoint formatting: `a.b.c.d:port`, `[v6]:port`.

use std::net::{IpAddr, SocketAddr};

/// `127.0.0.1:8080` or `[::1]:8080` (IPv6 in brackets so the port is unambiguous).
pub fn endpoint(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn ipv4_is_address_colon_port() {
        assert_eq!(
            endpoint(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            "127.0.0.1:8080"
        );
        assert_eq!(endpoint(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0), "0.0.0.0:0");
    }

    #[test]
    fn ipv6_is_bracketed() {
        assert_eq!(endpoint(IpAddr::V6(Ipv6Addr::LOCALHOST), 443), "[::1]:443");
        let long = Ipv6Addr::new(
            0x2001, 0xdb8, 0x1234, 0x5678, 0x9abc, 0xdef0, 0x1111, 0x2222,
        );
        assert_eq!(
            endpoint(IpAddr::V6(long), 65535),
            "[2001:db8:1234:5678:9abc:def0:1111:2222]:65535"
        );
        let mapped = Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped();
        assert_eq!(endpoint(IpAddr::V6(mapped), 53), "[::ffff:10.0.0.1]:53");
    }
}
