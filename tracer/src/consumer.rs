//! A ring consumer: a thread that sleeps on a ring buffer's descriptor and drains it as soon as
//! records arrive, so the ring does not fill between two client calls. Two run: one moves every
//! closed connection into the state pipeline, one feeds captured packets to the sources (DNS).
//! Client calls drain through the same paths first.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use crate::{Error, Result};

/// The running thread and the means to stop it.
pub(crate) struct Consumer {
    stop: Arc<AtomicBool>,
    wake: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl Consumer {
    /// Starts a thread named `name` that calls `flush` whenever `ring_fd` becomes readable (and
    /// every `idle_ms` regardless, as a safety net).
    pub(crate) fn start(
        name: &str,
        ring_fd: i32,
        idle_ms: i32,
        flush: impl Fn() + Send + 'static,
    ) -> Result<Self> {
        // SAFETY: eventfd has no memory preconditions; the descriptor is owned below.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(Error::io(
                "eventfd for the consumer",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let wake = unsafe { OwnedFd::from_raw_fd(raw) };
        let wake_fd = wake.as_raw_fd();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut fds = [
                    libc::pollfd {
                        fd: ring_fd,
                        events: libc::POLLIN,
                        revents: 0,
                    },
                    libc::pollfd {
                        fd: wake_fd,
                        events: libc::POLLIN,
                        revents: 0,
                    },
                ];
                while !thread_stop.load(Ordering::Acquire) {
                    // SAFETY: two valid pollfd entries.
                    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, idle_ms) };
                    if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                        tracing::error!(error = %io::Error::last_os_error(), "consumer poll failed");
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    if thread_stop.load(Ordering::Acquire) {
                        break;
                    }
                    flush();
                }
            })
            .map_err(|e| Error::io("spawning the consumer thread", e))?;
        Ok(Self {
            stop,
            wake,
            thread: Some(thread),
        })
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&raw const one).cast(), 8) };
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the consumer thread panicked");
        }
    }
}
