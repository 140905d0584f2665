//! `iter/task_file` (Linux 5.8+): visits every open file of every task in the pid namespace of
//! the reader, and names the owner of each connection tracked under its socket's own address
//! (an accepted TCP connection, a socket found at start) that has none.
//!
//! An accepted socket is created in softirq (the handshake's last ACK), where no process is
//! known. Its first send or receive runs in the process and names the owner (`conn::account`);
//! this walk names the owners of the ones that did no I/O before userspace read the table
//! (userspace runs it only then: tracer/src/kernel/iter.rs). It replaces `accept`'s syscall
//! tracepoints, which put every syscall of every process on the kernel's slower traced path.
//!
//! It also names the owners of the sockets the start-up walk found (`super::seed`: they
//! existed before the tracer started, and no hook saw their owner), right after that walk.
//!
//! The owner is the first task found holding the socket; the walk goes in pid order, so a
//! socket passed to children goes to the lowest pid, as the first accepter usually is.
//!
//! Writes one byte to the iterator's output per connection it named an owner for.

use core::ffi::c_void;

use aya_ebpf::{bindings::seq_file, helpers::bpf_probe_read_kernel};
use tracer_common::offsets::FileOffsets;

use crate::conn::{self, layout, layout::read_kernel, sock};

/// `struct bpf_iter__task_file { struct bpf_iter_meta *meta; struct task_struct *task; u32 fd;
/// struct file *file; }` (stable since 5.8): the pointers at offsets 0, 8 and 24.
const CTX_META: usize = 0;
const CTX_TASK: usize = 8;
const CTX_FILE: usize = 24;

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_file")]
pub fn nt_iter_files(ctx: *mut c_void) -> i32 {
    let Some((task, file)) = task_and_file(ctx) else {
        return 0;
    };
    let layout = layout::layout();
    let offsets = &layout.file;
    let Some(sk) = socket_of(file, offsets) else {
        return 0;
    };
    // Only sockets the table tracks without an owner go further (one map lookup per socket file).
    if !conn::tracked(sk).is_some_and(|stats| stats.tuple.pid == 0) {
        return 0;
    }
    let Ok(tgid) = read_kernel::<i32>(task, offsets.task_tgid) else {
        return 0;
    };
    let cgroup_id = cgroup_id(task, offsets).unwrap_or(0);
    let comm = sock::process_name(task, &layout.sock).unwrap_or([0; 16]);
    if conn::set_owner(sk, tgid as u32, cgroup_id, comm) {
        count(ctx);
    }
    0
}

/// The task and the file of this step, as plain numbers (probe reads, not loads: the verifier
/// would keep loaded pointers typed and refuse the variable offsets the layout reads add to
/// them). `None` on the iterator's final call (both NULL).
#[inline(always)]
fn task_and_file(ctx: *mut c_void) -> Option<(u64, u64)> {
    let field = |offset: usize| -> Option<u64> {
        // SAFETY: bpf_probe_read_kernel validates the address.
        unsafe { bpf_probe_read_kernel(ctx.cast::<u8>().wrapping_add(offset).cast::<u64>()) }.ok()
    };
    let task = field(CTX_TASK)?;
    let file = field(CTX_FILE)?;
    (task != 0 && file != 0).then_some((task, file))
}

/// The `struct sock` behind `file` when it is a socket: `file->private_data` is a
/// `struct socket` whose `file` points back at `file` (any other file's private data does not).
#[inline(always)]
fn socket_of(file: u64, offsets: &FileOffsets) -> Option<u64> {
    let socket: u64 = read_kernel(file, offsets.file_private_data).ok()?;
    if socket == 0 {
        return None;
    }
    let back: u64 = read_kernel(socket, offsets.socket_file).ok()?;
    if back != file {
        return None;
    }
    let sk: u64 = read_kernel(socket, offsets.socket_sk).ok()?;
    (sk != 0).then_some(sk)
}

/// The task's cgroup v2 id, as `bpf_get_current_cgroup_id` gives it in the task itself:
/// `task->cgroups->dfl_cgrp->kn->id`.
#[inline(always)]
fn cgroup_id(task: u64, offsets: &FileOffsets) -> Option<u64> {
    let css_set: u64 = read_kernel(task, offsets.task_cgroups).ok()?;
    let cgroup: u64 = read_kernel(css_set, offsets.css_set_dfl_cgrp).ok()?;
    let kn: u64 = read_kernel(cgroup, offsets.cgroup_kn).ok()?;
    read_kernel(kn, offsets.kernfs_node_id).ok()
}

/// One byte of output for one connection named.
#[inline(always)]
fn count(ctx: *mut c_void) {
    // `ctx->meta->seq`, both loaded directly: `bpf_seq_write` wants the typed `seq_file *`.
    // SAFETY: the iterator context always holds a valid `meta`, whose `seq` is valid for the
    // program's run; the verifier checks both loads against BTF.
    unsafe {
        let meta = core::ptr::read_volatile(ctx.cast::<u8>().add(CTX_META).cast::<*const u8>());
        let seq = core::ptr::read_volatile(meta.cast::<*mut seq_file>());
        let byte: u8 = 1;
        let _ = aya_ebpf::helpers::bpf_seq_write(seq, (&raw const byte).cast(), 1);
    }
}
