//! Peers of unconnected UDP sockets: read from a `sockaddr_in`/`sockaddr_in6` (kernel memory for
//! fentry/kprobe hooks on `udp_sendmsg`/`udp_recvmsg`, user memory for syscall tracepoints), and
//! turned into the connection key.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_user};
use tracer_common::{
    conn::{AF_INET, AF_INET6, ConnKey},
    offsets::SockOffsets,
};

use super::{layout::read_kernel, sock::put_v4};

/// The remote end of an unconnected UDP datagram.
#[derive(Clone, Copy)]
pub struct Peer {
    pub family: u16,
    pub addr: [u8; 16],
    /// Host byte order.
    pub port: u16,
}

/// Where a `sockaddr` lives.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    Kernel,
    User,
}

#[inline(always)]
fn read<T>(memory: Memory, address: u64) -> Result<T, i32> {
    // SAFETY: both helpers validate the address and fail instead of faulting.
    unsafe {
        match memory {
            Memory::Kernel => bpf_probe_read_kernel(address as *const T),
            Memory::User => bpf_probe_read_user(address as *const T),
        }
    }
}

/// Parses the `sockaddr` at `address` (`sockaddr_in`: family, port at 2, address at 4;
/// `sockaddr_in6`: family, port at 2, address at 8). `None` for NULL or other families.
#[inline(always)]
pub fn read_sockaddr(memory: Memory, address: u64) -> Option<Peer> {
    if address == 0 {
        return None;
    }
    let family: u16 = read(memory, address).ok()?;
    let port: u16 = u16::from_be(read(memory, address + 2).ok()?);
    let mut addr = [0u8; 16];
    if family == AF_INET {
        let v4: [u8; 4] = read(memory, address + 4).ok()?;
        put_v4(&mut addr, v4);
    } else if family == AF_INET6 {
        addr = read(memory, address + 8).ok()?;
        // An IPv4-mapped peer of an IPv6 socket is an IPv4 peer.
        let [
            a0,
            a1,
            a2,
            a3,
            a4,
            a5,
            a6,
            a7,
            a8,
            a9,
            a10,
            a11,
            b0,
            b1,
            b2,
            b3,
        ] = addr;
        if (a0 | a1 | a2 | a3 | a4 | a5 | a6 | a7 | a8 | a9) == 0 && a10 == 0xff && a11 == 0xff {
            let mut v4 = [0u8; 16];
            put_v4(&mut v4, [b0, b1, b2, b3]);
            return Some(Peer {
                family: AF_INET,
                addr: v4,
                port,
            });
        }
    } else {
        return None;
    }
    Some(Peer { family, addr, port })
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
