//! The packet capture (`cgroup_skb` ingress and egress on the cgroup v2 root): what it copies to
//! userspace and how it is configured. Owner: `tracer-ebpf/src/packet/` (kernel side) and
//! `tracer/src/kernel/packet.rs` (loader, ring reader). Minimum kernel: 5.8 (ring buffer; the
//! `cgroup_skb` hooks themselves exist since 4.10).

/// Most ports the capture matches (sport or dport); the rest of [`CaptureConfig::ports`] is 0.
pub const MAX_CAPTURE_PORTS: usize = 8;

/// Most payload bytes one record carries (the configurable snap length is capped here).
pub const MAX_SNAPLEN: u32 = 4096;

/// Default snap length: the first 512 bytes of each DNS payload.
pub const DEFAULT_SNAPLEN: u32 = 512;

/// Direction of a captured packet, as its socket saw it: sent by it.
pub const PACKET_EGRESS: u8 = 1;
/// Received by it.
pub const PACKET_INGRESS: u8 = 2;

/// What a record carries: a DNS message (UDP payload, or a TCP segment's payload to reassemble).
/// HTTP transactions share the ring with kind [`crate::http::PACKET_KIND_HTTP`].
pub const PACKET_KIND_DNS: u8 = 1;

/// The capture's configuration, a read-only global (`NT_CAPTURE_CONFIG`) set at load time, so
/// the verifier sees constants and drops the unused port comparisons.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Ports whose packets are DNS (either end), host byte order; unused slots 0.
    pub ports: [u16; MAX_CAPTURE_PORTS],
    /// Payload bytes copied per packet, 1..=[`MAX_SNAPLEN`].
    pub snaplen: u32,
    /// 1 when the capture runs (the programs return at once otherwise).
    pub enabled: u32,
    /// 1 when TCP payload on any port (other than `ports`) goes through the HTTP/1.x parser
    /// (`tracer-ebpf/src/packet/http.rs`); 0: TCP packets off `ports` are rejected on their
    /// ports, as UDP ones.
    pub http: u32,
    /// Bytes waiting in the ring from which a record wakes the reader up; below, records are
    /// written without a wake-up and the reader finds them at its next timed poll or call. 0:
    /// the kernel's default (a wake-up whenever the reader has caught up, i.e. one per record
    /// at a steady rate: a context switch per HTTP transaction).
    pub wakeup_bytes: u32,
}

// The loader writes this struct over the global's bytes: the layout is the ABI.
const _: () = {
    assert!(core::mem::size_of::<CaptureConfig>() == 32);
    assert!(core::mem::offset_of!(CaptureConfig, wakeup_bytes) == 28);
    assert!(core::mem::offset_of!(CaptureConfig, ports) == 0);
    assert!(core::mem::offset_of!(CaptureConfig, snaplen) == 16);
    assert!(core::mem::offset_of!(CaptureConfig, enabled) == 20);
    assert!(core::mem::offset_of!(CaptureConfig, http) == 24);
};

impl CaptureConfig {
    /// Capture off.
    pub const DISABLED: Self = Self {
        ports: [0; MAX_CAPTURE_PORTS],
        snaplen: DEFAULT_SNAPLEN,
        enabled: 0,
        http: 0,
        wakeup_bytes: 0,
    };
}

/// The fixed part of a ring record of the capture (`NT_PACKETS`); `captured_len` payload bytes
/// follow it. Addresses and ports are as on the wire of the packet: `saddr:sport` sent it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketHeader {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the program ran.
    pub timestamp_ns: u64,
    /// Socket cookie of the socket that sent ([`PACKET_EGRESS`]) or receives
    /// ([`PACKET_INGRESS`]) the packet; 0 without a socket.
    pub cookie: u64,
    /// cgroup v2 id of the socket's owner (`bpf_skb_cgroup_id`); 0 if unknown.
    pub cgroup_id: u64,
    /// TCP: sequence number of the payload's first byte; UDP: 0.
    pub seq: u32,
    /// Network namespace inode of the socket; 0 if unknown.
    pub netns: u32,
    /// The whole L4 payload length of the packet (can exceed `captured_len`).
    pub payload_len: u32,
    /// Payload bytes that follow this header.
    pub captured_len: u32,
    /// Source address (IPv4 in the first 4 bytes, rest 0).
    pub saddr: [u8; 16],
    /// Destination address.
    pub daddr: [u8; 16],
    /// Source port, host byte order.
    pub sport: u16,
    /// Destination port, host byte order.
    pub dport: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub protocol: u8,
    /// [`PACKET_EGRESS`] or [`PACKET_INGRESS`].
    pub direction: u8,
    /// [`PACKET_KIND_DNS`].
    pub kind: u8,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10); UDP: 0.
    pub tcp_flags: u8,
    pub _pad: [u8; 6],
}

/// Size of [`PacketHeader`].
pub const PACKET_HEADER_LEN: usize = core::mem::size_of::<PacketHeader>();
