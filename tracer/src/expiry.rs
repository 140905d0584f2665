//! When an open connection whose close was never seen is given up on (Datadog's rules, section
//! 3.3): TCP after 2 minutes idle when its process is gone; UDP after the kernel's conntrack UDP
//! timeout (the "stream" one once traffic went both ways).

use std::{path::Path, time::Duration};

use tracer_common::conn::{ConnStats, IPPROTO_TCP};

/// Idle limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpiryConfig {
    /// TCP idle time after which a connection whose owner process is gone expires.
    pub tcp_idle: Duration,
    /// UDP idle time for flows seen one way (`nf_conntrack_udp_timeout`).
    pub udp: Duration,
    /// UDP idle time for flows seen both ways (`nf_conntrack_udp_timeout_stream`).
    pub udp_stream: Duration,
}

/// Defaults of the kernel when conntrack is absent (its module defaults).
pub const DEFAULT_UDP_TIMEOUT: Duration = Duration::from_secs(30);
/// See [`DEFAULT_UDP_TIMEOUT`].
pub const DEFAULT_UDP_STREAM_TIMEOUT: Duration = Duration::from_secs(120);

impl Default for ExpiryConfig {
    fn default() -> Self {
        Self {
            tcp_idle: Duration::from_secs(120),
            udp: DEFAULT_UDP_TIMEOUT,
            udp_stream: DEFAULT_UDP_STREAM_TIMEOUT,
        }
    }
}

impl ExpiryConfig {
    /// The defaults, with the UDP timeouts read from the conntrack sysctls where they exist.
    pub fn from_system() -> Self {
        let read = |name: &str, default: Duration| {
            std::fs::read_to_string(Path::new("/proc/sys/net/netfilter").join(name))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map_or(default, Duration::from_secs)
        };
        Self {
            udp: read("nf_conntrack_udp_timeout", DEFAULT_UDP_TIMEOUT),
            udp_stream: read(
                "nf_conntrack_udp_timeout_stream",
                DEFAULT_UDP_STREAM_TIMEOUT,
            ),
            ..Self::default()
        }
    }

    /// Whether `conn` expired at `now_ns` (kernel monotonic clock). `process_alive` is asked only
    /// for idle TCP connections.
    pub fn expired(
        &self,
        conn: &ConnStats,
        now_ns: u64,
        process_alive: impl Fn(u32) -> bool,
    ) -> bool {
        let idle = Duration::from_nanos(now_ns.saturating_sub(conn.updated_ns));
        if conn.tuple.protocol == IPPROTO_TCP {
            idle > self.tcp_idle && !process_alive(conn.tuple.pid)
        } else {
            let both_ways = conn.sent_packets > 0 && conn.recv_packets > 0;
            idle > if both_ways { self.udp_stream } else { self.udp }
        }
    }
}

/// Whether process `pid` exists; pid 0 (never attributed) counts as gone. Asked of the kernel
/// with `kill(pid, 0)` (EPERM: it exists, it is not ours), not by looking for `/proc/<pid>`: a
/// /proc mounted with `hidepid=2` hides other users' processes from a tracer without
/// CAP_SYS_PTRACE, which would then take every live owner for gone.
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid == 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The kernel's monotonic clock, the one `bpf_ktime_get_ns` reads.
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use tracer_common::conn::{ConnTuple, IPPROTO_UDP};

    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn conn(protocol: u8, updated_s: u64, sent: u64, recv: u64) -> ConnStats {
        ConnStats {
            tuple: ConnTuple {
                protocol,
                pid: 7,
                ..ConnTuple::default()
            },
            updated_ns: updated_s * SEC,
            sent_packets: sent,
            recv_packets: recv,
            ..ConnStats::default()
        }
    }

    #[test]
    fn idle_tcp_expires_only_when_its_process_is_gone() {
        let cfg = ExpiryConfig::default();
        let idle = conn(IPPROTO_TCP, 0, 1, 1);
        assert!(!cfg.expired(&idle, 121 * SEC, |_| true));
        assert!(cfg.expired(&idle, 121 * SEC, |_| false));
        assert!(!cfg.expired(&idle, 119 * SEC, |_| false));
    }

    #[test]
    fn udp_uses_the_stream_timeout_once_traffic_went_both_ways() {
        let cfg = ExpiryConfig::default();
        assert!(cfg.expired(&conn(IPPROTO_UDP, 0, 1, 0), 31 * SEC, |_| true));
        assert!(!cfg.expired(&conn(IPPROTO_UDP, 0, 1, 1), 31 * SEC, |_| true));
        assert!(cfg.expired(&conn(IPPROTO_UDP, 0, 1, 1), 121 * SEC, |_| true));
    }

    #[test]
    fn a_clock_behind_the_record_is_not_idle() {
        let cfg = ExpiryConfig::default();
        assert!(!cfg.expired(&conn(IPPROTO_UDP, 500, 1, 0), 10 * SEC, |_| false));
    }

    #[test]
    fn our_own_process_is_alive_and_pid_zero_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0));
        assert!(!process_alive(u32::MAX), "not a pid_t");
    }

    #[test]
    fn a_reaped_child_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        assert!(process_alive(pid), "not reaped yet (a zombie exists)");
        child.wait().unwrap();
        assert!(!process_alive(pid));
    }
}
