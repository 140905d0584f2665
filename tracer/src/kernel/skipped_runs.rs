//! How many runs of the tracer's programs the kernel skipped: `bpf_prog_info.recursion_misses`
//! (Linux 5.12+), summed over the programs. The kernel skips a kprobe or classic tracepoint
//! program that fires while another such program runs on the same CPU (a softirq interrupting
//! it), and a raw tracepoint or fentry program that fires inside itself (6.2+). Each skip is an
//! event the tracer did not see; aya does not expose the field, so it is read here.

use std::os::fd::{AsRawFd, BorrowedFd};

use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};

/// The program's `recursion_misses`, or `None` when the kernel predates the field (it then
/// reports a shorter `bpf_prog_info` and does not count skips at all).
pub(crate) fn recursion_misses(program: BorrowedFd<'_>) -> std::io::Result<Option<u64>> {
    // SAFETY: both are plain C structs for which all-zero is a valid value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<bpf_prog_info>() as u32;
    // The `info` member of the union is the one BPF_OBJ_GET_INFO_BY_FD reads.
    attr.info.bpf_fd = program.as_raw_fd() as u32;
    attr.info.info_len = size;
    attr.info.info = (&raw mut info) as u64;
    // SAFETY: `attr` is a valid bpf_attr whose `info` points to `size` writable bytes that
    // outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            &raw mut attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote back how many bytes of `info` it filled.
    let filled = unsafe { attr.info.info_len } as usize;
    Ok(has_field(filled).then_some(info.recursion_misses))
}

/// Whether a `bpf_prog_info` the kernel filled `filled` bytes of includes `recursion_misses`.
fn has_field(filled: usize) -> bool {
    filled >= std::mem::offset_of!(bpf_prog_info, recursion_misses) + std::mem::size_of::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_info_shorter_than_the_field_has_no_count() {
        let end = std::mem::offset_of!(bpf_prog_info, recursion_misses) + 8;
        assert!(has_field(end));
        assert!(has_field(std::mem::size_of::<bpf_prog_info>()));
        assert!(!has_field(end - 1));
        // Linux 5.10's bpf_prog_info ends with run_cnt (5.1), just before the field (5.12).
        assert!(!has_field(std::mem::offset_of!(bpf_prog_info, run_cnt) + 8));
    }
}
