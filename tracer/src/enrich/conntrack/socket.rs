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
