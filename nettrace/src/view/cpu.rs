//! The CPU this process uses between two refreshes: `getrusage(RUSAGE_SELF)` (user + system time
//! of every thread, the tracer's consumer threads included) over the wall time between them.
//! What the kernel spends in the eBPF programs is charged to the traced processes, not here.

use std::time::{Duration, Instant};

/// User + system CPU time of this process so far.
fn cpu_time() -> Option<Duration> {
    // SAFETY: getrusage writes one `rusage` into the zero-initialised struct it is given (a
    // valid value for this plain C struct) and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return None;
        }
        usage
    };
    let time = |t: libc::timeval| {
        let secs = u64::try_from(t.tv_sec).ok()?;
        let micros = u32::try_from(t.tv_usec).ok()?;
        Some(Duration::from_secs(secs) + Duration::from_micros(u64::from(micros)))
    };
    Some(time(usage.ru_utime)? + time(usage.ru_stime)?)
}

/// CPU use between samples.
#[derive(Debug)]
pub struct CpuMeter {
    last: Option<(Duration, Instant)>,
}

impl CpuMeter {
    pub fn start() -> Self {
        Self {
            last: cpu_time().map(|cpu| (cpu, Instant::now())),
        }
    }

    /// Percent of one CPU since the previous sample (`None` the first time, or when
    /// `getrusage` failed).
    pub fn sample(&mut self) -> Option<f64> {
        let now = (cpu_time()?, Instant::now());
        let previous = self.last.replace(now)?;
        percent(now.0.saturating_sub(previous.0), now.1 - previous.1)
    }
}

/// `cpu` over `wall` in percent of one CPU; `None` for an empty wall time.
pub fn percent(cpu: Duration, wall: Duration) -> Option<f64> {
    (!wall.is_zero()).then(|| 100.0 * cpu.as_secs_f64() / wall.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_of_one_cpu() {
        let ms = Duration::from_millis;
        assert_eq!(percent(ms(50), ms(1000)), Some(5.0));
        assert_eq!(percent(ms(2000), ms(1000)), Some(200.0));
        assert_eq!(percent(ms(1), Duration::ZERO), None);
    }

    #[test]
    fn work_done_is_counted() {
        let mut meter = CpuMeter::start();
        let before = cpu_time().unwrap();
        // Spin until the kernel has charged this process 20 ms more (clock ticks are at most
        // 10 ms apart), then the meter must have seen some of it.
        let mut x = 0u64;
        while cpu_time().unwrap() < before + Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let used = meter.sample().unwrap();
        assert!(used > 0.0, "{used}");
    }
}
