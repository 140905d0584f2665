//! Peers of unconnected UDP sockets: read from a `sockaddr_in`/`sockaddr_in6` in kernel memory
//! (fentry/kprobe hooks on `udp_sendmsg`/`udp_recvmsg`) or handed over by the tracepoint
//! backend's cgroup `sock_addr` programs, and turned into the connection key.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use tracer_common::{
    conn::{AF_INET, AF_INET6, ConnKey},
    offsets::SockOffsets,
};

use super::{
    layout::read_kernel,
    sock::{is_v4_mapped, put_v4, unmap},
};

/// The remote end of an unconnected UDP datagram.
#[derive(Clone, Copy)]
pub struct Peer {
    pub family: u16,
    pub addr: [u8; 16],
    /// Host byte order.
    pub port: u16,
}

impl Peer {
    /// An IPv4 peer: its address bytes (network order) and port (host order).
    #[inline(always)]
    pub fn v4(v4: [u8; 4], port: u16) -> Self {
        let mut addr = [0u8; 16];
        put_v4(&mut addr, v4);
        Peer {
            family: AF_INET,
            addr,
            port,
        }
    }

    /// An IPv6 peer; an IPv4-mapped address is an IPv4 peer (an IPv6 socket talking IPv4).
    #[inline(always)]
    pub fn v6(addr: [u8; 16], port: u16) -> Self {
        if is_v4_mapped(&addr) {
            return Peer {
                family: AF_INET,
                addr: unmap(addr),
                port,
            };
        }
        Peer {
            family: AF_INET6,
            addr,
            port,
        }
    }
}

#[inline(always)]
fn read<T>(address: u64) -> Result<T, i32> {
    // SAFETY: the helper validates the address and fails instead of faulting.
    unsafe { bpf_probe_read_kernel(address as *const T) }
}

/// Parses the `sockaddr` in kernel memory at `address` (`sockaddr_in`: family, port at 2, address at 4;
/// `sockaddr_in6`: family, port at 2, address at 8). `None` for NULL or other families.
#[inline(always)]
pub fn read_sockaddr(address: u64) -> Option<Peer> {
    if address == 0 {
        return None;
    }
    let family: u16 = read(address).ok()?;
    let port: u16 = u16::from_be(read(address + 2).ok()?);
    if family == AF_INET {
        let v4: [u8; 4] = read(address + 4).ok()?;
        Some(Peer::v4(v4, port))
    } else if family == AF_INET6 {
        let v6: [u8; 16] = read(address + 8).ok()?;
        Some(Peer::v6(v6, port))
    } else {
        None
    }
}

/// Whether the UDP socket `sk` is connected (has a remote port), so its flow is the socket.
#[inline(always)]
pub fn is_connected(sk: u64, offsets: &SockOffsets) -> bool {
    read_kernel::<u16>(sk, offsets.skc_dport).is_ok_and(|port| port != 0)
}

/// The key of a UDP datagram on `sk`: the socket itself when it is connected, else the socket,
/// its generation and `peer`. `None` for an unconnected socket whose peer is unknown (the caller
/// counts it).
#[inline(always)]
pub fn udp_key(sk: u64, peer: Option<Peer>, offsets: &SockOffsets) -> Option<ConnKey> {
    if is_connected(sk, offsets) {
        return Some(ConnKey {
            sk,
            ..ConnKey::default()
        });
    }
    let peer = peer?;
    Some(ConnKey {
        sk,
        peer_addr: peer.addr,
        peer_port: peer.port,
        peer_family: peer.family,
        socket_gen: super::udp_peers::socket_gen(sk),
    })
}
