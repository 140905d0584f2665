//! Reading the whole open-connection map: `BPF_MAP_LOOKUP_BATCH` (Linux 5.6+ for hash maps) in
//! chunks, which walks the table bucket by bucket and so never returns a key twice even when the
//! programs delete entries mid-read; where the kernel refuses batches, key-by-key iteration,
//! which restarts from the first key when the current one is deleted, with duplicates removed.

use std::{
    collections::HashSet,
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

use aya::maps::{HashMap, MapData, MapError};
use tracer_common::conn::{ConnKey, ConnStats};

/// How one read went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Entries returned.
    pub entries: usize,
    /// Syscalls made.
    pub syscalls: usize,
    /// Whether batched lookups were used.
    pub batched: bool,
    /// Keys seen twice by key-by-key iteration (dropped).
    pub duplicates: usize,
}

/// Entries per batch: large enough to amortise the syscall, small enough for the stack of
/// buffers (4096 × 152 bytes ≈ 600 KiB, reused).
const BATCH: u32 = 4096;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `union bpf_attr` as used by the batch commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Reads every entry of `map` into `out` (cleared first).
pub fn read_all(
    map: &HashMap<MapData, ConnKey, ConnStats>,
    fd: BorrowedFd<'_>,
    out: &mut Vec<(ConnKey, ConnStats)>,
) -> Result<ReadStats, MapError> {
    out.clear();
    match read_batched(fd, out) {
        Ok(stats) => Ok(stats),
        Err(err) if batch_unsupported(&err) => {
            out.clear();
            read_iterating(map, out)
        }
        Err(err) => Err(MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_lookup_batch",
            io_error: err,
        })),
    }
}

fn batch_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOTSUP) | Some(524 /* ENOTSUPP */) | Some(libc::ENOSYS)
    )
}

fn read_batched(fd: BorrowedFd<'_>, out: &mut Vec<(ConnKey, ConnStats)>) -> io::Result<ReadStats> {
    let fd =
        u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    let mut keys = vec![ConnKey::default(); BATCH as usize];
    let mut values = vec![ConnStats::default(); BATCH as usize];
    // The hash map's batch cursor is a bucket index; 8 bytes covers it.
    let mut cursor_in = 0u64;
    let mut cursor_out = 0u64;
    let mut stats = ReadStats {
        batched: true,
        ..ReadStats::default()
    };
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                (&raw const cursor_in) as u64
            },
            out_batch: (&raw mut cursor_out) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH,
            map_fd: fd,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: `attr` points at buffers sized for `count` keys and values, which outlive the
        // call; the kernel writes at most `count` of each and the cursor.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        stats.syscalls += 1;
        let err = (rc < 0).then(io::Error::last_os_error);
        let got = attr.count as usize;
        match &err {
            // ENOENT: this was the last batch (it may still carry entries).
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Some(_) => return Err(err.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EIO))),
            None => {}
        }
        // Exact growth: the buffer is reused across reads, so this only allocates while the map
        // grows past its largest size yet, and the buffer stays within one batch of that size
        // (doubling would keep up to twice it: 160 B per connection at 100k entries).
        out.reserve_exact(got);
        out.extend(keys.iter().copied().zip(values.iter().copied()).take(got));
        if err.is_some() {
            break;
        }
        cursor_in = cursor_out;
        first = false;
    }
    stats.entries = out.len();
    Ok(stats)
}

fn read_iterating(
    map: &HashMap<MapData, ConnKey, ConnStats>,
    out: &mut Vec<(ConnKey, ConnStats)>,
) -> Result<ReadStats, MapError> {
    let mut seen = HashSet::new();
    let mut stats = ReadStats::default();
    for entry in map.iter() {
        stats.syscalls += 2;
        let (key, value) = match entry {
            Ok(entry) => entry,
            // Deleted between get_next_key and lookup: it closed; its event is on the ring.
            Err(MapError::KeyNotFound) => continue,
            Err(e) => return Err(e),
        };
        if seen.insert(key) {
            out.push((key, value));
        } else {
            stats.duplicates += 1;
        }
    }
    stats.entries = out.len();
    Ok(stats)
}
