//! Tracepoint record layouts, resolved at load time from tracefs `format` files.
//!
//! Tracepoint fields are a stable-ish ABI, but their offsets have moved between kernels (e.g. the
//! `protocol` field of `sock:inet_sock_set_state` grew from one to two bytes). Userspace parses the
//! running kernel's format file and hands the offsets to the programs as a global, so the same
//! object reads the right bytes everywhere.

/// Byte offsets of the `sock:inet_sock_set_state` fields within the tracepoint record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InetSockSetStateFormat {
    pub skaddr: u16,
    pub oldstate: u16,
    pub newstate: u16,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub protocol: u16,
    /// Size in bytes of the `protocol` field (1 on old kernels, 2 since 5.6).
    pub protocol_size: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub saddr_v6: u16,
    pub daddr_v6: u16,
}

impl InetSockSetStateFormat {
    /// All offsets zero: the placeholder the eBPF globals start from, patched at load time.
    pub const UNRESOLVED: Self = Self {
        skaddr: 0,
        oldstate: 0,
        newstate: 0,
        sport: 0,
        dport: 0,
        family: 0,
        protocol: 0,
        protocol_size: 0,
        saddr: 0,
        daddr: 0,
        saddr_v6: 0,
        daddr_v6: 0,
    };
}
