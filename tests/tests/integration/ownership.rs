//! The process that connected or accepted owns the connection, on both sides, when client and
//! server are different processes, and when another process performs the close.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use tracer_integration::{
    fork::{fork_child, raw_read_exact, raw_write_all, wait_ok},
    netns::{current_netns_inode, in_fresh_netns},
    tracer::{collect_closed, core_config, load, the_active, the_one},
};

#[test]
fn client_and_server_in_two_processes_each_own_their_side() {
    in_fresh_netns(|| {
        let Some(tracer) = load(core_config()) else {
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
        let Some(tracer) = load(core_config()) else {
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

/// The cgroup v2 hierarchy's mount point (the tests run where it is mounted: the host's
/// `/sys/fs/cgroup/unified`, the VMs' `/sys/fs/cgroup`).
fn cgroup2_mount() -> std::path::PathBuf {
    tracer::kernel::capabilities::cgroup2_mount().expect("a cgroup v2 mount")
}

/// The inode of this process's cgroup v2 directory: the id `bpf_get_current_cgroup_id` returns.
fn own_cgroup_id(mount: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let text = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line");
    let dir = mount.join(path.trim_start_matches('/'));
    std::fs::metadata(&dir).expect("own cgroup dir").ino()
}

#[test]
fn each_side_carries_the_cgroup_id_of_its_owner() {
    use std::{ffi::CString, os::unix::fs::MetadataExt};
    in_fresh_netns(|| {
        let Some(tracer) = load(core_config()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        let mount = cgroup2_mount();
        let ours = own_cgroup_id(&mount);
        // The server runs in a cgroup of its own, made for this test.
        let dir = mount.join(format!("tracer-test-owner-{}", std::process::id()));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).expect("create cgroup");
        let theirs = std::fs::metadata(&dir).expect("cgroup").ino();
        assert_ne!(theirs, ours);
        let procs =
            CString::new(dir.join("cgroup.procs").as_os_str().as_encoded_bytes()).expect("path");

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server_addr = listener.local_addr().expect("addr");
        let listen_fd = listener.as_raw_fd();
        let server_pid = fork_child(|| {
            // SAFETY: raw syscalls only: join the test cgroup ("0": the writing process), then
            // accept, echo and close.
            unsafe {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return 3;
                }
                libc::close(fd);
                let conn = libc::accept(listen_fd, std::ptr::null_mut(), std::ptr::null_mut());
                if conn < 0 || !raw_read_exact(conn, 100) || !raw_write_all(conn, 200) {
                    return 1;
                }
                let mut byte = [0u8; 1];
                let eof = libc::read(conn, byte.as_mut_ptr().cast(), 1);
                libc::close(conn);
                if eof == 0 { 0 } else { 2 }
            }
        });
        drop(listener);
        let mut client = TcpStream::connect(server_addr).expect("connect");
        let client_addr = client.local_addr().expect("addr");
        client.write_all(&[1u8; 100]).expect("write");
        let mut answer = [0u8; 200];
        client.read_exact(&mut answer).expect("read");
        drop(client);
        wait_ok(server_pid);
        let closed = collect_closed(&tracer, netns, |c| c.len() >= 2);
        std::fs::remove_dir(&dir).expect("remove the test cgroup");

        let outgoing = the_one(&closed, client_addr, server_addr);
        assert_eq!(outgoing.cgroup_id, ours, "the connecting process's cgroup");
        let incoming = the_one(&closed, server_addr, client_addr);
        assert_eq!(incoming.tuple.pid, server_pid as u32);
        assert_eq!(
            incoming.cgroup_id, theirs,
            "the accepting process's cgroup, not the parent's ({ours})"
        );
    });
}

/// This process's name as `/proc/self/comm` has it (its main thread's `comm`), NUL-padded like
/// the kernel's.
fn own_process_comm() -> [u8; 16] {
    let name = std::fs::read_to_string("/proc/self/comm").expect("comm");
    let mut out = [0u8; 16];
    for (slot, byte) in out.iter_mut().zip(name.trim_end_matches('\n').bytes()) {
        *slot = byte;
    }
    out
}

/// A real program that connects and exits at once (dig over TCP): its connection carries its
/// name as the kernel recorded it, so a user sees `dig` although the process was gone before
/// anyone could look in /proc. The name is the process's (its main thread's `comm`), not the
/// thread's that made the call: dig connects from its `isc-net-0000` worker, and this test's
/// accepting side runs on a thread of its own.
#[test]
fn a_short_lived_client_keeps_its_name_after_it_exited() {
    in_fresh_netns(|| {
        let Some(tracer) = load(core_config()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server_addr = listener.local_addr().expect("addr");
        let mut dig = std::process::Command::new("dig")
            .args([
                "+tcp",
                "+tries=1",
                "+time=2",
                &format!("-p{}", server_addr.port()),
                "@127.0.0.1",
                "name.test",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dig (installed by `cargo xtask setup`, shipped in the VMs)");
        let dig_pid = dig.id();
        let (mut conn, client_addr) = listener.accept().expect("accept");
        let mut query = [0u8; 2];
        conn.read_exact(&mut query)
            .expect("the query's length prefix");
        // No answer: closing makes dig give up and exit.
        drop(conn);
        dig.wait().expect("dig exits");
        let server_comm = own_process_comm();

        let closed = collect_closed(&tracer, netns, |c| c.len() >= 2);
        let outgoing = the_one(&closed, client_addr, server_addr);
        assert_eq!(outgoing.tuple.pid, dig_pid, "dig's pid");
        let mut dig_comm = [0u8; 16];
        dig_comm[..3].copy_from_slice(b"dig");
        assert_eq!(
            outgoing.comm,
            dig_comm,
            "dig's name: {:?}",
            String::from_utf8_lossy(&outgoing.comm)
        );
        let incoming = the_one(&closed, server_addr, client_addr);
        assert_eq!(incoming.tuple.pid, std::process::id());
        assert_eq!(
            incoming.comm,
            server_comm,
            "the accepting process's name: {:?} vs {:?}",
            String::from_utf8_lossy(&incoming.comm),
            String::from_utf8_lossy(&server_comm)
        );
    });
}

/// An accepted connection that did no I/O yet when the table is read is named by the read-time
/// walk of every task's open files (`iter/task_file`; no `accept` syscall tracepoint): the
/// accepting process, its cgroup and its name, with no byte moved. The accepting child runs in
/// a cgroup of its own, so that neither the pid nor the cgroup can come from the reader.
#[test]
fn an_accepted_connection_without_io_is_owned_by_its_accepting_process_when_read() {
    use std::{ffi::CString, os::unix::fs::MetadataExt};
    in_fresh_netns(|| {
        let Some(tracer) = load(core_config()) else {
            return;
        };
        let netns = current_netns_inode().expect("netns") as u32;
        let mount = cgroup2_mount();
        let dir = mount.join(format!("tracer-test-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).expect("create cgroup");
        let theirs = std::fs::metadata(&dir).expect("cgroup").ino();
        assert_ne!(theirs, own_cgroup_id(&mount));
        let procs =
            CString::new(dir.join("cgroup.procs").as_os_str().as_encoded_bytes()).expect("path");
        // Two pipes: the child says "accepted", the parent says "close now".
        let pipe = || {
            let mut fds = [0i32; 2];
            // SAFETY: a valid array of two descriptors.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
            fds
        };
        let [accepted_rx, accepted_tx] = pipe();
        let [close_rx, close_tx] = pipe();

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server_addr = listener.local_addr().expect("addr");
        let listen_fd = listener.as_raw_fd();
        let server_pid = fork_child(|| {
            // SAFETY: raw syscalls only: join the test cgroup, accept, say so, wait, close.
            unsafe {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return 3;
                }
                libc::close(fd);
                let conn = libc::accept(listen_fd, std::ptr::null_mut(), std::ptr::null_mut());
                if conn < 0 || libc::write(accepted_tx, b"a".as_ptr().cast(), 1) != 1 {
                    return 1;
                }
                let mut byte = [0u8; 1];
                if libc::read(close_rx, byte.as_mut_ptr().cast(), 1) != 1 {
                    return 2;
                }
                libc::close(conn);
                0
            }
        });
        drop(listener);
        let client = TcpStream::connect(server_addr).expect("connect");
        let client_addr = client.local_addr().expect("addr");
        let mut byte = [0u8; 1];
        // SAFETY: valid buffer; blocks until the child accepted.
        assert_eq!(
            unsafe { libc::read(accepted_rx, byte.as_mut_ptr().cast(), 1) },
            1,
            "the child accepted"
        );
        let comm_of_child = std::fs::read_to_string(format!("/proc/{server_pid}/comm"))
            .expect("child comm")
            .trim_end()
            .to_owned();

        let walks_before = tracer.iter_stats().owners_named;
        let incoming = the_active(&tracer, server_addr, client_addr);
        assert_eq!(
            incoming.tuple.pid, server_pid as u32,
            "the accepting process, before any I/O"
        );
        assert_eq!(incoming.cgroup_id, theirs, "the accepting process's cgroup");
        assert_eq!(
            tracer::model::Comm::new(incoming.comm).to_string(),
            comm_of_child,
            "the accepting process's name"
        );
        assert_eq!((incoming.sent_bytes, incoming.recv_bytes), (0, 0));
        assert!(
            tracer.iter_stats().owners_named > walks_before,
            "named by the walk: {:?}",
            tracer.iter_stats()
        );

        // SAFETY: our pipe; lets the child close its side.
        assert_eq!(unsafe { libc::write(close_tx, b"c".as_ptr().cast(), 1) }, 1);
        wait_ok(server_pid);
        drop(client);
        let closed = collect_closed(&tracer, netns, |c| c.len() >= 2);
        std::fs::remove_dir(&dir).expect("remove the test cgroup");
        let ended = the_one(&closed, server_addr, client_addr);
        assert_eq!(
            ended.tuple.pid, server_pid as u32,
            "the same owner at the close"
        );
        for fd in [accepted_rx, accepted_tx, close_rx, close_tx] {
            // SAFETY: our descriptors.
            unsafe { libc::close(fd) };
        }
    });
}
