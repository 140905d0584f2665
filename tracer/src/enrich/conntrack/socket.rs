//! The netlink sockets of one namespace: one joined to the conntrack NEW and DESTROY groups
//! (read without blocking at every sync), one for dumps (read to the end, with a timeout).
//! Both are created in the namespace (by a thread inside it) and then used from any thread.

use std::{
    io,
    os::fd::{AsRawFd, RawFd},
    time::Duration,
};

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use super::parse::{self, CtEntry, Message};

/// `NFNLGRP_CONNTRACK_NEW`.
const NFNLGRP_CONNTRACK_NEW: u32 = 1;
/// `NFNLGRP_CONNTRACK_DESTROY`.
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;
/// How long a dump may stall before it is abandoned.
const DUMP_TIMEOUT: Duration = Duration::from_secs(2);
/// Datagrams read from the event socket per sync at most (the rest waits for the next one).
const DRAIN_MAX_DATAGRAMS: usize = 65_536;
/// Receive buffer for reads: a netlink datagram (a dump batch) is at most a few pages.
pub(crate) const RECV_BUF_BYTES: usize = 64 << 10;

/// What one entry message means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Update {
    /// New (event or dump).
    New(CtEntry),
    /// Destroyed (event).
    Destroy(CtEntry),
}

/// What a drain or a dump read.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Entries of TCP or UDP with NAT, in order.
    pub updates: Vec<Update>,
    /// Entries without NAT (or of other protocols), not kept.
    pub skipped: u64,
    /// Messages that could not be decoded.
    pub malformed: u64,
}

impl Batch {
    fn take(&mut self, message: Message) {
        let (entry, new) = match message {
            Message::New(e) => (e, true),
            Message::Destroy(e) => (e, false),
            Message::Malformed => {
                self.malformed += 1;
                return;
            }
            _ => return,
        };
        let tcp_udp = matches!(entry.orig.proto, parse::IPPROTO_TCP | parse::IPPROTO_UDP);
        if !entry.is_nat() || !tcp_udp {
            self.skipped += 1;
        } else if new {
            self.updates.push(Update::New(entry));
        } else {
            self.updates.push(Update::Destroy(entry));
        }
    }
}

/// What a drain saw besides entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DrainStatus {
    /// The socket overflowed (ENOBUFS): events were lost.
    pub overflowed: bool,
    /// Another receive error ended the drain.
    pub failed: bool,
}

/// The two sockets of one namespace.
pub(crate) struct NsSockets {
    events: Socket,
    dump: Socket,
    seq: u32,
}

impl NsSockets {
    /// Creates the sockets in the calling thread's namespace and joins the event groups (before
    /// any dump, so that nothing between the dump and the events is missed). `rcvbuf` is asked
    /// for with `SO_RCVBUFFORCE` (root, `CAP_NET_ADMIN`), else `SO_RCVBUF` (capped by
    /// `net.core.rmem_max`).
    pub(crate) fn open(rcvbuf: usize) -> io::Result<Self> {
        let mut events = Socket::new(NETLINK_NETFILTER)?;
        events.bind_auto()?;
        let size = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
        if setsockopt(events.as_raw_fd(), libc::SO_RCVBUFFORCE, &size).is_err() {
            // Not permitted: the unforced size, within the sysctl limit. Failing that, the
            // default buffer still works (overflows are resynced).
            let _ = setsockopt(events.as_raw_fd(), libc::SO_RCVBUF, &size);
        }
        if let Err(e) = attach_nat_filter(events.as_raw_fd()) {
            // Still correct unfiltered: non-NAT events are then skipped here.
            tracing::debug!(error = %e, "conntrack: cannot attach the NAT-only socket filter");
        }
        events.add_membership(NFNLGRP_CONNTRACK_NEW)?;
        events.add_membership(NFNLGRP_CONNTRACK_DESTROY)?;
        let mut dump = Socket::new(NETLINK_NETFILTER)?;
        dump.bind_auto()?;
        let timeout = libc::timeval {
            tv_sec: DUMP_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        setsockopt(dump.as_raw_fd(), libc::SO_RCVTIMEO, &timeout)?;
        Ok(Self {
            events,
            dump,
            seq: 0,
        })
    }

    /// Dumps the whole table into `batch` (`buf`: a reusable buffer of [`RECV_BUF_BYTES`]).
    /// Fails if the kernel refuses (conntrack netlink missing or not permitted) or stalls.
    pub(crate) fn dump(&mut self, buf: &mut [u8], batch: &mut Batch) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let request = parse::dump_request(self.seq);
        // SAFETY: sends from a valid buffer of the given length on a descriptor we own.
        let sent = unsafe {
            libc::send(
                self.dump.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            let n = match recv(self.dump.as_raw_fd(), buf, 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Err(io::Error::other("conntrack dump ended without NLMSG_DONE"));
            }
            for message in parse::messages(buf.get(..n).unwrap_or_default()) {
                match message {
                    Message::Done => return Ok(()),
                    Message::Error(errno) if errno < 0 => {
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                    other => batch.take(other),
                }
            }
        }
    }

    /// Reads every pending event without blocking into `batch`.
    pub(crate) fn drain(&self, buf: &mut [u8], batch: &mut Batch) -> DrainStatus {
        let mut status = DrainStatus::default();
        let fd = self.events.as_raw_fd();
        for _ in 0..DRAIN_MAX_DATAGRAMS {
            match recv(fd, buf, libc::MSG_DONTWAIT) {
                Ok(0) => break,
                Ok(n) => {
                    for message in parse::messages(buf.get(..n).unwrap_or_default()) {
                        batch.take(message);
                    }
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => {}
                    // The queue overflowed; the socket stays usable: keep reading what is there.
                    Some(libc::ENOBUFS) => status.overflowed = true,
                    _ => {
                        status.failed = true;
                        break;
                    }
                },
            }
        }
        status
    }
}

/// The classic BPF socket filter of the event socket: drops, in the kernel, every event whose
/// `CTA_STATUS` has neither `IPS_SRC_NAT` nor `IPS_DST_NAT`, so that a host with much
/// conntrack churn and little NAT queues (and wakes) almost nothing. A message without the
/// attribute, or that the kernel's `SKF_AD_NLATTR` helper cannot search (non-linear), passes.
pub(crate) fn nat_filter() -> [libc::sock_filter; 10] {
    const LD_IMM: u16 = 0x00; // BPF_LD | BPF_W | BPF_IMM
    const LDX_IMM: u16 = 0x01; // BPF_LDX | BPF_W | BPF_IMM
    const LD_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const LD_IND: u16 = 0x40; // BPF_LD | BPF_W | BPF_IND
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
    const TAX: u16 = 0x07; // BPF_MISC | BPF_TAX
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    /// `SKF_AD_OFF + SKF_AD_NLATTR`: A = offset of the attribute of type X found from offset A.
    const NLATTR: u32 = (-0x1000i32 + 12) as u32;
    /// Attributes start after `nlmsghdr` (16) and `nfgenmsg` (4).
    const ATTRS: u32 = 20;
    const CTA_STATUS: u32 = 3;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    [
        op(LD_IMM, 0, 0, ATTRS),
        op(LDX_IMM, 0, 0, CTA_STATUS),
        op(LD_ABS, 0, 0, NLATTR),
        op(JEQ_K, 4, 0, 0), // not found: accept
        op(TAX, 0, 0, 0),
        op(LD_IND, 0, 0, 4), // the status, after the attribute header, network order
        op(AND_K, 0, 0, parse::IPS_SRC_NAT | parse::IPS_DST_NAT),
        op(JEQ_K, 1, 0, 0), // no NAT: drop
        op(RET_K, 0, 0, u32::MAX),
        op(RET_K, 0, 0, 0),
    ]
}

fn attach_nat_filter(fd: RawFd) -> io::Result<()> {
    let mut filter = nat_filter();
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    setsockopt(fd, libc::SO_ATTACH_FILTER, &program)
}

fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: receives into a valid, writable buffer of the given length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

fn setsockopt<T>(fd: RawFd, option: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: passes a valid pointer to a `T` and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{super::parse::tests::dnat_entry, *};

    #[test]
    fn the_kernel_accepts_the_nat_filter() {
        // Creating a netlink socket and attaching a filter need no privilege.
        let socket = Socket::new(NETLINK_NETFILTER).unwrap();
        attach_nat_filter(socket.as_raw_fd()).unwrap();
    }

    /// Runs the filter's instructions as the kernel would on a linear skb holding `msg`.
    fn run_filter(msg: &[u8]) -> u32 {
        let load = |at: u32| -> Option<u32> {
            let at = at as usize;
            Some(u32::from_be_bytes(msg.get(at..at + 4)?.try_into().ok()?))
        };
        // nla_find from offset `a` for type `x` (NLA_TYPE_MASK applied), as SKF_AD_NLATTR.
        let nlattr = |a: u32, x: u32| -> u32 {
            let mut at = a as usize;
            while let Some(h) = msg.get(at..at + 4) {
                let len = u16::from_ne_bytes([h[0], h[1]]) as usize;
                let kind = u16::from_ne_bytes([h[2], h[3]]) & 0x3fff;
                if len < 4 {
                    break;
                }
                if u32::from(kind) == x {
                    return at as u32;
                }
                at += (len + 3) & !3;
            }
            0
        };
        let program = nat_filter();
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        loop {
            let i = program[pc];
            pc += 1;
            match i.code {
                0x00 => a = i.k,
                0x01 => x = i.k,
                0x20 => a = nlattr(a, x),
                0x15 => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                0x07 => x = a,
                0x40 => match load(x + i.k) {
                    Some(v) => a = v,
                    None => return 0,
                },
                0x54 => a &= i.k,
                0x06 => return i.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn the_nat_filter_passes_nat_d_entries_and_drops_the_others() {
        use super::super::parse::tests::emit;
        let e = dnat_entry();
        assert_eq!(run_filter(&emit(true, &e)), u32::MAX);
        assert_eq!(run_filter(&emit(false, &e)), u32::MAX);
        let mut dnat_only = e;
        dnat_only.status = parse::IPS_DST_NAT;
        assert_eq!(run_filter(&emit(true, &dnat_only)), u32::MAX);
        let mut plain = e;
        plain.status = 0b1110; // seen reply, assured, confirmed
        assert_eq!(run_filter(&emit(true, &plain)), 0);
        assert_eq!(run_filter(&emit(false, &plain)), 0);
    }

    #[test]
    fn a_batch_keeps_nat_d_tcp_udp_entries_and_counts_the_rest() {
        let mut batch = Batch::default();
        let e = dnat_entry();
        batch.take(Message::New(e));
        batch.take(Message::Destroy(e));
        let mut plain = e;
        plain.status = 0;
        batch.take(Message::New(plain));
        let mut icmp = e;
        icmp.orig.proto = 1;
        batch.take(Message::New(icmp));
        batch.take(Message::Malformed);
        batch.take(Message::Done);
        assert_eq!(batch.updates, vec![Update::New(e), Update::Destroy(e)]);
        assert_eq!((batch.skipped, batch.malformed), (2, 1));
    }
}
