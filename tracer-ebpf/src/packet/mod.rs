//! The packet capture: `cgroup_skb` ingress and egress programs on the cgroup v2 root, so they
//! see the packets of every socket of every process, in every network namespace (Datadog's
//! packet socket in the root namespace misses traffic that never leaves a container's
//! namespace). It copies DNS messages, and hands TCP segments on other ports to the HTTP/1.x
//! parser (`http.rs`), which writes finished transactions to the same ring.
//!
//! Owner of `NT_PACKETS` (ring of [`PacketHeader`] + payload, and of `HttpTransaction` records),
//! `NT_PACKET_SCRATCH` and the global `NT_CAPTURE_CONFIG`. Minimum kernel 5.8 (the ring buffer;
//! the hooks are 4.10, the socket cookie 4.12, `bpf_skb_cgroup_id` 4.18, socket storage 5.2).
//! Always returns 1: the capture never drops a packet.
//!
//! Cost: a packet is triaged from its linear bytes, read in place (direct packet access: no
//! helper call): not TCP or UDP, a later fragment, or not on a configured port and not a TCP
//! segment with payload (or FIN/RST) with HTTP on: rejected after at most eight port
//! comparisons, nothing counted (a per-CPU counter on every packet would cost more than the
//! check). Pure ACKs stay on that path: their payload length is computed from `skb->len` and
//! the header lengths. Packets on a configured port, or whose headers are not in the linear
//! area, are read again with `bpf_skb_load_bytes`.

use aya_ebpf::{
    Global,
    bindings::{__sk_buff, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_skb_cgroup_id, bpf_skb_load_bytes},
    macros::{cgroup_skb, map},
    maps::{PerCpuArray, RingBuf},
    programs::SkBuffContext,
};
use tracer_common::{
    conn::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP},
    counters::Counter,
    packet::{
        CaptureConfig, MAX_CAPTURE_PORTS, MAX_SNAPLEN, PACKET_EGRESS, PACKET_HEADER_LEN,
        PACKET_INGRESS, PACKET_KIND_DNS, PacketHeader,
    },
};

use crate::counters::bump;

pub(crate) mod http;

pub(crate) use http::finish as http_finish;

#[unsafe(no_mangle)]
static NT_CAPTURE_CONFIG: Global<CaptureConfig> = Global::new(CaptureConfig::DISABLED);

/// Captured packets. Sized from `Config` at load time.
#[map(name = "NT_PACKETS")]
static NT_PACKETS: RingBuf = RingBuf::with_byte_size(4096, 0);

/// One record under construction per CPU: the header then up to [`MAX_SNAPLEN`] payload bytes
/// (too large for the 512-byte stack), sent with `bpf_ringbuf_output` at its real length so a
/// 60-byte query takes 60 bytes of ring, not the snap length.
#[repr(C)]
struct Scratch {
    header: PacketHeader,
    payload: [u8; MAX_SNAPLEN as usize],
}

#[map(name = "NT_PACKET_SCRATCH")]
static NT_PACKET_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86DD;
/// A DNS header: anything shorter on UDP is not a DNS message.
const DNS_HEADER_LEN: u32 = 12;

#[cgroup_skb(ingress)]
pub fn nt_packet_in(ctx: SkBuffContext) -> i32 {
    capture(&ctx, PACKET_INGRESS);
    1
}

#[cgroup_skb(egress)]
pub fn nt_packet_out(ctx: SkBuffContext) -> i32 {
    capture(&ctx, PACKET_EGRESS);
    1
}

/// Where a packet's L4 header starts and what the IP header said.
pub(super) struct Ip {
    pub family: u16,
    pub protocol: u8,
    pub l4: u32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

#[inline(always)]
fn capture(ctx: &SkBuffContext, direction: u8) {
    let skb = ctx.skb.skb;
    // SAFETY: context field reads, rewritten by the verifier.
    let (protocol, len) = unsafe { ((*skb).protocol, (*skb).len) };
    // The config is read field by field where it is needed (a whole-struct load is 24 bytes
    // of loads and stack spills that a rejected packet does not need).
    let config_ptr = config_ptr();
    // SAFETY: the global is initialised (by the loader, or to DISABLED) and read-only.
    if unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*config_ptr).enabled)) } == 0 {
        return;
    }
    let segment = match triage_in_place(skb, protocol, len, config_ptr) {
        Triage::Reject => return,
        Triage::Http(segment) => segment,
        Triage::Look => match look(skb, protocol, len, config_ptr, direction) {
            Some(segment) => segment,
            None => return,
        },
    };
    // The HTTP parser's one call site: with two (a segment in place, one read again), the
    // verifier walked the parser and its classifier once for each, about half of this
    // program's verification.
    http::segment(skb, protocol, direction, &segment);
}

/// A packet on a configured port, or one whose headers are not all in the linear area: read
/// again with the helper, which also reaches paged data. Captures it if it is on a configured
/// port; otherwise returns the TCP segment for the HTTP parser, if any.
#[inline(always)]
fn look(
    skb: *mut __sk_buff,
    protocol: u32,
    len: u32,
    config_ptr: *const CaptureConfig,
    direction: u8,
) -> Option<Segment> {
    let ip = ip_header(skb, protocol)?;
    let ports = load::<[u8; 4]>(skb, ip.l4).ok()?;
    let sport = u16::from_be_bytes([ports[0], ports[1]]);
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    if !port_matches(config_ptr, sport, dport) {
        // Only a TCP packet whose headers were not in the linear area gets here (a packet in
        // place on no configured port was triaged above): the HTTP parser's, read again.
        if ip.protocol == IPPROTO_TCP && http_enabled(config_ptr) {
            let tcp = load::<[u8; 14]>(skb, ip.l4).ok()?;
            return Segment::of(len, ip.l4, sport, dport, &tcp);
        }
        return None;
    }
    capture_dns(skb, len, config_ptr, direction, &ip, sport, dport);
    None
}

/// Copies a packet on a configured (DNS) port into the ring.
#[inline(always)]
fn capture_dns(
    skb: *mut __sk_buff,
    len: u32,
    config_ptr: *const CaptureConfig,
    direction: u8,
    ip: &Ip,
    sport: u16,
    dport: u16,
) {
    // From here on the packet is on a DNS port: rare, so the rest may cost.
    let (payload, seq, tcp_flags) = match ip.protocol {
        IPPROTO_UDP => (ip.l4 + 8, 0, 0),
        _ => {
            let Ok(tcp) = load::<[u8; 14]>(skb, ip.l4) else {
                return;
            };
            let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
            let doff = u32::from(tcp[12] >> 4) * 4;
            (ip.l4 + doff, seq, tcp[13])
        }
    };
    let payload_len = len.saturating_sub(payload);
    let too_short = match ip.protocol {
        IPPROTO_UDP => payload_len < DNS_HEADER_LEN,
        _ => payload_len == 0,
    };
    if too_short {
        bump(Counter::PacketNotDns);
        return;
    }
    // SAFETY: see `config_ptr`.
    let snaplen = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*config_ptr).snaplen)) };
    let snaplen = if snaplen == 0 || snaplen > MAX_SNAPLEN {
        MAX_SNAPLEN
    } else {
        snaplen
    };
    let captured = if payload_len > snaplen {
        bump(Counter::PacketTruncated);
        snaplen
    } else {
        payload_len
    };
    let Some(scratch) = NT_PACKET_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the pointer comes from the per-CPU map; this CPU owns its slot for the program's
    // run (preemption is off), and the slot is only used within this run.
    let scratch = unsafe { &mut *scratch };
    scratch.header = PacketHeader {
        // SAFETY: helpers allowed in cgroup_skb programs; they take the context.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        cookie: unsafe { bpf_get_socket_cookie(skb.cast()) },
        cgroup_id: unsafe { bpf_skb_cgroup_id(skb) },
        seq,
        netns: 0,
        payload_len,
        captured_len: captured,
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport,
        dport,
        family: ip.family,
        protocol: ip.protocol,
        direction,
        kind: PACKET_KIND_DNS,
        tcp_flags,
        _pad: [0; 6],
    };
    // The verifier needs the length proved in 1..=MAX_SNAPLEN at the call. LLVM knows that
    // `captured` already is and drops any comparison, so the bound is a mask on a value it
    // cannot see through: (c - 1) & (MAX - 1) + 1 is `captured` itself for 1..=MAX.
    let n = (core::hint::black_box(captured).wrapping_sub(1) & (MAX_SNAPLEN - 1)) + 1;
    // SAFETY: the destination is the slot's payload array, at least `n` bytes long.
    let loaded =
        unsafe { bpf_skb_load_bytes(skb.cast(), payload, scratch.payload.as_mut_ptr().cast(), n) };
    if loaded != 0 {
        return;
    }
    let size = PACKET_HEADER_LEN as u64 + u64::from(n);
    let record: *mut Scratch = scratch;
    // SAFETY: `record` points to `size` initialised bytes (header + n payload bytes).
    if unsafe { ring_output(record.cast(), size) } {
        bump(Counter::PacketCaptured);
    } else {
        bump(Counter::PacketRingFull);
    }
}

/// Copies `size` bytes from `record` into `NT_PACKETS`; whether they fit (false: ring full).
///
/// # Safety
/// `record` must point to `size` readable bytes the verifier can prove (a map value or the
/// stack).
#[inline(always)]
unsafe fn ring_output(record: *mut core::ffi::c_void, size: u64) -> bool {
    let ring = core::ptr::addr_of!(NT_PACKETS).cast_mut().cast();
    let config = config_ptr();
    // SAFETY: `config` is the global's own address (see `config_ptr`).
    let wakeup =
        u64::from(unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*config).wakeup_bytes)) });
    // Wake the reader only once enough is waiting (see `CaptureConfig::wakeup_bytes`).
    let flags = if wakeup == 0 {
        0
    } else {
        // SAFETY: the ring is this module's map; the query reads its positions only.
        let waiting =
            unsafe { aya_ebpf::helpers::bpf_ringbuf_query(ring, u64::from(BPF_RB_AVAIL_DATA)) };
        if waiting >= wakeup {
            u64::from(BPF_RB_FORCE_WAKEUP)
        } else {
            u64::from(BPF_RB_NO_WAKEUP)
        }
    };
    // SAFETY: per the caller; the ring is this module's map.
    unsafe { aya_ebpf::helpers::bpf_ringbuf_output(ring, record, size, flags) == 0 }
}

/// A TCP segment for the HTTP parser: where its TCP header and payload start (from the IP
/// header), how long the payload is, its flags and ports. The sequence number is read only for
/// the few segments that start a message (`http::seq_of`).
pub(super) struct Segment {
    pub l4: u32,
    pub payload: u32,
    pub payload_len: u32,
    pub flags: u8,
    pub sport: u16,
    pub dport: u16,
}

/// TCP flags the parser looks at.
pub(super) const TCP_FIN: u8 = 0x01;
pub(super) const TCP_RST: u8 = 0x04;

impl Segment {
    /// The segment of a packet of `len` bytes whose TCP header (first 14 bytes: `tcp`) starts
    /// at `l4`; `None` for a segment without payload, FIN or RST (a pure ACK or SYN: nothing
    /// for the parser).
    #[inline(always)]
    fn of(len: u32, l4: u32, sport: u16, dport: u16, tcp: &[u8; 14]) -> Option<Self> {
        let payload = l4 + u32::from(tcp[12] >> 4) * 4;
        let payload_len = len.saturating_sub(payload);
        let flags = tcp[13];
        if payload_len == 0 && flags & (TCP_FIN | TCP_RST) == 0 {
            return None;
        }
        Some(Self {
            l4,
            payload,
            payload_len,
            flags,
            sport,
            dport,
        })
    }
}

/// What the look at a packet's linear bytes decided.
enum Triage {
    /// Nothing for the capture.
    Reject,
    /// On a configured port, or headers not all in the linear area: read again with the helper.
    Look,
    /// A TCP segment on no configured port with payload, FIN or RST, HTTP parsing on.
    Http(Segment),
}

/// The fast path: what a packet is, from its bytes in the skb's linear area, read in place
/// (direct packet access, no helper call): [`Triage::Reject`] for not TCP or UDP, a later
/// fragment, or no configured port and not a TCP segment the HTTP parser wants (a pure ACK is
/// rejected here, from `len` and its header lengths); [`Triage::Look`] when a configured port
/// matches or the headers are not all there (rare for TCP and UDP, whose stacks pull their
/// headers into the linear area).
#[inline(always)]
fn triage_in_place(
    skb: *mut __sk_buff,
    protocol: u32,
    len: u32,
    config: *const CaptureConfig,
) -> Triage {
    // SAFETY: context field reads, rewritten by the verifier into the packet's bounds; every
    // byte read below is checked against `end` first, which the verifier also proves.
    let (start, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    let (l4, transport) = if protocol == u32::from(u16::to_be(ETH_P_IP as u16)) {
        if start + 20 > end {
            return Triage::Look;
        }
        let h = start as *const u8;
        // SAFETY: 20 bytes from `start` are inside the packet (checked above).
        let (vihl, frag_hi, frag_lo, proto) = unsafe { (*h, *h.add(6), *h.add(7), *h.add(9)) };
        let fragment = u16::from_be_bytes([frag_hi, frag_lo]) & 0x1fff;
        if fragment != 0 {
            return Triage::Reject;
        }
        (usize::from(vihl & 0x0f) * 4, proto)
    } else if protocol == u32::from(u16::to_be(ETH_P_IPV6 as u16)) {
        if start + 40 > end {
            return Triage::Look;
        }
        // SAFETY: 40 bytes from `start` are inside the packet (checked above).
        (40, unsafe { *(start as *const u8).add(6) })
    } else {
        return Triage::Reject;
    };
    if transport != IPPROTO_TCP && transport != IPPROTO_UDP {
        // An IPv6 extension header is not walked (see `ip_header`): not captured either way.
        return Triage::Reject;
    }
    let ports = start + l4;
    if ports + 4 > end {
        return Triage::Look;
    }
    let p = ports as *const u8;
    // SAFETY: 4 bytes from `ports` are inside the packet (checked above).
    let (sport, dport) = unsafe {
        (
            u16::from_be_bytes([*p, *p.add(1)]),
            u16::from_be_bytes([*p.add(2), *p.add(3)]),
        )
    };
    if port_matches(config, sport, dport) {
        return Triage::Look;
    }
    if transport != IPPROTO_TCP || !http_enabled(config) {
        return Triage::Reject;
    }
    if ports + 14 > end {
        return Triage::Look;
    }
    // SAFETY: 14 bytes from `ports` are inside the packet (checked above).
    let (doff, flags) = unsafe { (*p.add(12), *p.add(13)) };
    // `l4` is at most 60: the sum cannot wrap.
    let payload = l4 as u32 + u32::from(doff >> 4) * 4;
    if len <= payload && flags & (TCP_FIN | TCP_RST) == 0 {
        return Triage::Reject;
    }
    Triage::Http(Segment {
        l4: l4 as u32,
        payload,
        payload_len: len.saturating_sub(payload),
        flags,
        sport,
        dport,
    })
}

/// Whether the HTTP parser runs (`CaptureConfig::http`).
#[inline(always)]
fn http_enabled(config: *const CaptureConfig) -> bool {
    // SAFETY: `config` is the global's own address (see `config_ptr`).
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*config).http)) != 0 }
}

/// The capture config's address: `Global` is `repr(transparent)` over its value.
#[inline(always)]
fn config_ptr() -> *const CaptureConfig {
    core::ptr::addr_of!(NT_CAPTURE_CONFIG).cast::<CaptureConfig>()
}

/// Whether either port is in the config's list (which ends at its first zero). Reads the ports
/// one by one from the global, so a list of one port costs two reads.
#[inline(always)]
fn port_matches(config: *const CaptureConfig, sport: u16, dport: u16) -> bool {
    // SAFETY: `config` is the global's own address (see `config_ptr`).
    let ports = unsafe { core::ptr::addr_of!((*config).ports) }.cast::<u16>();
    for i in 0..MAX_CAPTURE_PORTS {
        // SAFETY: `i` < the array's length; a volatile read of the loader-set global.
        let port = unsafe { core::ptr::read_volatile(ports.add(i)) };
        if port == 0 {
            return false;
        }
        if port == sport || port == dport {
            return true;
        }
    }
    false
}

/// The IP header of a TCP or UDP packet (not a later fragment), else `None`.
#[inline(always)]
pub(super) fn ip_header(skb: *mut __sk_buff, protocol: u32) -> Option<Ip> {
    if protocol == u32::from(u16::to_be(ETH_P_IP as u16)) {
        let h = load::<[u8; 20]>(skb, 0).ok()?;
        let l4 = u32::from(h[0] & 0x0f) * 4;
        let fragment = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
        if l4 < 20 || fragment != 0 || (h[9] != IPPROTO_TCP && h[9] != IPPROTO_UDP) {
            return None;
        }
        let mut saddr = [0; 16];
        let mut daddr = [0; 16];
        saddr[..4].copy_from_slice(&h[12..16]);
        daddr[..4].copy_from_slice(&h[16..20]);
        Some(Ip {
            family: AF_INET,
            protocol: h[9],
            l4,
            saddr,
            daddr,
        })
    } else if protocol == u32::from(u16::to_be(ETH_P_IPV6 as u16)) {
        let h = load::<[u8; 40]>(skb, 0).ok()?;
        // Extension headers are not walked: a DNS packet behind one is not captured.
        if h[6] != IPPROTO_TCP && h[6] != IPPROTO_UDP {
            return None;
        }
        let mut saddr = [0; 16];
        let mut daddr = [0; 16];
        saddr.copy_from_slice(&h[8..24]);
        daddr.copy_from_slice(&h[24..40]);
        Some(Ip {
            family: AF_INET6,
            protocol: h[6],
            l4: 40,
            saddr,
            daddr,
        })
    } else {
        None
    }
}

/// `n`, a length the caller already checked is in `1..=MAX`, in a register whose bounds the
/// verifier knows to be `1..=MAX` too, for a helper's size argument (`bpf_skb_load_bytes` into
/// a map value). A Rust check alone is not enough: LLVM may test one register (or a copy spilled
/// by `black_box` as 32 bits, whose bounds 5.10 does not keep) and pass another, and older
/// verifiers learn no lower bound from `n != 0` (seen on 5.10: "invalid access to map value,
/// size=0"). Here the clamp is in asm, which LLVM cannot rewrite: `((n - 1) & 0xffff)`, then
/// at most `MAX - 1`, plus one. For `n` in `1..=MAX` the result is `n`.
#[inline(always)]
pub(crate) fn verifier_len<const MAX: u32>(n: u32) -> u32 {
    const { assert!(MAX >= 1 && MAX <= 0x1_0000) };
    let mut len = u64::from(n);
    // SAFETY: register-only arithmetic and a forward jump within the block.
    unsafe {
        core::arch::asm!(
            "{len} += -1",
            "{len} &= 0xffff",
            "if {len} <= {last} goto +1",
            "{len} = {last}",
            "{len} += 1",
            len = inout(reg) len,
            last = const MAX - 1,
            options(pure, nomem, nostack),
        );
    }
    len as u32
}

#[inline(always)]
pub(super) fn load<T>(skb: *mut __sk_buff, offset: u32) -> Result<T, i64> {
    let mut out = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the helper writes exactly size_of::<T>() bytes into `out` or fails.
    let ret = unsafe {
        bpf_skb_load_bytes(
            skb.cast(),
            offset,
            out.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
        )
    };
    if ret == 0 {
        // SAFETY: initialised by the helper above.
        Ok(unsafe { out.assume_init() })
    } else {
        Err(ret)
    }
}
