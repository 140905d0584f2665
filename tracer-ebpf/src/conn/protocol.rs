//! The protocol stack of a TCP connection, written into its entry of `NT_CONNS` (owned by
//! `conn`) by the packet capture, which classifies a socket's first payloads
//! (`packet/http.rs`). The capture keeps the stack in its socket storage until this write
//! succeeds, so the entry is written once per classification, and the close copies it with the
//! rest of the entry.
//!
//! Minimum kernel: the capture's (5.8); nothing here needs more than a hash lookup.

use tracer_common::counters::Counter;

use crate::counters::bump;

/// Writes `stack` (`ConnStats::protocol_stack`: api, application, encryption) into the entry
/// of TCP socket `sk`; false when it has none (yet), counted. Never creates an entry: the
/// connection's identity comes from the backends' hooks, not from a packet.
#[inline(always)]
pub fn set(sk: u64, stack: [u8; 3]) -> bool {
    let Some(stats) = super::tracked(sk) else {
        bump(Counter::ProtocolEntryMissing);
        return false;
    };
    // Plain byte stores: only the capture writes these bytes, and a socket's ingress and
    // egress that race write the stack of the same socket storage.
    stats.protocol_stack = stack;
    bump(Counter::ProtocolStackWritten);
    true
}
