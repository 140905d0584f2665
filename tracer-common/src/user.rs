//! Userspace-only impls: these types are plain old data, so aya may copy them to and from maps.

use crate::{
    tcp_state::{TcpStateRecord, TcpTransition},
    tracepoint::InetSockSetStateFormat,
};

// SAFETY: `#[repr(C)]`, only integer fields and arrays of them, no implicit padding
// (checked by the size assertions below), so every bit pattern is valid.
unsafe impl aya::Pod for TcpStateRecord {}
// SAFETY: as above.
unsafe impl aya::Pod for TcpTransition {}
// SAFETY: as above.
unsafe impl aya::Pod for InetSockSetStateFormat {}

const _: () = assert!(core::mem::size_of::<TcpTransition>() == 2);
const _: () = assert!(
    core::mem::size_of::<TcpStateRecord>() == 8 + 32 + 2 * crate::tcp_state::MAX_TRANSITIONS
);
const _: () = assert!(core::mem::size_of::<InetSockSetStateFormat>() == 24);

// SAFETY: `#[repr(C)]`, integer fields and arrays only, explicit padding fields, sizes asserted.
unsafe impl aya::Pod for crate::conn::ConnKey {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::conn::ConnStats {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::conn::ClosedConn {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::offsets::KernelLayout {}

const _: () = assert!(core::mem::size_of::<crate::conn::ConnKey>() == 32);
const _: () = assert!(core::mem::size_of::<crate::conn::ConnTuple>() == 48);
const _: () = assert!(
    core::mem::size_of::<crate::conn::ConnStats>() == 48 + 8 * 7 + 4 * 3 + 4 + 8 + 8 + 16 + 8 + 32
);
const _: () = assert!(core::mem::size_of::<crate::conn::ClosedConn>() == 32 + 192);
// The layout the README documents (the stack appended after `comm`, padded to 8 bytes).
const _: () = assert!(core::mem::offset_of!(crate::conn::ConnStats, protocol_stack) == 152);
const _: () = assert!(core::mem::size_of::<crate::conn::BeforeStart>() == 32);
// sock + inet_sock_set_state + sock_length + the two tcp skaddrs + msghdr_msg_name + file.
const _: () =
    assert!(core::mem::size_of::<crate::offsets::KernelLayout>() == 52 + 24 + 8 + 4 + 2 + 24);

// SAFETY: `#[repr(C)]`, integer fields and arrays only, explicit padding fields, sizes asserted.
unsafe impl aya::Pod for crate::conn::UdpPeerSlotKey {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::conn::UdpPeerSlot {}

const _: () = assert!(core::mem::size_of::<crate::conn::UdpPeerSlotKey>() == 16);
const _: () = assert!(core::mem::size_of::<crate::conn::UdpPeerSlot>() == 20);

// SAFETY: `#[repr(C)]`, integer fields and arrays only, explicit padding fields, sizes asserted.
unsafe impl aya::Pod for crate::packet::CaptureConfig {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::packet::PacketHeader {}

const _: () = assert!(core::mem::size_of::<crate::packet::CaptureConfig>() == 16 + 16);
const _: () = assert!(core::mem::size_of::<crate::packet::PacketHeader>() == 24 + 16 + 32 + 8 + 8);

// SAFETY: `#[repr(C)]`, integer fields and arrays only, explicit padding fields, size asserted
// in `http.rs` (88 + HTTP_PATH_MAX, no implicit padding).
unsafe impl aya::Pod for crate::http::HttpTransaction {}

// SAFETY: `#[repr(C)]`, integers only, explicit padding.
unsafe impl aya::Pod for crate::tls::TlsKey {}
