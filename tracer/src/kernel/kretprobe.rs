//! kretprobes with a chosen `maxactive`: how many calls of the function may be in flight at once
//! with their return still probed. The kernel's default (max(10, 2 x CPUs)) is far too small for
//! functions that block: a server with dozens of threads waiting in `tcp_recvmsg` loses the
//! returns of all calls beyond it (the kprobe backend counts them in `probe_return_missed`).
//! aya attaches kretprobes through the kprobe PMU, which has no way to set it, so these are
//! created through tracefs (`r<maxactive>:group/event function` in `kprobe_events`), and the
//! loaded program is attached to the event with `perf_event_open` + `PERF_EVENT_IOC_SET_BPF`.
//!
//! The event is removed again on drop; a process that dies without dropping (SIGKILL, a crash)
//! leaves it in `kprobe_events`, named after its pid, with nothing attached. The next tracer to
//! attach removes the events of pids that no longer run ([`remove_stale`]), so a restart after a
//! crash starts from a clean `kprobe_events`.

use std::{
    fs::OpenOptions,
    io::Write,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{Error, Result};

/// Calls of one function that may be in flight with their return probed. Blocking functions
/// (receives) hold one instance per waiting thread; Datadog's tracer uses 512. Costs about 64
/// bytes of kernel memory per instance and probe.
pub const MAXACTIVE: u32 = 1024;

/// The tracefs group of the tracer's kretprobe events.
const GROUP: &str = "nettracer";

/// Distinguishes the events of several tracers in one process.
static NEXT: AtomicU32 = AtomicU32::new(0);

// include/uapi/linux/perf_event.h
const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_SAMPLE_RAW: u64 = 1 << 10;
const PERF_ATTR_SIZE_VER5: u32 = 112;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;

/// A kretprobe event with a BPF program attached; dropping it detaches the program and removes
/// the event.
#[derive(Debug)]
pub struct KretprobeLink {
    perf: Option<OwnedFd>,
    kprobe_events: PathBuf,
    event: String,
}

impl KretprobeLink {
    /// Creates `r<maxactive>:nettracer/<event> <function>` and attaches `program` (a loaded
    /// `BPF_PROG_TYPE_KPROBE` program) to it.
    pub fn attach(
        tracefs: &Path,
        program: BorrowedFd<'_>,
        function: &str,
        maxactive: u32,
    ) -> Result<Self> {
        let event = format!(
            "nt{}_{}_{function}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let kprobe_events = tracefs.join("kprobe_events");
        remove_stale(&kprobe_events);
        write_control(
            &kprobe_events,
            &format!("r{maxactive}:{GROUP}/{event} {function}\n"),
        )?;
        // From here on, dropping `link` removes the event.
        let mut link = Self {
            perf: None,
            kprobe_events,
            event,
        };
        let id_path = tracefs
            .join("events")
            .join(GROUP)
            .join(&link.event)
            .join("id");
        let id: u64 = std::fs::read_to_string(&id_path)
            .map_err(|e| Error::io(format!("reading {}", id_path.display()), e))?
            .trim()
            .parse()
            .map_err(|e| {
                Error::io(
                    format!("parsing {}", id_path.display()),
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                )
            })?;
        let perf = open_tracepoint_event(id)?;
        // SAFETY: ioctls on a perf event descriptor we own, with a valid program descriptor.
        unsafe {
            if libc::ioctl(
                perf.as_raw_fd(),
                PERF_EVENT_IOC_SET_BPF,
                program.as_raw_fd(),
            ) != 0
            {
                return Err(Error::io(
                    format!("attaching the kretprobe program to {function}"),
                    std::io::Error::last_os_error(),
                ));
            }
            if libc::ioctl(perf.as_raw_fd(), PERF_EVENT_IOC_ENABLE, 0) != 0 {
                return Err(Error::io(
                    format!("enabling the kretprobe on {function}"),
                    std::io::Error::last_os_error(),
                ));
            }
        }
        link.perf = Some(perf);
        Ok(link)
    }
}

impl Drop for KretprobeLink {
    fn drop(&mut self) {
        // The event cannot be removed while a perf event uses it.
        drop(self.perf.take());
        let removal = format!("-:{GROUP}/{}\n", self.event);
        if let Err(err) = write_control(&self.kprobe_events, &removal) {
            tracing::warn!(event = %self.event, %err, "could not remove the kretprobe event");
        }
    }
}

/// Removes the events of this group whose process is gone (see the module doc). Best effort: an
/// event that cannot be removed is logged and left (it costs a little kernel memory, nothing
/// runs on it).
fn remove_stale(kprobe_events: &Path) {
    let Ok(text) = std::fs::read_to_string(kprobe_events) else {
        return;
    };
    for event in stale_events(&text, crate::expiry::process_alive) {
        match write_control(kprobe_events, &format!("-:{GROUP}/{event}\n")) {
            Ok(()) => tracing::info!(%event, "removed a kretprobe event left by a dead tracer"),
            Err(err) => tracing::warn!(%event, %err, "could not remove a stale kretprobe event"),
        }
    }
}

/// The events of [`GROUP`] in a `kprobe_events` listing (`r1024:nettracer/nt<pid>_<n>_<fn>
/// <fn>` lines) whose pid is not `alive`.
fn stale_events(listing: &str, alive: impl Fn(u32) -> bool) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(':')?;
            let event = rest.split_whitespace().next()?.strip_prefix(GROUP)?;
            let event = event.strip_prefix('/')?;
            let pid = event.strip_prefix("nt")?.split('_').next()?.parse().ok()?;
            (!alive(pid)).then(|| event.to_owned())
        })
        .collect()
}

fn write_control(path: &Path, line: &str) -> Result<()> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(line.as_bytes()))
        .map_err(|e| {
            Error::io(
                format!("writing {:?} to {}", line.trim(), path.display()),
                e,
            )
        })
}

/// `perf_event_open` of tracepoint event `id` on every CPU (BPF programs attach to the event
/// itself, so one descriptor covers all CPUs).
fn open_tracepoint_event(id: u64) -> Result<OwnedFd> {
    // struct perf_event_attr, PERF_ATTR_SIZE_VER5 layout: type, size, config, sample_period,
    // sample_type at 0, 4, 8, 16, 24; wakeup_events at 48.
    let mut attr = [0u8; PERF_ATTR_SIZE_VER5 as usize];
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(slot) = attr.get_mut(at..at + bytes.len()) {
            slot.copy_from_slice(bytes);
        }
    };
    put(0, &PERF_TYPE_TRACEPOINT.to_ne_bytes());
    put(4, &PERF_ATTR_SIZE_VER5.to_ne_bytes());
    put(8, &id.to_ne_bytes());
    put(16, &1u64.to_ne_bytes());
    put(24, &PERF_SAMPLE_RAW.to_ne_bytes());
    put(48, &1u32.to_ne_bytes());
    // SAFETY: `attr` is a complete, zero-padded perf_event_attr of the size it declares.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Error::io(
            format!("perf_event_open of tracepoint event {id}"),
            std::io::Error::last_os_error(),
        ));
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| {
        Error::io(
            "perf_event_open",
            std::io::Error::new(std::io::ErrorKind::InvalidData, "descriptor out of range"),
        )
    })?;
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_group_s_events_of_dead_pids_are_stale() {
        let listing = "r1024:nettracer/nt4242_0_tcp_recvmsg tcp_recvmsg\n\
                       r1024:nettracer/nt7_1_udp_recvmsg udp_recvmsg\n\
                       r16:other/nt4242_0_tcp_recvmsg tcp_recvmsg\n\
                       p:kprobes/myprobe do_sys_open\n\
                       r1024:nettracer/garbage tcp_recvmsg\n";
        assert_eq!(
            stale_events(listing, |pid| pid == 7),
            vec!["nt4242_0_tcp_recvmsg".to_owned()]
        );
        assert!(stale_events(listing, |_| true).is_empty());
        assert!(stale_events("", |_| false).is_empty());
    }
}
