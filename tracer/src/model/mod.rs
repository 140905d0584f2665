//! The userspace data model handed to callers.
//!
//! - [`tuple`]: [`ConnectionTuple`], [`Protocol`], [`Family`], [`Direction`].
//! - [`counters`]: [`StatCounters`] and the delta/underflow rules.
//! - [`cookie`]: the 64-bit cookie re-hash.
//! - [`ephemeral`]: the ephemeral port range and classification.
//! - [`connection`]: [`ConnectionStats`] and its small parts.
//! - [`nat`], [`protocol`], [`dns`], [`usm`], [`via`]: enrichment types.
//! - [`telemetry`], [`delta`]: what a client gets back.
//!
//! # Identity
//! A connection's identity is its [`ConnectionTuple`], the owner pid included, and its
//! [`ConnectionStats::cookie`] (the kernel entry's random cookie hashed with that tuple). A
//! client sees one identity per connection from the first report to the close: open entries
//! whose tuple the kernel has not completed yet (no owner before `accept()`, no source port
//! before a connect's SYN is sent) are held back ([`crate::decode::identity_complete`]), and the
//! kernel never changes a complete tuple. Each identity a client was shown ends exactly once
//! ([`ConnectionStats::end_reason`]).

pub mod comm;
pub mod connection;
pub mod cookie;
pub mod counters;
pub mod delta;
pub mod dns;
pub mod ephemeral;
pub mod nat;
pub mod protocol;
pub mod telemetry;
pub mod tuple;
pub mod usm;
pub mod via;

pub use comm::Comm;
pub use connection::{BeforeStart, ConnectionStats, ContainerIds, EndReason, TcpFailures};
pub use cookie::{connection_cookie, hash_cookie_bytes};
pub use counters::{CounterDelta, PACKET_WRAP_MAX_DELTA, StatCounters};
pub use delta::{Connections, Delta};
pub use dns::{DnsKey, DnsQueryType, DnsStats, DnsStatsBatch, DomainStats};
pub use ephemeral::{EphemeralPort, EphemeralPortRange, IP_LOCAL_PORT_RANGE};
pub use nat::IpTranslation;
pub use protocol::ProtocolStack;
pub use telemetry::{CounterSet, StateTelemetry};
pub use tuple::{ConnectionTuple, Direction, Family, Protocol, TUPLE_BYTES_MAX};
pub use usm::{
    AppProtocol, HttpKey, HttpMethod, HttpStats, LATENCY_RELATIVE_ACCURACY, LatencySketch,
    RequestStats, UsmStats,
};
pub use via::Via;
