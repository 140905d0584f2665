//! The process that connected or accepted owns the connection, on both sides, when client and
//! server are different processes, and when another process performs the close.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use tracer::kernel::conn_tracer::KernelConfig;
use tracer_integration::{
    netns::{current_netns_inode, in_fresh_netns},
    tracer::{collect_closed, load, the_one},
};

/// Forks; the child runs `child` (which must only make raw syscalls: it is a fork of a
/// multi-threaded process) and exits with its return code. Returns the child's pid.
fn fork_child(child: impl FnOnce() -> i32) -> libc::pid_t {
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

fn wait_ok(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waiting on our own child.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: status {status:#x}"
    );
}

fn raw_read_exact(fd: i32, mut n: usize) -> bool {
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

fn raw_write_all(fd: i32, mut n: usize) -> bool {
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

#[test]
fn client_and_server_in_two_processes_each_own_their_side() {
    in_fresh_netns(|| {
        let Some(tracer) = load(KernelConfig::default()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server_addr = listener.local_addr().expect("addr");
        let listen_fd = listener.as_raw_fd();
        let (request, reply) = (1234usize, 4321usize);
        let server_pid = fork_child(|| {
            // SAFETY: raw accept on the inherited listener.
            let fd = unsafe { libc::accept(listen_fd, std::ptr::null_mut(), std::ptr::null_mut()) };
            if fd < 0 || !raw_read_exact(fd, request) || !raw_write_all(fd, reply) {
                return 1;
            }
            // Wait for the client's FIN, then close.
            let mut byte = [0u8; 1];
            // SAFETY: valid buffer.
            let eof = unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) };
            // SAFETY: our descriptor.
            unsafe { libc::close(fd) };
            if eof == 0 { 0 } else { 2 }
        });
        drop(listener);
        let mut client = TcpStream::connect(server_addr).expect("connect");
        let client_addr = client.local_addr().expect("addr");
        client.write_all(&vec![1u8; request]).expect("write");
        let mut answer = vec![0u8; reply];
        client.read_exact(&mut answer).expect("read");
        drop(client);
        wait_ok(server_pid);

        let closed = collect_closed(&tracer, netns, |c| c.len() >= 2);
        let outgoing = the_one(&closed, client_addr, server_addr);
        assert_eq!(
            outgoing.tuple.pid,
            std::process::id(),
            "the connecting process"
        );
        assert_eq!(
            (outgoing.sent_bytes, outgoing.recv_bytes),
            (request as u64, reply as u64)
        );
        let incoming = the_one(&closed, server_addr, client_addr);
        assert_eq!(
            incoming.tuple.pid, server_pid as u32,
            "the accepting process"
        );
        assert_eq!(
            (incoming.sent_bytes, incoming.recv_bytes),
            (reply as u64, request as u64)
        );
    });
}

#[test]
fn a_close_by_another_process_ends_the_connection_once_with_the_owner_pid() {
    in_fresh_netns(|| {
        let Some(tracer) = load(KernelConfig::default()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server_addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(server_addr).expect("connect");
        let client_addr = client.local_addr().expect("addr");
        let (mut server, _) = listener.accept().expect("accept");
        client.write_all(&[5u8; 777]).expect("write");
        let mut buf = [0u8; 777];
        server.read_exact(&mut buf).expect("read");

        let mut pipe = [0i32; 2];
        // SAFETY: valid array of two descriptors.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        let [go_read, go_write] = pipe;
        let client_fd = client.as_raw_fd();
        let closer = fork_child(|| {
            let mut byte = [0u8; 1];
            // SAFETY: wait until the parent has dropped its copy, then close ours: the last
            // reference, so the TCP close happens in this process.
            unsafe {
                libc::read(go_read, byte.as_mut_ptr().cast(), 1);
                libc::close(client_fd);
            }
            0
        });
        drop(client);
        // SAFETY: our pipe ends.
        unsafe {
            libc::write(go_write, [1u8].as_ptr().cast(), 1);
            drop(OwnedFd::from_raw_fd(go_write));
            drop(OwnedFd::from_raw_fd(go_read));
        }
        wait_ok(closer);
        let mut rest = Vec::new();
        server
            .read_to_end(&mut rest)
            .expect("eof after the child's close");
        drop(server);

        let closed = collect_closed(&tracer, netns, |c| c.len() >= 2);
        let outgoing = the_one(&closed, client_addr, server_addr);
        assert_eq!(
            outgoing.tuple.pid,
            std::process::id(),
            "the owner, not the closer {closer}"
        );
        assert_eq!(outgoing.sent_bytes, 777);
        assert_eq!(
            closed.len(),
            2,
            "each side closed exactly once: {closed:#?}"
        );
    });
}
