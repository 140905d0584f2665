//! Loopback workloads of the privileged benchmarks (`overhead`, `capture`) and the way they are
//! measured in phases. See `benches/benches/overhead.rs` for why every thread is pinned to one
//! CPU and why phases keep their cheapest block.
//!
//! Workloads, on 127.0.0.1 sockets created once and reused by every measurement:
//! - `tcp_rr_64`: TCP request/response (TCP_NODELAY): the client writes 64 B, a server thread
//!   reads them and writes 64 B back, the client reads them. One iteration = one round trip.
//! - `tcp_bulk_64k`: the client writes 64 KiB per iteration; a receiver thread reads into a
//!   64 KiB buffer as fast as it can. A measurement ends when every byte written was read.
//! - `udp_echo_64`: a connected client sends a 64 B datagram (`send`) to an unconnected server
//!   thread, which echoes it (`recvfrom`, `sendto`); the client receives it (`recv`).
//! - `unrelated_syscalls`: `getppid()` in a loop, no socket: what a tracer costs work it does
//!   not trace (a syscall tracepoint would put every syscall on the kernel's slow path). One
//!   iteration = one call.
//!
//! Each measurement counts the send/receive syscalls both sides made and the packets they put
//! on the loopback wire (each is seen once leaving and once arriving): for TCP the segments the
//! two sockets sent by their own count (`TCP_INFO` `tcpi_segs_out`: data segments and pure ACKs,
//! so delayed and piggybacked ACKs are counted as they happened), for UDP the datagrams sent
//! (64 B, one packet each).

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, Shutdown, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::privileged::{pin_to_cpu, process_cpu_time};

const PAYLOAD: usize = 64;
const BULK_CHUNK: usize = 64 * 1024;

/// Blocks per workload per phase; the fastest is kept.
pub const BLOCKS: usize = 5;
/// Target duration of one block.
pub const BLOCK: Duration = Duration::from_millis(50);

/// One measurement: `iters` iterations took `wall` (and `cpu` of the process), `calls`
/// send/receive syscalls on both sides and `packets` packets on the wire.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub wall: Duration,
    pub cpu: Duration,
    pub iters: u64,
    pub calls: u64,
    pub packets: u64,
}

impl Sample {
    pub fn wall_per_iter(&self) -> f64 {
        self.wall.as_nanos() as f64 / self.iters.max(1) as f64
    }

    pub fn cpu_per_iter(&self) -> f64 {
        self.cpu.as_nanos() as f64 / self.iters.max(1) as f64
    }

    pub fn calls_per_iter(&self) -> f64 {
        self.calls as f64 / self.iters.max(1) as f64
    }

    pub fn packets_per_iter(&self) -> f64 {
        self.packets as f64 / self.iters.max(1) as f64
    }
}

/// Times `body` (wall and process CPU time); `body` returns the calls it counted.
fn timed(iters: u64, body: impl FnOnce() -> io::Result<u64>) -> io::Result<Sample> {
    let cpu = process_cpu_time();
    let start = Instant::now();
    let calls = body()?;
    let wall = start.elapsed();
    Ok(Sample {
        wall,
        cpu: process_cpu_time().saturating_sub(cpu),
        iters,
        calls,
        packets: 0,
    })
}

pub trait Workload {
    fn name(&self) -> &'static str;
    /// Runs `iters` iterations.
    fn run(&mut self, iters: u64) -> io::Result<Sample>;
}

/// The workloads a benchmark asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    TcpRr,
    TcpBulk,
    UdpEcho,
    Getppid,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::TcpRr => "tcp_rr_64",
            Self::TcpBulk => "tcp_bulk_64k",
            Self::UdpEcho => "udp_echo_64",
            Self::Getppid => "unrelated_syscalls",
        }
    }
}

/// Sets up the workloads of `kinds`, their peer threads pinned to `cpu` if given. One that
/// cannot set up its sockets is left out with a line naming `bench`.
pub fn workloads(bench: &str, cpu: Option<usize>, kinds: &[Kind]) -> Vec<Box<dyn Workload>> {
    kinds
        .iter()
        .filter_map(|&kind| {
            let made: io::Result<Box<dyn Workload>> = match kind {
                Kind::TcpRr => TcpRr::new(cpu).map(|w| Box::new(w) as _),
                Kind::TcpBulk => TcpBulk::new(cpu).map(|w| Box::new(w) as _),
                Kind::UdpEcho => UdpEcho::new(cpu).map(|w| Box::new(w) as _),
                Kind::Getppid => Ok(Box::new(Getppid) as _),
            };
            made.map_err(|err| {
                println!("{bench}: {}: cannot set up the sockets: {err}", kind.name());
            })
            .ok()
        })
        .collect()
}

/// Reads exactly `buf.len()` bytes, adding each read syscall to `calls`. `Ok(false)` on end of
/// stream before the first byte.
fn read_full(stream: &mut TcpStream, buf: &mut [u8], calls: &mut u64) -> io::Result<bool> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        *calls += 1;
        match stream.read(rest) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(true)
}

/// Writes all of `buf`, adding each write syscall to `calls`.
fn write_full(stream: &mut TcpStream, buf: &[u8], calls: &mut u64) -> io::Result<()> {
    let mut written = 0;
    while let Some(rest) = buf.get(written..).filter(|rest| !rest.is_empty()) {
        *calls += 1;
        match stream.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Segments a TCP socket has sent so far (`tcpi_segs_out`: data, pure ACKs and retransmits;
/// Linux 4.2+). A 32-bit counter: differences are taken with wrapping.
fn segs_out(fd: RawFd) -> io::Result<u32> {
    // SAFETY: an all-zero tcp_info is a valid value of this plain C struct.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes; the kernel writes at most `len` and sets it.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // A kernel whose tcp_info ends before the field (older than 4.2) left it 0: say so rather
    // than count no packets.
    let end = std::mem::offset_of!(libc::tcp_info, tcpi_segs_out) + 4;
    if (len as usize) < end {
        return Err(io::Error::other(
            "TCP_INFO has no tcpi_segs_out (Linux < 4.2)",
        ));
    }
    Ok(info.tcpi_segs_out)
}

/// Segments both ends of a TCP connection have sent so far.
fn pair_segs_out(a: &impl AsRawFd, b: &impl AsRawFd) -> io::Result<u32> {
    Ok(segs_out(a.as_raw_fd())?.wrapping_add(segs_out(b.as_raw_fd())?))
}

/// Joins a peer thread, reporting how it failed.
fn join(name: &str, handle: Option<JoinHandle<io::Result<()>>>) {
    match handle.map(JoinHandle::join) {
        Some(Ok(Err(err))) => eprintln!("{name}: peer thread failed: {err}"),
        Some(Err(_)) => eprintln!("{name}: peer thread panicked"),
        _ => {}
    }
}

/// Spawns a workload's peer thread, pinned to `cpu` (the measuring thread's CPU) if given.
fn spawn(
    name: &str,
    cpu: Option<usize>,
    body: impl FnOnce() -> io::Result<()> + Send + 'static,
) -> io::Result<JoinHandle<io::Result<()>>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            if let Some(cpu) = cpu {
                pin_to_cpu(cpu)?;
            }
            body()
        })
}

/// `tcp_rr_64`.
struct TcpRr {
    client: TcpStream,
    /// The server thread's socket, for its segment count only.
    server_socket: TcpStream,
    /// Calls of the server thread. It adds a round trip's read and write calls before writing
    /// the response, so that once the client has the response, the count includes them.
    server_calls: Arc<AtomicU64>,
    server: Option<JoinHandle<io::Result<()>>>,
}

impl TcpRr {
    fn new(cpu: Option<usize>) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let client = TcpStream::connect(listener.local_addr()?)?;
        let (mut server, _) = listener.accept()?;
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        let server_socket = server.try_clone()?;
        let server_calls = Arc::new(AtomicU64::new(0));
        let calls = Arc::clone(&server_calls);
        let server = spawn("tcp_rr server", cpu, move || {
            let mut buf = [0u8; PAYLOAD];
            loop {
                let mut n = 0;
                if !read_full(&mut server, &mut buf, &mut n)? {
                    return Ok(());
                }
                calls.fetch_add(n + 1, Ordering::Relaxed);
                let mut writes = 0;
                write_full(&mut server, &buf, &mut writes)?;
                calls.fetch_add(writes - 1, Ordering::Relaxed);
            }
        })?;
        Ok(Self {
            client,
            server_socket,
            server_calls,
            server: Some(server),
        })
    }
}

impl Workload for TcpRr {
    fn name(&self) -> &'static str {
        Kind::TcpRr.name()
    }

    fn run(&mut self, iters: u64) -> io::Result<Sample> {
        let request = [7u8; PAYLOAD];
        let mut response = [0u8; PAYLOAD];
        let server_before = self.server_calls.load(Ordering::Relaxed);
        let segs_before = pair_segs_out(&self.client, &self.server_socket)?;
        let mut sample = timed(iters, || {
            let mut calls = 0;
            for _ in 0..iters {
                write_full(&mut self.client, &request, &mut calls)?;
                if !read_full(&mut self.client, &mut response, &mut calls)? {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            Ok(calls)
        })?;
        sample.calls += self.server_calls.load(Ordering::Relaxed) - server_before;
        let segs = pair_segs_out(&self.client, &self.server_socket)?.wrapping_sub(segs_before);
        sample.packets = u64::from(segs);
        Ok(sample)
    }
}

impl Drop for TcpRr {
    fn drop(&mut self) {
        let _ = self.client.shutdown(Shutdown::Both);
        join(self.name(), self.server.take());
    }
}

/// `tcp_bulk_64k`.
struct TcpBulk {
    sender: TcpStream,
    /// The receiver thread's socket, for its segment count (ACKs) only.
    receiver_socket: TcpStream,
    chunk: Vec<u8>,
    /// Bytes written so far.
    sent: u64,
    /// Bytes read so far by the receiver (published after its call count).
    received: Arc<AtomicU64>,
    receiver_calls: Arc<AtomicU64>,
    receiver: Option<JoinHandle<io::Result<()>>>,
}

impl TcpBulk {
    fn new(cpu: Option<usize>) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let sender = TcpStream::connect(listener.local_addr()?)?;
        let (mut receiver, _) = listener.accept()?;
        let receiver_socket = receiver.try_clone()?;
        let received = Arc::new(AtomicU64::new(0));
        let receiver_calls = Arc::new(AtomicU64::new(0));
        let (bytes, calls) = (Arc::clone(&received), Arc::clone(&receiver_calls));
        let receiver = spawn("tcp_bulk receiver", cpu, move || {
            let mut buf = vec![0u8; BULK_CHUNK];
            loop {
                let result = receiver.read(&mut buf);
                calls.fetch_add(1, Ordering::Relaxed);
                match result {
                    Ok(0) => return Ok(()),
                    Ok(n) => {
                        bytes.fetch_add(n as u64, Ordering::Release);
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(err),
                }
            }
        })?;
        Ok(Self {
            sender,
            receiver_socket,
            chunk: vec![7u8; BULK_CHUNK],
            sent: 0,
            received,
            receiver_calls,
            receiver: Some(receiver),
        })
    }

    /// Waits until the receiver has read every byte written, yielding the CPU to it (they
    /// may share one).
    fn wait_received(&self) -> io::Result<()> {
        while self.received.load(Ordering::Acquire) < self.sent {
            if self.receiver.as_ref().is_none_or(JoinHandle::is_finished) {
                return Err(io::Error::other("the receiver thread stopped"));
            }
            std::thread::yield_now();
        }
        Ok(())
    }
}

impl Workload for TcpBulk {
    fn name(&self) -> &'static str {
        Kind::TcpBulk.name()
    }

    fn run(&mut self, iters: u64) -> io::Result<Sample> {
        // The previous run waited for the receiver, so its calls from here on read this run's
        // bytes (the read it is blocked in returns this run's first bytes).
        let receiver_before = self.receiver_calls.load(Ordering::Acquire);
        let segs_before = pair_segs_out(&self.sender, &self.receiver_socket)?;
        let mut sample = timed(iters, || {
            let mut calls = 0;
            for _ in 0..iters {
                write_full(&mut self.sender, &self.chunk, &mut calls)?;
                self.sent += self.chunk.len() as u64;
            }
            self.wait_received()?;
            Ok(calls)
        })?;
        sample.calls += self.receiver_calls.load(Ordering::Acquire) - receiver_before;
        let segs = pair_segs_out(&self.sender, &self.receiver_socket)?.wrapping_sub(segs_before);
        sample.packets = u64::from(segs);
        Ok(sample)
    }
}

impl Drop for TcpBulk {
    fn drop(&mut self) {
        let _ = self.sender.shutdown(Shutdown::Both);
        join(self.name(), self.receiver.take());
    }
}

/// `udp_echo_64`.
struct UdpEcho {
    client: UdpSocket,
    /// Calls of the server thread, added before it sends the echo (as in [`TcpRr`]).
    server_calls: Arc<AtomicU64>,
    server: Option<JoinHandle<io::Result<()>>>,
}

impl UdpEcho {
    fn new(cpu: Option<usize>) -> io::Result<Self> {
        let server = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        client.connect(server.local_addr()?)?;
        // A lost datagram (none should be: one is in flight at a time) fails the run instead
        // of hanging it.
        client.set_read_timeout(Some(Duration::from_secs(2)))?;
        let server_calls = Arc::new(AtomicU64::new(0));
        let calls = Arc::clone(&server_calls);
        let server = spawn("udp_echo server", cpu, move || {
            let mut buf = [0u8; PAYLOAD];
            loop {
                let (n, from) = server.recv_from(&mut buf)?;
                if n == 0 {
                    return Ok(()); // the client's empty stop datagram
                }
                calls.fetch_add(2, Ordering::Relaxed);
                server.send_to(buf.get(..n).unwrap_or_default(), from)?;
            }
        })?;
        Ok(Self {
            client,
            server_calls,
            server: Some(server),
        })
    }
}

impl Workload for UdpEcho {
    fn name(&self) -> &'static str {
        Kind::UdpEcho.name()
    }

    fn run(&mut self, iters: u64) -> io::Result<Sample> {
        let request = [7u8; PAYLOAD];
        let mut response = [0u8; PAYLOAD];
        let server_before = self.server_calls.load(Ordering::Relaxed);
        let mut sample = timed(iters, || {
            for _ in 0..iters {
                if self.client.send(&request)? != PAYLOAD
                    || self.client.recv(&mut response)? != PAYLOAD
                {
                    return Err(io::Error::other("short datagram"));
                }
            }
            Ok(2 * iters)
        })?;
        let server_calls = self.server_calls.load(Ordering::Relaxed) - server_before;
        sample.calls += server_calls;
        // The client's datagrams, and the server's echoes (one send per two calls).
        sample.packets = iters + server_calls / 2;
        Ok(sample)
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        if self.client.send(&[]).is_ok() {
            join(self.name(), self.server.take());
        }
    }
}

/// `unrelated_syscalls`: `getppid()` in a loop on the measuring thread (pinned like the others).
struct Getppid;

impl Workload for Getppid {
    fn name(&self) -> &'static str {
        Kind::Getppid.name()
    }

    fn run(&mut self, iters: u64) -> io::Result<Sample> {
        timed(iters, || {
            for _ in 0..iters {
                // SAFETY: getppid has no preconditions and cannot fail. black_box: the call is
                // the workload, it must not be hoisted or merged.
                std::hint::black_box(unsafe { libc::getppid() });
            }
            Ok(iters)
        })
    }
}

/// The state of one workload across criterion's runs.
#[derive(Default)]
pub struct Status {
    /// Criterion ran it (not filtered out on the command line).
    pub ran: bool,
    pub failure: Option<io::Error>,
}

/// One criterion iteration batch of `workload`.
pub fn criterion_batch(workload: &mut dyn Workload, iters: u64, status: &mut Status) -> Duration {
    status.ran = true;
    if status.failure.is_some() {
        return Duration::from_nanos(iters);
    }
    match workload.run(iters) {
        Ok(sample) => sample.wall,
        Err(err) => {
            status.failure = Some(err);
            Duration::from_nanos(iters)
        }
    }
}

/// The blocks of one workload in one phase: wall and CPU ns per iteration, calls and packets
/// per iteration.
#[derive(Clone, Debug, Default)]
pub struct Phase {
    pub wall: Vec<f64>,
    pub cpu: Vec<f64>,
    pub calls: f64,
    pub packets: f64,
}

impl Phase {
    /// The phase's wall time per iteration: its fastest block. Other jobs on the machine only
    /// ever add time to a block, so the fastest is the least disturbed.
    pub fn wall(&self) -> f64 {
        self.wall.iter().copied().fold(f64::INFINITY, f64::min)
    }

    /// The phase's CPU time per iteration: its cheapest block, likewise.
    pub fn cpu(&self) -> f64 {
        self.cpu.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// Iterations for one block of about [`BLOCK`] (untraced).
pub fn calibrate(workload: &mut dyn Workload) -> io::Result<u64> {
    let mut iters = 16u64;
    loop {
        let sample = workload.run(iters)?;
        if sample.wall >= BLOCK / 4 || iters >= 1 << 30 {
            let per_iter = sample.wall_per_iter().max(1.0);
            return Ok(((BLOCK.as_nanos() as f64 / per_iter) as u64).max(1));
        }
        iters *= 2;
    }
}

/// One phase of one workload: a short warm-up (which also creates the traced connections'
/// entries), then [`BLOCKS`] blocks.
pub fn phase(workload: &mut dyn Workload, iters: u64) -> io::Result<Phase> {
    workload.run((iters / 10).max(1))?;
    let mut phase = Phase::default();
    let mut total = Sample::default();
    for _ in 0..BLOCKS {
        let sample = workload.run(iters)?;
        phase.wall.push(sample.wall_per_iter());
        phase.cpu.push(sample.cpu_per_iter());
        total.iters += sample.iters;
        total.calls += sample.calls;
        total.packets += sample.packets;
    }
    phase.calls = total.calls_per_iter();
    phase.packets = total.packets_per_iter();
    Ok(phase)
}
