//! Resolving a file descriptor of the current task to its `struct sock`, for hooks that only see
//! a descriptor (`SSL_set_fd`'s, for the TLS uprobes). Offsets come from BTF via the layout
//! global.

use aya_ebpf::helpers::bpf_get_current_task;
use tracer_common::offsets::FileOffsets;

use super::layout::read_kernel;

/// `current->files->fdt->fd[fd]->private_data->sk`, or `None` when any step fails or `fd` is
/// out of the table's range.
#[inline(always)]
pub fn sock_of_fd(fd: i64, offsets: &FileOffsets) -> Option<u64> {
    let fd = u32::try_from(fd).ok()?;
    // SAFETY: no preconditions; the result is only dereferenced through probe reads.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read_kernel(task, offsets.task_files).ok()?;
    let fdt: u64 = read_kernel(files, offsets.files_fdt).ok()?;
    let max_fds: u32 = read_kernel(fdt, offsets.fdtable_max_fds).ok()?;
    if fd >= max_fds {
        return None;
    }
    let table: u64 = read_kernel(fdt, offsets.fdtable_fd).ok()?;
    let file: u64 = read_kernel(table.wrapping_add(u64::from(fd) * 8), 0).ok()?;
    let socket: u64 = read_kernel(file, offsets.file_private_data).ok()?;
    let sk: u64 = read_kernel(socket, offsets.socket_sk).ok()?;
    (sk != 0).then_some(sk)
}
