//! Read-time refresh of the copied TCP counters, for the BPF iterators (`crate::iter`): the only
//! way into `NT_CONNS` from outside the data path.
//!
//! Only the copies of the kernel's own counters change (packets, retransmits, RTT). `updated_ns`
//! does not: it is the connection's last activity, which drives idle expiry, and a read is no
//! activity.

use tracer_common::{conn::IPPROTO_TCP, counters::Counter};

use super::{layout, sock};
use crate::counters::bump;

/// If TCP socket `sk` is tracked (under its own address), copies its `tcp_sock` counters into
/// its entry now and returns true. Never creates an entry.
#[inline(always)]
pub fn refresh_tracked_tcp(sk: u64) -> bool {
    let Some(stats) = super::tracked(sk) else {
        return false;
    };
    if stats.tuple.protocol != IPPROTO_TCP {
        return false;
    }
    let offsets = &layout::layout().sock;
    if sock::refresh_tcp(sk, offsets, stats).is_err() {
        bump(Counter::KernelReadFailed);
        return false;
    }
    true
}
