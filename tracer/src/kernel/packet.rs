//! Owner, in userspace, of the packet capture (`tracer-ebpf/src/packet/`): its configuration
//! and the reader of its ring `NT_PACKETS`. The programs are attached by the loader with the
//! rest of the plan (rows in [`super::probes::CAPTURE_PROBES`]); what the records mean is the
//! business of the sources that consume them (DNS packets, HTTP transactions).

use std::os::fd::{AsRawFd, RawFd};

use aya::maps::{MapData, RingBuf};
use parking_lot::Mutex;
use tracer_common::packet::{self as wire, MAX_CAPTURE_PORTS, MAX_SNAPLEN};

use crate::{Error, Result};

/// The reader is woken when an eighth of the ring is waiting: at 180,000 HTTP records a second
/// (wrk against nginx on loopback, both ends observed) a wake-up per record cost more than the
/// parsing; with this, a 1 MiB ring wakes its reader every ~500 records, and the rest is read
/// by the reader's timed poll (`CONSUMER_IDLE_MS`) or the next call, which drains the ring
/// first. Seven eighths stay free for what arrives while the reader wakes up.
const WAKEUP_FRACTION: u32 = 8;

/// The capture's switch and sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Whether the `cgroup_skb` programs are attached at all. Off, no packet pays anything and
    /// no DNS stats or names are collected.
    pub enabled: bool,
    /// Ports whose packets are DNS, either end (default `[53]`, at most 8).
    pub ports: Vec<u16>,
    /// Payload bytes copied per packet (default 512, at most 4096): a longer message is
    /// truncated and counted (`packet_truncated`).
    pub snaplen: u32,
    /// Size of the capture's ring in bytes, a power-of-two number of pages (default 1 MiB,
    /// about 8 000 DNS packets of 100 bytes, or 4 000 HTTP transactions of 248 bytes, between
    /// two wake-ups of its reader).
    pub ring_bytes: u32,
    /// Whether the programs parse HTTP/1.x on TCP payload of every other port (default on).
    /// The kernel parser runs only when this and `Config::http.enabled` are both on
    /// ([`crate::Config::kernel`] combines them); off, TCP packets off `ports` are rejected on
    /// their ports, as before the parser existed.
    pub http: bool,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ports: vec![53],
            snaplen: wire::DEFAULT_SNAPLEN,
            ring_bytes: 1 << 20,
            http: true,
        }
    }
}

impl CaptureConfig {
    /// Rejects what the programs cannot honour.
    pub fn validate(&self) -> Result<()> {
        if self.ports.is_empty() || self.ports.len() > MAX_CAPTURE_PORTS {
            return Err(Error::InvalidConfig(format!(
                "capture.ports must list 1..={MAX_CAPTURE_PORTS} ports, got {}",
                self.ports.len()
            )));
        }
        if self.ports.contains(&0) {
            return Err(Error::InvalidConfig(
                "capture.ports: port 0 matches nothing".to_owned(),
            ));
        }
        if self.snaplen == 0 || self.snaplen > MAX_SNAPLEN {
            return Err(Error::InvalidConfig(format!(
                "capture.snaplen must be in 1..={MAX_SNAPLEN}, got {}",
                self.snaplen
            )));
        }
        super::conn_tracer::validate_ring_bytes("capture.ring_bytes", self.ring_bytes)
    }

    /// The programs' read-only global: ports in slots, the rest 0.
    pub fn to_kernel(&self) -> wire::CaptureConfig {
        let mut out = wire::CaptureConfig::DISABLED;
        for (slot, port) in out.ports.iter_mut().zip(&self.ports) {
            *slot = *port;
        }
        out.snaplen = self.snaplen;
        out.enabled = u32::from(self.enabled);
        out.http = u32::from(self.enabled && self.http);
        out.wakeup_bytes = self.ring_bytes / WAKEUP_FRACTION;
        out
    }
}

/// The capture's ring: records of [`wire::PacketHeader`] + payload.
pub struct PacketRing {
    ring: Mutex<RingBuf<MapData>>,
    fd: RawFd,
}

impl PacketRing {
    pub(crate) fn new(ring: RingBuf<MapData>) -> Self {
        let fd = ring.as_raw_fd();
        Self {
            ring: Mutex::new(ring),
            fd,
        }
    }

    /// Hands every record now in the ring to `each`, in the order the programs wrote them;
    /// returns how many. Callers serialize on the ring's lock, so records reach `each` in order
    /// whoever drains.
    pub fn drain(&self, mut each: impl FnMut(&[u8])) -> usize {
        let mut ring = self.ring.lock();
        let mut n = 0;
        while let Some(item) = ring.next() {
            each(&item);
            n += 1;
        }
        n
    }

    /// The ring's descriptor, to wait on with poll.
    pub fn fd(&self) -> RawFd {
        self.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_matches_port_53_only() {
        let config = CaptureConfig::default();
        config.validate().unwrap();
        let kernel = config.to_kernel();
        assert_eq!(kernel.ports, [53, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!((kernel.snaplen, kernel.enabled, kernel.http), (512, 1, 1));
    }

    #[test]
    fn rejects_what_the_programs_cannot_honour() {
        let bad = [
            CaptureConfig {
                ports: vec![],
                ..Default::default()
            },
            CaptureConfig {
                ports: (1..=9).collect(),
                ..Default::default()
            },
            CaptureConfig {
                ports: vec![53, 0],
                ..Default::default()
            },
            CaptureConfig {
                snaplen: 0,
                ..Default::default()
            },
            CaptureConfig {
                snaplen: MAX_SNAPLEN + 1,
                ..Default::default()
            },
            CaptureConfig {
                ring_bytes: 3 * 4096,
                ..Default::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
        let off = CaptureConfig {
            enabled: false,
            ports: vec![53, 5353],
            ..Default::default()
        };
        assert_eq!(off.to_kernel().enabled, 0);
        assert_eq!(
            off.to_kernel().http,
            0,
            "no HTTP parsing without the capture"
        );
        assert_eq!(off.to_kernel().ports[..3], [53, 5353, 0]);
        let no_http = CaptureConfig {
            http: false,
            ..Default::default()
        };
        assert_eq!(
            (no_http.to_kernel().enabled, no_http.to_kernel().http),
            (1, 0)
        );
        // The reader is woken at an eighth of the ring, whatever its size.
        assert_eq!(CaptureConfig::default().to_kernel().wakeup_bytes, 128 << 10);
        let big = CaptureConfig {
            ring_bytes: 8 << 20,
            ..Default::default()
        };
        assert_eq!(big.to_kernel().wakeup_bytes, 1 << 20);
    }
}
