//! Runs test code inside a fresh network namespace with loopback up, so each test owns its traffic
//! and sees nobody else's.

use std::{io, thread};

/// Runs `f` on a new thread that first moves itself into a new network namespace and brings `lo`
/// up. Threads spawned by `f` inherit the namespace. Panics in `f` propagate to the caller.
pub fn in_fresh_netns<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let handle = thread::spawn(move || {
        enter_new_netns().expect("unshare(CLONE_NEWNET)");
        loopback_up().expect("bring lo up");
        f()
    });
    match handle.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn enter_new_netns() -> io::Result<()> {
    // SAFETY: plain syscall; it only affects the calling thread's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `ip link set lo up`, with the SIOCSIFFLAGS ioctl so the tests need no `ip` binary.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: socket/ioctl/close on a descriptor we own, with a zeroed, properly sized ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let result = if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            Err(io::Error::last_os_error())
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) != 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        libc::close(fd);
        result
    }
}

/// The inode number of the calling thread's network namespace.
pub fn current_netns_inode() -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}

/// Whether a TCP socket of the calling thread's network namespace listens on `port` (state
/// 0A in `/proc/thread-self/net/tcp`): how the tests wait for a server they started without
/// connecting to it (a probe would be one more connection for the tracer to see).
pub fn tcp_listening(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/thread-self/net/tcp").unwrap_or_default();
    let local = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1).is_some_and(|l| l.ends_with(&local)) && fields.get(3) == Some(&"0A")
    })
}
