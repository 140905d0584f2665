//! Kernel-side counters: one slot per reason an event was not recorded, so nothing is lost silently.

/// Index into the per-CPU counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// The TCP state map was full: a socket's transitions were not recorded.
    TcpStateMapFull = 0,
    /// Reading the tracepoint record failed (a bad offset from the format file).
    TracepointReadFailed = 1,
    /// A socket recorded more transitions than its record holds; the extra ones were counted only.
    TcpStateOverflow = 2,
}

/// Number of counters (size of the per-CPU array).
pub const COUNTER_COUNT: u32 = 3;

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::TcpStateMapFull,
        Counter::TracepointReadFailed,
        Counter::TcpStateOverflow,
    ];

    /// A stable name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::TcpStateMapFull => "tcp_state_map_full",
            Counter::TracepointReadFailed => "tracepoint_read_failed",
            Counter::TcpStateOverflow => "tcp_state_overflow",
        }
    }
}
