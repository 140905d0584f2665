//! Exclusion filters (Datadog's `source_excludes` / `dest_excludes`) and the local-DNS rule,
//! applied to open and closed connections alike.

use std::net::IpAddr;

use crate::{
    Error, Result,
    model::{ConnectionTuple, Protocol},
};

/// An address block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `x::y/n`, or a bare address (a single host: /32 or /128; Datadog
    /// widens a bare IPv6 address to /64, which surprises: we don't).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || Error::InvalidConfig(format!("bad address or CIDR {text:?}"));
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix.parse::<u8>().map_err(|_| bad())?)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { network, prefix })
    }

    /// Whether `address` is inside the block (IPv4 and IPv6 blocks never match each other).
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address) {
            (IpAddr::V4(net), IpAddr::V4(addr)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(addr) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(addr)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(addr) & mask
            }
            _ => false,
        }
    }
}

/// Ports a rule covers, optionally for one protocol only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRule {
    /// `None`: TCP and UDP.
    pub protocol: Option<Protocol>,
    /// Inclusive range.
    pub low: u16,
    /// Inclusive range.
    pub high: u16,
}

impl PortRule {
    /// Parses `*`, `80`, `1000-2000`, optionally prefixed by `tcp ` or `udp `.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || Error::InvalidConfig(format!("bad port rule {text:?}"));
        let text = text.trim();
        let (protocol, ports) = match text.split_once(char::is_whitespace) {
            Some(("tcp", rest)) => (Some(Protocol::Tcp), rest.trim()),
            Some(("udp", rest)) => (Some(Protocol::Udp), rest.trim()),
            Some(_) => return Err(bad()),
            None => (None, text),
        };
        let (low, high) = match ports {
            "*" => (0, u16::MAX),
            range => match range.split_once('-') {
                Some((low, high)) => (
                    low.trim().parse().map_err(|_| bad())?,
                    high.trim().parse().map_err(|_| bad())?,
                ),
                None => {
                    let port = range.parse().map_err(|_| bad())?;
                    (port, port)
                }
            },
        };
        if low > high {
            return Err(bad());
        }
        Ok(Self {
            protocol,
            low,
            high,
        })
    }

    fn matches(&self, protocol: Protocol, port: u16) -> bool {
        self.protocol.is_none_or(|p| p == protocol) && (self.low..=self.high).contains(&port)
    }
}

/// One exclusion: connections whose (address, port) on the rule's side match are dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exclusion {
    pub cidr: Cidr,
    pub ports: Vec<PortRule>,
}

impl Exclusion {
    /// `Exclusion::parse("10.0.0.0/8", &["tcp 80", "1000-2000"])`. `"*"` as the address means
    /// every address; `*` with `*` (everything) is refused, as it would trace nothing.
    pub fn parse(address: &str, ports: &[&str]) -> Result<Self> {
        let cidr = if address.trim() == "*" {
            Cidr {
                network: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                prefix: 0,
            }
        } else {
            Cidr::parse(address)?
        };
        let ports = ports
            .iter()
            .map(|p| PortRule::parse(p))
            .collect::<Result<Vec<_>>>()?;
        if address.trim() == "*"
            && ports
                .iter()
                .any(|p| p.low == 0 && p.high == u16::MAX && p.protocol.is_none())
        {
            return Err(Error::InvalidConfig(
                "exclusion \"* : *\" would exclude everything".to_owned(),
            ));
        }
        Ok(Self { cidr, ports })
    }

    fn matches(&self, protocol: Protocol, address: IpAddr, port: u16) -> bool {
        let address_ok = self.cidr.prefix == 0 || self.cidr.contains(address);
        address_ok && self.ports.iter().any(|p| p.matches(protocol, port))
    }
}

/// All connection filters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    /// Drop connections whose local (address, port) matches.
    pub source_excludes: Vec<Exclusion>,
    /// Drop connections whose remote (address, port) matches.
    pub dest_excludes: Vec<Exclusion>,
    /// Keep DNS (port 53) connections to a loopback address (default false, as Datadog: local
    /// resolvers would otherwise double every DNS flow).
    pub collect_local_dns: bool,
}

impl Filters {
    /// Whether the connection is dropped.
    pub fn excludes(&self, tuple: &ConnectionTuple) -> bool {
        if !self.collect_local_dns
            && (tuple.dport == 53 || tuple.sport == 53)
            && tuple.dst.is_loopback()
        {
            return true;
        }
        self.source_excludes
            .iter()
            .any(|rule| rule.matches(tuple.protocol, tuple.src, tuple.sport))
            || self
                .dest_excludes
                .iter()
                .any(|rule| rule.matches(tuple.protocol, tuple.dst, tuple.dport))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn tuple(src: &str, sport: u16, dst: &str, dport: u16, protocol: Protocol) -> ConnectionTuple {
        ConnectionTuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport,
            dport,
            pid: 1,
            netns: 1,
            protocol,
        }
    }

    #[test]
    fn cidr_contains_addresses_of_its_block_only() {
        let block = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(block.contains(IpAddr::V4(Ipv4Addr::new(10, 1, 200, 3))));
        assert!(!block.contains(IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1))));
        assert!(!block.contains("::1".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(!Cidr::parse("::1").unwrap().contains("::2".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }

    #[test]
    fn bad_cidrs_and_port_rules_are_config_errors() {
        for bad in ["10.0.0.0/33", "x", "::/129", "1.2.3.4/"] {
            assert!(
                matches!(Cidr::parse(bad), Err(Error::InvalidConfig(_))),
                "{bad}"
            );
        }
        for bad in ["70000", "20-10", "sctp 80", "a-b", ""] {
            assert!(
                matches!(PortRule::parse(bad), Err(Error::InvalidConfig(_))),
                "{bad}"
            );
        }
        assert!(Exclusion::parse("*", &["*"]).is_err());
    }

    #[test]
    fn dest_exclusion_matches_address_port_and_protocol() {
        let filters = Filters {
            dest_excludes: vec![Exclusion::parse("10.0.0.0/8", &["tcp 80", "9000-9010"]).unwrap()],
            ..Filters::default()
        };
        assert!(filters.excludes(&tuple("192.168.0.1", 40000, "10.9.9.9", 80, Protocol::Tcp)));
        assert!(!filters.excludes(&tuple("192.168.0.1", 40000, "10.9.9.9", 80, Protocol::Udp)));
        assert!(filters.excludes(&tuple(
            "192.168.0.1",
            40000,
            "10.9.9.9",
            9005,
            Protocol::Udp
        )));
        assert!(!filters.excludes(&tuple("192.168.0.1", 40000, "11.0.0.1", 80, Protocol::Tcp)));
    }

    #[test]
    fn source_exclusion_looks_at_the_local_side() {
        let filters = Filters {
            source_excludes: vec![Exclusion::parse("*", &["22"]).unwrap()],
            ..Filters::default()
        };
        assert!(filters.excludes(&tuple("10.0.0.1", 22, "10.0.0.2", 50000, Protocol::Tcp)));
        assert!(!filters.excludes(&tuple("10.0.0.1", 50000, "10.0.0.2", 22, Protocol::Tcp)));
    }

    #[test]
    fn local_dns_is_dropped_unless_collected() {
        let dns = tuple("127.0.0.1", 40000, "127.0.0.53", 53, Protocol::Udp);
        assert!(Filters::default().excludes(&dns));
        let keep = Filters {
            collect_local_dns: true,
            ..Filters::default()
        };
        assert!(!keep.excludes(&dns));
        assert!(!Filters::default().excludes(&tuple(
            "10.0.0.1",
            40000,
            "8.8.8.8",
            53,
            Protocol::Udp
        )));
    }
}
