//! TCP state transitions per socket, from the `sock:inet_sock_set_state` tracepoint (4.16+;
//! the tracer's floor is 5.8 for the ring buffer).
//!
//! The tracepoint fires in process and softirq context alike, so nothing here looks at `current`:
//! the record is keyed by the socket's address and carries the tuple from the tracepoint itself.

use aya_ebpf::{
    Global,
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use tracer_common::{
    counters::Counter,
    tcp_state::{MAX_TRANSITIONS, TcpStateRecord, TcpTransition},
    tracepoint::InetSockSetStateFormat,
};

use crate::counters::bump;

use tracer_common::linux::{AF_INET, AF_INET6};

const IPPROTO_TCP: u16 = tracer_common::linux::IPPROTO_TCP as u16;

/// Field offsets of the tracepoint record, patched at load time from the running kernel's
/// tracefs `format` file.
#[unsafe(no_mangle)]
static NT_INET_SOCK_SET_STATE: Global<InetSockSetStateFormat> =
    Global::new(InetSockSetStateFormat::UNRESOLVED);

/// Socket address -> transitions seen. Sized by userspace at load time.
#[map(name = "NT_TCP_STATES")]
static NT_TCP_STATES: HashMap<u64, TcpStateRecord> = HashMap::with_max_entries(1, 0);

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn nt_tcp_state(ctx: TracePointContext) -> u32 {
    if try_nt_tcp_state(&ctx).is_err() {
        bump(Counter::TracepointReadFailed);
    }
    0
}

/// One tracepoint field, read at its offset from the format file.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u16) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel copies `size_of::<T>()` bytes from the record; a bad offset
    // makes the helper fail, it cannot fault.
    unsafe { ctx.read_at::<T>(usize::from(offset)) }
}

fn try_nt_tcp_state(ctx: &TracePointContext) -> Result<(), i32> {
    let format = NT_INET_SOCK_SET_STATE.load();
    let protocol: u16 = if format.protocol_size == 1 {
        u16::from(field::<u8>(ctx, format.protocol)?)
    } else {
        field::<u16>(ctx, format.protocol)?
    };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let skaddr: u64 = field(ctx, format.skaddr)?;
    let old: i32 = field(ctx, format.oldstate)?;
    let new: i32 = field(ctx, format.newstate)?;
    let family: u16 = field(ctx, format.family)?;

    let record = match record_for(skaddr) {
        Some(record) => record,
        None => {
            bump(Counter::TcpStateMapFull);
            return Ok(());
        }
    };
    // SAFETY: `record` points into a map value that stays valid for this program run; concurrent
    // writers for one socket are serialised by the socket lock (state changes hold it).
    let record = unsafe { &mut *record };
    record.family = family;
    record.sport = field(ctx, format.sport)?;
    record.dport = field(ctx, format.dport)?;
    if family == AF_INET {
        let saddr: [u8; 4] = field(ctx, format.saddr)?;
        let daddr: [u8; 4] = field(ctx, format.daddr)?;
        record.saddr = [0; 16];
        record.daddr = [0; 16];
        copy4(&mut record.saddr, saddr);
        copy4(&mut record.daddr, daddr);
    } else if family == AF_INET6 {
        record.saddr = field(ctx, format.saddr_v6)?;
        record.daddr = field(ctx, format.daddr_v6)?;
    }
    let index = usize::from(record.count);
    if index < MAX_TRANSITIONS {
        if let Some(slot) = record.transitions.get_mut(index) {
            // TCP states are 1..=12: the truncation is lossless.
            *slot = TcpTransition {
                old: old as u8,
                new: new as u8,
            };
        }
    } else {
        bump(Counter::TcpStateOverflow);
    }
    record.count = record.count.saturating_add(1);
    Ok(())
}

/// Writes an IPv4 address into the first four bytes of a 16-byte address slot.
fn copy4(dst: &mut [u8; 16], src: [u8; 4]) {
    let [d0, d1, d2, d3, ..] = dst;
    let [s0, s1, s2, s3] = src;
    (*d0, *d1, *d2, *d3) = (s0, s1, s2, s3);
}

/// The record for `skaddr`, created empty on first sight. `None` when the map is full.
#[inline(always)]
fn record_for(skaddr: u64) -> Option<*mut TcpStateRecord> {
    if let Some(record) = NT_TCP_STATES.get_ptr_mut(skaddr) {
        return Some(record);
    }
    let empty = TcpStateRecord::default();
    // BPF_NOEXIST: if another CPU created it first, our insert fails and the lookup finds theirs.
    let _ = NT_TCP_STATES.insert(skaddr, empty, u64::from(aya_ebpf::bindings::BPF_NOEXIST));
    NT_TCP_STATES.get_ptr_mut(skaddr)
}
