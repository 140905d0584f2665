//! Child processes made with a bare `fork` (for tests where the process that owns a socket must
//! differ from the test's), and the raw reads and writes such a child may make.

/// Forks; the child runs `child` (which must only make raw syscalls: it is a fork of a
/// multi-threaded process) and exits with its return code. Returns the child's pid.
pub fn fork_child(child: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child only runs async-signal-safe raw syscalls, then `_exit`s.
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            let code = child();
            // SAFETY: leaves the child without running the parent's destructors or tests.
            unsafe { libc::_exit(code) }
        }
        pid => pid,
    }
}

/// Waits for `pid`, which must exit with 0.
pub fn wait_ok(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waiting on our own child.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: status {status:#x}"
    );
}

/// Reads and discards exactly `n` bytes from `fd` with raw `read`s; false on EOF or error.
pub fn raw_read_exact(fd: i32, mut n: usize) -> bool {
    let mut buf = [0u8; 512];
    while n > 0 {
        // SAFETY: valid buffer.
        let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), n.min(buf.len())) };
        if got <= 0 {
            return false;
        }
        n -= got as usize;
    }
    true
}

/// Writes `n` bytes (9s) to `fd` with raw `write`s; false on error.
pub fn raw_write_all(fd: i32, mut n: usize) -> bool {
    let buf = [9u8; 512];
    while n > 0 {
        // SAFETY: valid buffer.
        let put = unsafe { libc::write(fd, buf.as_ptr().cast(), n.min(buf.len())) };
        if put <= 0 {
            return false;
        }
        n -= put as usize;
    }
    true
}
