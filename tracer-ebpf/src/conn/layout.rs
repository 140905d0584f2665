//! The running kernel's layout (struct offsets from BTF, tracepoint offsets from tracefs),
//! patched in by userspace at load time, and typed reads through it.

use aya_ebpf::{Global, helpers::bpf_probe_read_kernel};
use tracer_common::offsets::KernelLayout;

#[unsafe(no_mangle)]
static NT_LAYOUT: Global<KernelLayout> = Global::new(KernelLayout {
    sock: tracer_common::offsets::SockOffsets {
        skc_daddr: 0,
        skc_rcv_saddr: 0,
        skc_dport: 0,
        skc_num: 0,
        skc_family: 0,
        skc_net: 0,
        skc_v6_daddr: 0,
        skc_v6_rcv_saddr: 0,
        sk_err: 0,
        sk_protocol: 0,
        net_ns_inum: 0,
        tcp_srtt_us: 0,
        tcp_mdev_us: 0,
        tcp_segs_in: 0,
        tcp_segs_out: 0,
        tcp_total_retrans: 0,
    },
    inet_sock_set_state: tracer_common::tracepoint::InetSockSetStateFormat {
        skaddr: 0,
        oldstate: 0,
        newstate: 0,
        sport: 0,
        dport: 0,
        family: 0,
        protocol: 0,
        protocol_size: 0,
        saddr: 0,
        daddr: 0,
        saddr_v6: 0,
        daddr_v6: 0,
    },
    sock_length: tracer_common::offsets::SockLengthFormat {
        sk: 0,
        protocol: 0,
        ret: 0,
        flags: 0,
    },
    tcp_retransmit_skaddr: 0,
    tcp_receive_reset_skaddr: 0,
    msghdr_msg_name: 0,
    fd: tracer_common::offsets::FdOffsets {
        task_files: 0,
        files_fdt: 0,
        fdtable_max_fds: 0,
        fdtable_fd: 0,
        file_private_data: 0,
        socket_sk: 0,
    },
    sys_exit_ret: 0,
    udp_syscalls: tracer_common::offsets::UdpSyscallFormats {
        sendto_addr: 0,
        sendmsg_msg: 0,
        sendmmsg_mmsg: 0,
        recvfrom_addr: 0,
        recvmsg_msg: 0,
        recvmmsg_mmsg: 0,
        recvfrom_ret: 0,
        recvmsg_ret: 0,
        recvmmsg_ret: 0,
    },
});

/// The layout for this kernel: the patched global, read field by field where it is used.
#[inline(always)]
pub fn layout() -> &'static KernelLayout {
    // Not `NT_LAYOUT.load()`: a copy of the whole layout becomes dozens of live scalars that the
    // compiler spills to the 512-byte stack (nt_tp_state went over the limit on 5.10/6.1, whose
    // verifiers round each frame up to 32 bytes). The pointer goes through `black_box` so that
    // the compiler cannot fold the reads to the placeholder values above (the loader patches
    // them); `Global<T>` holds exactly one `MaybeUninit<T>`, so the `T` is at offset 0.
    let layout: *const KernelLayout = core::hint::black_box(core::ptr::addr_of!(NT_LAYOUT).cast());
    // SAFETY: the global lives for the program's whole run, always holds an initialised
    // `KernelLayout`, and no program writes it.
    unsafe { &*layout }
}

/// Reads a `T` at `base + offset` in kernel memory. Fails (never faults) on a bad address.
#[inline(always)]
pub fn read_kernel<T>(base: u64, offset: u16) -> Result<T, i32> {
    let address = base.wrapping_add(u64::from(offset));
    // SAFETY: bpf_probe_read_kernel validates the address; a bad one returns an error.
    unsafe { bpf_probe_read_kernel(address as *const T) }
}
