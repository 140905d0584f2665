//! DNS over TCP: each message is prefixed with its 2-byte length; a segment can carry several
//! messages and a message can span segments. Segments are reassembled per stream, one stream
//! per (saddr, sport, daddr, dport, socket cookie, direction): the capture sees both ends of a
//! local conversation, as two streams whose messages the stats deduplicate.
//!
//! `seq` orders the bytes: a segment wholly before the next expected byte is a duplicate
//! (retransmission) and dropped, one that overlaps it contributes only its new bytes; one past
//! it (bytes missed) and a segment cut at the snap length reset the stream, which then restarts
//! at the next segment as if a message began there (DNS clients send each message in its own
//! segment, so this usually resynchronises; otherwise the garbage fails to parse and is
//! counted). FIN or RST ends a stream. At most `max_streams` streams, least recently used
//! evicted first.

use std::num::NonZeroUsize;

use bytes::{Buf, BytesMut};
use lru::LruCache;
use rustc_hash::FxBuildHasher;

/// TCP FIN flag.
const FIN: u8 = 0x01;
/// TCP RST flag.
const RST: u8 = 0x04;

/// Identifies one direction of one TCP connection as one socket saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct StreamKey {
    pub saddr: [u8; 16],
    pub sport: u16,
    pub daddr: [u8; 16],
    pub dport: u16,
    pub cookie: u64,
    pub direction: u8,
}

/// One TCP segment's payload as captured.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment<'a> {
    pub seq: u32,
    pub flags: u8,
    /// The whole payload length on the wire.
    pub payload_len: u32,
    /// The captured bytes (all of the payload unless cut at the snap length).
    pub payload: &'a [u8],
}

#[derive(Debug)]
struct Stream {
    /// Sequence number of the next byte expected.
    next_seq: u32,
    /// Bytes of an incomplete message (its length prefix included).
    buf: BytesMut,
}

/// What a segment did, for the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SegmentReport {
    /// Segment wholly retransmitted, dropped.
    pub duplicate: bool,
    /// Bytes were missed: the stream was reset.
    pub gap: bool,
    /// The segment was cut at the snap length: the stream was reset.
    pub truncated: bool,
    /// The stream ended (FIN or RST).
    pub closed: bool,
    /// A stream was evicted to make room for this one.
    pub evicted: bool,
    /// Zero-length messages skipped.
    pub empty_messages: u64,
}

#[derive(Debug)]
pub(crate) struct TcpStreams {
    streams: LruCache<StreamKey, Stream, FxBuildHasher>,
}

impl TcpStreams {
    pub fn new(max_streams: usize) -> Self {
        Self {
            streams: LruCache::with_hasher(
                NonZeroUsize::new(max_streams).unwrap_or(NonZeroUsize::MIN),
                FxBuildHasher,
            ),
        }
    }

    /// Streams held.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Adds a segment of the stream `key` and calls `on_message` with each message it
    /// completes (without its length prefix).
    pub fn segment(
        &mut self,
        key: StreamKey,
        seg: Segment<'_>,
        on_message: &mut dyn FnMut(&[u8]),
    ) -> SegmentReport {
        let mut report = SegmentReport::default();
        let ends = seg.flags & (FIN | RST) != 0;
        let len = u32::try_from(seg.payload.len()).unwrap_or(u32::MAX);
        if len < seg.payload_len {
            report.truncated = true;
            self.streams.pop(&key);
            report.closed = ends;
            return report;
        }
        if seg.payload.is_empty() {
            if ends {
                report.closed = self.streams.pop(&key).is_some();
            }
            return report;
        }
        let end_seq = seg.seq.wrapping_add(len);
        let mut data = seg.payload;
        let stream = match self.streams.get_mut(&key) {
            Some(stream) => {
                // Signed distance in sequence space, so wrap-around is handled.
                let ahead = seg.seq.wrapping_sub(stream.next_seq) as i32;
                if ahead > 0 {
                    report.gap = true;
                    stream.buf.clear();
                } else if ahead < 0 {
                    let behind = ahead.unsigned_abs();
                    if behind >= len {
                        report.duplicate = true;
                        if ends {
                            self.streams.pop(&key);
                            report.closed = true;
                        }
                        return report;
                    }
                    data = data.get(behind as usize..).unwrap_or_default();
                }
                stream
            }
            None => {
                if self.streams.len() >= self.streams.cap().get() {
                    report.evicted = self.streams.pop_lru().is_some();
                }
                self.streams.get_or_insert_mut(key, || Stream {
                    next_seq: seg.seq,
                    buf: BytesMut::new(),
                })
            }
        };
        stream.next_seq = end_seq;
        if stream.buf.is_empty() {
            // Fast path: complete messages straight from the captured bytes, no copy.
            data = split_messages(data, &mut report, on_message);
            stream.buf.extend_from_slice(data);
        } else {
            stream.buf.extend_from_slice(data);
            let rest = split_messages(&stream.buf, &mut report, on_message).len();
            let consumed = stream.buf.len() - rest;
            stream.buf.advance(consumed);
        }
        if ends {
            self.streams.pop(&key);
            report.closed = true;
        }
        report
    }
}

/// Calls `on_message` with each complete length-prefixed message at the start of `data` and
/// returns what is left (an incomplete message).
fn split_messages<'a>(
    mut data: &'a [u8],
    report: &mut SegmentReport,
    on_message: &mut dyn FnMut(&[u8]),
) -> &'a [u8] {
    while let Some(&[hi, lo]) = data.get(..2) {
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let Some(message) = data.get(2..2 + len) else {
            break;
        };
        if len == 0 {
            report.empty_messages += 1;
        } else {
            on_message(message);
        }
        data = data.get(2 + len..).unwrap_or_default();
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cookie: u64) -> StreamKey {
        StreamKey {
            saddr: [1; 16],
            sport: 40000,
            daddr: [2; 16],
            dport: 53,
            cookie,
            direction: 1,
        }
    }

    fn framed(msgs: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            out.extend_from_slice(&u16::try_from(m.len()).unwrap().to_be_bytes());
            out.extend_from_slice(m);
        }
        out
    }

    fn feed(
        s: &mut TcpStreams,
        k: StreamKey,
        seq: u32,
        flags: u8,
        payload: &[u8],
    ) -> (Vec<Vec<u8>>, SegmentReport) {
        let mut got = Vec::new();
        let report = s.segment(
            k,
            Segment {
                seq,
                flags,
                payload_len: payload.len() as u32,
                payload,
            },
            &mut |m| got.push(m.to_vec()),
        );
        (got, report)
    }

    #[test]
    fn one_segment_with_several_messages() {
        let mut s = TcpStreams::new(4);
        let bytes = framed(&[b"one", b"", b"three"]);
        let (got, report) = feed(&mut s, key(1), 100, 0, &bytes);
        assert_eq!(got, [b"one".to_vec(), b"three".to_vec()]);
        assert_eq!(report.empty_messages, 1);
    }

    #[test]
    fn a_message_split_over_segments_including_its_prefix() {
        let mut s = TcpStreams::new(4);
        let bytes = framed(&[b"hello", b"world"]);
        let (got, _) = feed(&mut s, key(1), 0, 0, &bytes[..1]);
        assert!(got.is_empty());
        let (got, _) = feed(&mut s, key(1), 1, 0, &bytes[1..4]);
        assert!(got.is_empty());
        let (got, _) = feed(&mut s, key(1), 4, 0, &bytes[4..10]);
        assert_eq!(got, [b"hello".to_vec()]);
        let (got, _) = feed(&mut s, key(1), 10, 0, &bytes[10..]);
        assert_eq!(got, [b"world".to_vec()]);
    }

    #[test]
    fn retransmissions_are_dropped_and_overlaps_add_only_new_bytes() {
        let mut s = TcpStreams::new(4);
        let bytes = framed(&[b"abcdef"]);
        feed(&mut s, key(1), u32::MAX - 1, 0, &bytes[..4]); // wraps around
        let (got, report) = feed(&mut s, key(1), u32::MAX - 1, 0, &bytes[..4]);
        assert!(got.is_empty() && report.duplicate);
        let (got, report) = feed(&mut s, key(1), u32::MAX, 0, &bytes[1..]);
        assert!(!report.duplicate && !report.gap);
        assert_eq!(got, [b"abcdef".to_vec()]);
    }

    #[test]
    fn a_gap_or_a_cut_segment_resets_the_stream() {
        let mut s = TcpStreams::new(4);
        let bytes = framed(&[b"abcdef", b"xy"]);
        feed(&mut s, key(1), 0, 0, &bytes[..4]);
        // Bytes 4..8 missed; the next segment starts a message: it is delivered.
        let (got, report) = feed(&mut s, key(1), 8, 0, &bytes[8..]);
        assert!(report.gap);
        assert_eq!(got, [b"xy".to_vec()]);
        let mut got = Vec::new();
        let report = s.segment(
            key(1),
            Segment {
                seq: 12,
                flags: 0,
                payload_len: 100,
                payload: &bytes[..8],
            },
            &mut |m| got.push(m.to_vec()),
        );
        assert!(report.truncated && got.is_empty());
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn fin_and_rst_end_streams_and_the_least_recently_used_is_evicted() {
        let mut s = TcpStreams::new(2);
        let bytes = framed(&[b"abc"]);
        let (got, report) = feed(&mut s, key(1), 0, FIN, &bytes);
        assert_eq!(got.len(), 1);
        assert!(report.closed);
        assert_eq!(s.len(), 0);
        feed(&mut s, key(1), 0, 0, &bytes[..2]);
        feed(&mut s, key(2), 0, 0, &bytes[..2]);
        let (_, report) = feed(&mut s, key(3), 0, 0, &bytes[..2]);
        assert!(report.evicted);
        assert_eq!(s.len(), 2);
        // Stream 1 was evicted: its rest now starts a new stream (garbage, not a message).
        let (got, report) = feed(&mut s, key(1), 2, 0, &bytes[2..]);
        assert!(got.is_empty() && report.evicted);
        let (_, report) = feed(&mut s, key(3), 2, RST, &[]);
        assert!(report.closed);
        assert_eq!(s.len(), 1);
    }
}
