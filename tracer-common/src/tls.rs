//! Types the TLS uprobes (`tracer-ebpf/src/tls/`) and their userspace owner
//! (`tracer/src/sources/tls/`) share.

/// Key of `NT_TLS_CONNS`: a TLS object (OpenSSL `SSL *`, GnuTLS session) of one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsKey {
    /// Thread-group id of the process.
    pub tgid: u32,
    pub _pad: u32,
    /// The object's address in that process.
    pub object: u64,
}

/// A read or write call's arguments from its entry to its return (`NT_TLS_ARGS`, per thread).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsArgs {
    /// The TLS object.
    pub object: u64,
    /// The call's buffer (plaintext to write, or the destination of a read).
    pub buf: u64,
    /// For `SSL_read_ex` / `SSL_write_ex`: where it writes the count moved; 0 for calls that
    /// return it.
    pub length_at: u64,
    /// The first socket (`struct sock *`) the thread sent or received on during the call (the
    /// socket-call path writes it), 0 if none: ties an object that names no descriptor.
    pub sk: u64,
    /// `PACKET_EGRESS` for a write, `PACKET_INGRESS` for a read.
    pub direction: u8,
    /// 1 when the object was not tied at the call's entry (counted in the kernel's count of
    /// such calls in flight, which the socket-call path reads first).
    pub untied: u8,
    pub _pad: [u8; 6],
}

/// Default size of `NT_TLS_CONNS` (tied TLS objects) and `NT_TLS_ARGS`.
pub const TLS_DEFAULT_MAX_OBJECTS: u32 = 4096;
