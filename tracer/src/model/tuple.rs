//! The identity of a connection: its endpoints, owner process and network namespace.

use std::net::IpAddr;

/// Transport protocol of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// Address family, derived from the tuple's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (IPv4-mapped IPv6 addresses are expected to be folded to IPv4 by the decoder).
    V4,
    /// IPv6.
    V6,
}

/// Which side opened the connection, seen from this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// Not known; the decoder maps this to [`Direction::Outgoing`] (Datadog does the same).
    Unknown,
    /// A remote peer connected to a local listener.
    Incoming,
    /// A local socket connected to a peer.
    #[default]
    Outgoing,
}

/// The identity of one kernel connection entry.
///
/// Two records with the same cookie but a different tuple are a cookie collision. The pid is
/// part of the identity because the kernel keys its map by it: one socket used by two
/// processes is two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionTuple {
    /// Local address (pre-NAT, as the socket sees it).
    pub src: IpAddr,
    /// Remote address (pre-NAT, as the socket sees it).
    pub dst: IpAddr,
    /// Local port, host order.
    pub sport: u16,
    /// Remote port, host order.
    pub dport: u16,
    /// User-space process id (tgid) that created the kernel entry.
    pub pid: u32,
    /// Inode number of the socket's network namespace.
    pub netns: u32,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// Longest encoding produced by [`ConnectionTuple::encode`]: 13 fixed bytes and two IPv6 addresses.
pub const TUPLE_BYTES_MAX: usize = 13 + 16 + 16;

impl ConnectionTuple {
    /// The address family, taken from the source address.
    pub fn family(&self) -> Family {
        match self.src {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Writes a stable byte encoding of the tuple into `buf` and returns the used length:
    /// pid (4 B LE), sport, dport (2 B LE each), netns (4 B LE), one byte
    /// `family << 4 | protocol`, then the source and destination address bytes (4 or 16 each).
    /// This is the input of [`crate::model::connection_cookie`].
    pub fn encode(&self, buf: &mut [u8; TUPLE_BYTES_MAX]) -> usize {
        let mut writer = ByteWriter { buf, len: 0 };
        writer.put(&self.pid.to_le_bytes());
        writer.put(&self.sport.to_le_bytes());
        writer.put(&self.dport.to_le_bytes());
        writer.put(&self.netns.to_le_bytes());
        let family = match self.src {
            IpAddr::V4(_) => 0u8,
            IpAddr::V6(_) => 1u8,
        };
        let protocol = match self.protocol {
            Protocol::Tcp => 0u8,
            Protocol::Udp => 1u8,
        };
        writer.put(&[family << 4 | protocol]);
        writer.put_addr(self.src);
        writer.put_addr(self.dst);
        writer.len
    }
}

/// Appends bytes to a fixed buffer; input that does not fit is cut (it cannot happen for a tuple).
struct ByteWriter<'a> {
    buf: &'a mut [u8; TUPLE_BYTES_MAX],
    len: usize,
}

impl ByteWriter<'_> {
    fn put(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = byte;
                self.len += 1;
            }
        }
    }

    fn put_addr(&mut self, addr: IpAddr) {
        match addr {
            IpAddr::V4(v4) => self.put(&v4.octets()),
            IpAddr::V6(v6) => self.put(&v6.octets()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn v4_tuple() -> ConnectionTuple {
        ConnectionTuple {
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            sport: 40000,
            dport: 443,
            pid: 7,
            netns: 4026531840,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn encoding_of_v4_tuple_is_21_bytes_and_v6_is_45() {
        let mut buf = [0u8; TUPLE_BYTES_MAX];
        assert_eq!(v4_tuple().encode(&mut buf), 21);
        let v6 = ConnectionTuple {
            src: IpAddr::V6(Ipv6Addr::LOCALHOST),
            dst: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ..v4_tuple()
        };
        assert_eq!(v6.encode(&mut buf), 45);
        assert_eq!(v6.family(), Family::V6);
    }

    #[test]
    fn encoding_differs_when_any_field_differs() {
        let base = v4_tuple();
        let variants = [
            ConnectionTuple { pid: 8, ..base },
            ConnectionTuple {
                sport: 40001,
                ..base
            },
            ConnectionTuple { dport: 444, ..base },
            ConnectionTuple { netns: 1, ..base },
            ConnectionTuple {
                protocol: Protocol::Udp,
                ..base
            },
            ConnectionTuple {
                src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)),
                ..base
            },
            ConnectionTuple {
                dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 4)),
                ..base
            },
        ];
        let mut a = [0u8; TUPLE_BYTES_MAX];
        let len_a = base.encode(&mut a);
        for variant in variants {
            let mut b = [0u8; TUPLE_BYTES_MAX];
            let len_b = variant.encode(&mut b);
            assert_ne!(a[..len_a], b[..len_b], "{variant:?}");
        }
    }
}
