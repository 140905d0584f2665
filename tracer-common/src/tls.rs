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

/// A read call's arguments from its entry to its return (`NT_TLS_ARGS`, per thread).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsArgs {
    /// The TLS object.
    pub object: u64,
    /// The destination buffer.
    pub buf: u64,
    /// For `SSL_read_ex`: where it writes the count read; 0 for calls that return it.
    pub length_at: u64,
}

/// Default size of `NT_TLS_CONNS` (tied TLS objects) and `NT_TLS_ARGS`.
pub const TLS_DEFAULT_MAX_OBJECTS: u32 = 4096;
