//! Where an outgoing connection leaves this host: the route's gateway and interface.

use std::{net::IpAddr, sync::Arc};

/// The route a connection's packets take out of this host, as the kernel's routing table says
/// (`RTM_GETROUTE`, the same answer as `ip route get`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Via {
    /// The next hop, `None` when the destination is on a directly connected network.
    pub gateway: Option<IpAddr>,
    /// Output interface index (in the tracer's network namespace).
    pub interface_index: u32,
    /// Output interface name, when the interface still exists.
    pub interface_name: Option<Arc<str>>,
}
