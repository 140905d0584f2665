//! Privileged integration tests. Run only through `cargo xtask test`, as root, with
//! `--test-threads=1` (they load programs into the shared kernel), each in its own network
//! namespace.

// Tests and their helpers fail by panicking, with the reason (see tests/src/lib.rs).
#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_used,
    clippy::indexing_slicing
)]

mod api;
mod containers;
mod crash;
mod dns;
mod environment;
mod faults;
mod http;
mod identity;
mod io_paths;
mod lifecycle;
mod limits;
mod nat;
mod nettrace_view;
mod ownership;
mod preexisting;
mod protocol_servers;
mod protocols;
mod real_servers;
mod routes;
mod serve;
mod soak;
mod tcp_bytes;
mod tcp_close;
mod tcp_counters;
mod tcp_failures;
mod tcp_state;
mod tls;
mod udp;
