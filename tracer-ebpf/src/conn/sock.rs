//! Reading a connection's tuple and TCP counters out of a `struct sock` / `struct tcp_sock`.

use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use tracer_common::{
    conn::{AF_INET, AF_INET6, BeforeStart, ConnStats, ConnTuple},
    linux::{TCP_CLOSE_WAIT, TCP_CLOSING, TCP_LAST_ACK},
    offsets::SockOffsets,
};

use super::layout::read_kernel;

/// The tuple of socket `sk` as it is now. Fails on unknown families (the caller counts it).
#[inline(always)]
pub fn sock_tuple(sk: u64, offsets: &SockOffsets, protocol: u8) -> Result<ConnTuple, i32> {
    let family: u16 = read_kernel(sk, offsets.skc_family)?;
    let mut tuple = ConnTuple {
        sport: read_kernel(sk, offsets.skc_num)?,
        dport: u16::from_be(read_kernel(sk, offsets.skc_dport)?),
        family,
        protocol,
        netns: netns_inode(sk, offsets).unwrap_or(0),
        ..ConnTuple::default()
    };
    if family == AF_INET {
        let saddr: [u8; 4] = read_kernel(sk, offsets.skc_rcv_saddr)?;
        let daddr: [u8; 4] = read_kernel(sk, offsets.skc_daddr)?;
        put_v4(&mut tuple.saddr, saddr);
        put_v4(&mut tuple.daddr, daddr);
    } else if family == AF_INET6 {
        tuple.saddr = read_kernel(sk, offsets.skc_v6_rcv_saddr)?;
        tuple.daddr = read_kernel(sk, offsets.skc_v6_daddr)?;
        fold_v4_mapped(&mut tuple);
    } else {
        return Err(-1);
    }
    Ok(tuple)
}

/// An IPv6 socket talking to an IPv4-mapped address is an IPv4 connection (as Datadog reports).
#[inline(always)]
fn fold_v4_mapped(tuple: &mut ConnTuple) {
    if is_v4_mapped(&tuple.daddr) && (is_v4_mapped(&tuple.saddr) || tuple.saddr == [0; 16]) {
        tuple.family = AF_INET;
        tuple.saddr = unmap(tuple.saddr);
        tuple.daddr = unmap(tuple.daddr);
    }
}

#[inline(always)]
pub fn is_v4_mapped(address: &[u8; 16]) -> bool {
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, ..] = *address;
    (a0 | a1 | a2 | a3 | a4 | a5 | a6 | a7 | a8 | a9) == 0 && a10 == 0xff && a11 == 0xff
}

#[inline(always)]
pub fn unmap(address: [u8; 16]) -> [u8; 16] {
    let [.., a, b, c, d] = address;
    let mut out = [0u8; 16];
    put_v4(&mut out, [a, b, c, d]);
    out
}

/// A socket pointer read from a cgroup program's context (`bpf_sock_ops.sk`,
/// `bpf_sock_addr.sk`) as a plain number: the verifier types the loaded value as a socket
/// pointer and refuses arithmetic on it, but the shared table reads fields at `sk + offset`
/// (offsets from BTF) and keys entries by the address. Negating it twice gives the same number
/// typed as a scalar (allowed to privileged loaders, which this tracer requires anyway); as asm,
/// the compiler cannot fold it away.
#[inline(always)]
pub fn as_scalar(mut sk: u64) -> u64 {
    // SAFETY: register-only arithmetic.
    unsafe {
        core::arch::asm!(
            "{v} = -{v}",
            "{v} = -{v}",
            v = inout(reg) sk,
            options(pure, nomem, nostack),
        );
    }
    sk
}

/// Writes an IPv4 address into the first four bytes of a 16-byte address slot.
#[inline(always)]
pub fn put_v4(dst: &mut [u8; 16], src: [u8; 4]) {
    let [d0, d1, d2, d3, ..] = dst;
    let [s0, s1, s2, s3] = src;
    (*d0, *d1, *d2, *d3) = (s0, s1, s2, s3);
}

/// Inode of the socket's network namespace (`sk->__sk_common.skc_net.net->ns.inum`).
#[inline(always)]
fn netns_inode(sk: u64, offsets: &SockOffsets) -> Result<u32, i32> {
    let net: u64 = read_kernel(sk, offsets.skc_net)?;
    read_kernel(net, offsets.net_ns_inum)
}

/// The socket's pending error (`sk_err`), e.g. ECONNREFUSED after a refused connect.
#[inline(always)]
pub fn sock_error(sk: u64, offsets: &SockOffsets) -> Result<i32, i32> {
    read_kernel(sk, offsets.sk_err)
}

/// Copies the kernel's own TCP counters into `stats`: these are exact at the moment of the read,
/// so there is nothing to add up and nothing to lose.
#[inline(always)]
pub fn refresh_tcp(sk: u64, offsets: &SockOffsets, stats: &mut ConnStats) -> Result<(), i32> {
    let segs_out: u32 = read_kernel(sk, offsets.tcp_segs_out)?;
    let segs_in: u32 = read_kernel(sk, offsets.tcp_segs_in)?;
    let retrans: u32 = read_kernel(sk, offsets.tcp_total_retrans)?;
    let srtt: u32 = read_kernel(sk, offsets.tcp_srtt_us)?;
    let mdev: u32 = read_kernel(sk, offsets.tcp_mdev_us)?;
    // Counted from the start: a connection found at start (`before_start` non-zero) reports
    // what the kernel counted since (`segs_*` and `total_retrans` only grow).
    let before = &stats.before_start;
    stats.sent_packets = u64::from(segs_out.wrapping_sub(before.sent_packets));
    stats.recv_packets = u64::from(segs_in.wrapping_sub(before.recv_packets));
    stats.retransmits = retrans.wrapping_sub(before.retransmits);
    stats.rtt_us = srtt >> 3;
    stats.rtt_var_us = mdev >> 2;
    Ok(())
}

/// The kernel's lifetime totals of TCP socket `sk` so far, for a connection that existed before
/// the tracer started, in payload bytes like every other byte counter.
///
/// Sent: `bytes_sent - bytes_retrans`, the payload put on the wire once (bytes still queued
/// unsent are in neither this nor the counters from the start). Not `bytes_acked`, which
/// follows sequence numbers: it counts the SYN of the side that connected (not of the accepted
/// side, created already past it) and an acknowledged FIN, so it would need the direction, which
/// the walk only guesses. Received: `bytes_received`, which counts the peer's FIN as one byte;
/// it has arrived in CLOSE_WAIT, LAST_ACK and CLOSING.
#[inline(always)]
pub fn before_start(sk: u64, offsets: &SockOffsets, out: &mut BeforeStart) -> Result<(), i32> {
    let state = i32::from(read_kernel::<u8>(sk, offsets.skc_state)?);
    let sent: u64 = read_kernel(sk, offsets.tcp_bytes_sent)?;
    let retrans: u64 = read_kernel(sk, offsets.tcp_bytes_retrans)?;
    let received: u64 = read_kernel(sk, offsets.tcp_bytes_received)?;
    let peer_fin = u64::from(matches!(state, TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING));
    out.sent_bytes = sent.saturating_sub(retrans);
    out.recv_bytes = received.saturating_sub(peer_fin);
    out.sent_packets = read_kernel(sk, offsets.tcp_segs_out)?;
    out.recv_packets = read_kernel(sk, offsets.tcp_segs_in)?;
    out.retransmits = read_kernel(sk, offsets.tcp_total_retrans)?;
    Ok(())
}

/// Whether TCP socket `sk` holds received bytes its application has not read yet and still
/// can: the socket is not orphaned and the bytes are still queued. An application that closes
/// a socket with unread data makes the kernel purge the receive queue, reset the connection and
/// set CLOSE before it orphans the socket (`__tcp_close`): at that CLOSE the sequence numbers
/// still say "unread" and the socket is still owned, but nothing is left to read, and the
/// release hook already ran; waiting would leave the end pending forever.
#[inline(always)]
pub fn has_unread_bytes(sk: u64, offsets: &SockOffsets) -> bool {
    let (Ok(rcv_nxt), Ok(copied)) = (
        read_kernel::<u32>(sk, offsets.tcp_rcv_nxt),
        read_kernel::<u32>(sk, offsets.tcp_copied_seq),
    ) else {
        return false;
    };
    // The peer's FIN takes one sequence number too, consumed when the application reads EOF.
    let unread = rcv_nxt.wrapping_sub(copied);
    let owned = read_kernel::<u64>(sk, offsets.sk_socket).is_ok_and(|socket| socket != 0);
    // A received FIN is queued too, so EOF not yet read keeps the queue non-empty.
    let queued = read_kernel::<u32>(sk, offsets.sk_receive_queue_qlen).is_ok_and(|n| n > 0);
    owned && unread > 0 && queued
}

/// Whether the application still holds socket `sk`: its `struct socket` still points back at
/// it. `inet_release` clears `socket->sk` before it closes the sock, so a close the application
/// itself makes (in its `close()`, after the release hook ran) finds it cleared, and a close the
/// network makes (a reset, in softirq) finds it set.
#[inline(always)]
pub fn held_by_application(sk: u64, offsets: &SockOffsets, socket_sk: u16) -> bool {
    let Ok(socket) = read_kernel::<u64>(sk, offsets.sk_socket) else {
        return false;
    };
    socket != 0 && read_kernel::<u64>(socket, socket_sk).is_ok_and(|back| back == sk)
}

/// The cgroup v2 id of the current task (its cgroup directory's inode). Only tracing programs
/// (tracepoints, raw tracepoints, kprobes, fentry) call this: the helper exists for them from
/// 4.18, and they run in the task that owns the socket where this is called.
#[inline(always)]
pub fn current_cgroup_id() -> u64 {
    // SAFETY: no preconditions.
    unsafe { aya_ebpf::helpers::bpf_get_current_cgroup_id() }
}

/// The current process's name: its main thread's `comm` (`current->group_leader->comm`, what
/// `/proc/<pid>/comm` shows), or the current thread's own if that read fails. Only from tracing
/// programs (process context; `bpf_get_current_task`).
#[inline(always)]
pub fn current_comm(offsets: &SockOffsets) -> [u8; 16] {
    // SAFETY: no preconditions; the task is only dereferenced through probe reads.
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() };
    if let Some(comm) = process_name(task, offsets) {
        return comm;
    }
    aya_ebpf::helpers::bpf_get_current_comm().unwrap_or([0; 16])
}

/// The name of the process `task` (a `task_struct` address) is a thread of: its main thread's
/// `comm`, or `None` when a read fails.
#[inline(always)]
pub fn process_name(task: u64, offsets: &SockOffsets) -> Option<[u8; 16]> {
    let leader: u64 = read_kernel(task, offsets.task_group_leader).ok()?;
    if leader == 0 {
        return None;
    }
    // Up to the first NUL only, into a zeroed buffer: kernels before 6.x set `comm` on exec
    // with strlcpy, which leaves the old name's tail after the NUL ("dig\0rship::a_sh" for a dig
    // forked from a thread of that name), and two names that differ after their NUL must not be
    // two names. (bpf_get_current_comm pads with NULs itself.)
    let mut comm = [0u8; 16];
    let src = leader.wrapping_add(u64::from(offsets.task_comm)) as *const u8;
    // SAFETY: bpf_probe_read_kernel_str validates the address; a bad one returns an error.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(src, &mut comm) }.ok()?;
    Some(comm)
}

/// Thread-group id of the current task (the process, not the thread).
#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}
