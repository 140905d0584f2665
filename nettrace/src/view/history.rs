//! One connection's throughput over the last minute: the bytes of each refresh it moved in, with
//! the refresh's time, binned for the sparkline.

use std::collections::VecDeque;

/// How far back the sparkline looks, in seconds.
pub const WINDOW_S: f64 = 60.0;

/// (time of the refresh in seconds since the view started, bytes moved both ways in the interval
/// that ended then), oldest first. Refreshes in which the connection did not move add nothing,
/// so an idle connection costs no memory; at most one sample per refresh, and samples older than
/// [`WINDOW_S`] are dropped at each refresh ([`History::prune`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    samples: VecDeque<(f64, u64)>,
}

impl History {
    /// Records `bytes` moved in the interval that ended at `now_s` (nothing for 0).
    pub fn push(&mut self, now_s: f64, bytes: u64) {
        if bytes > 0 {
            self.samples.push_back((now_s, bytes));
        }
    }

    /// Drops the samples that left the window ending at `now_s`.
    pub fn prune(&mut self, now_s: f64) {
        while self
            .samples
            .front()
            .is_some_and(|&(t, _)| t <= now_s - WINDOW_S)
        {
            self.samples.pop_front();
        }
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Adds the window ending at `now_s`, cut into `bins.len()` equal bins (oldest first), to
    /// `bins` as bytes per second (summed in floating point, so that a group's connections can
    /// be added up before rounding). A sample belongs to the bin whose span `(start, end]` holds
    /// its time: a refresh's bytes are those of the interval that ended then.
    pub fn add_to_bins(&self, now_s: f64, bins: &mut [f64]) {
        let n = bins.len();
        if n == 0 {
            return;
        }
        let width = WINDOW_S / n as f64;
        let start = now_s - WINDOW_S;
        for &(t, bytes) in &self.samples {
            if t <= start || t > now_s {
                continue;
            }
            // (t - start) / width is in (0, n]; the bin is its ceiling minus one.
            let index = (((t - start) / width).ceil() as usize)
                .saturating_sub(1)
                .min(n - 1);
            if let Some(bin) = bins.get_mut(index) {
                *bin += bytes as f64 / width;
            }
        }
    }
}

/// Bytes per second, rounded, for the sparkline.
pub fn rounded(bins: &[f64]) -> Vec<u64> {
    bins.iter().map(|&b| b.max(0.0).round() as u64).collect()
}

/// The number of sparkline bins for a refresh every `interval_s` on `width` cells: one per
/// refresh of the window, fewer when the width is smaller, at least one.
pub fn bin_count(interval_s: f64, width: usize) -> usize {
    let per_refresh = if interval_s.is_finite() && interval_s > 0.0 {
        (WINDOW_S / interval_s).round() as usize
    } else {
        1
    };
    per_refresh.min(width).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bin_per_refresh_holds_that_refresh_as_a_rate() {
        let mut h = History::default();
        // Refreshes every second: bytes at t = 100 and t = 159 (the newest).
        h.push(100.0, 500);
        h.push(158.0, 0);
        h.push(159.0, 2_000);
        assert_eq!(h.len(), 2, "a refresh without bytes adds nothing");
        let mut bins = vec![0.0; 60];
        h.add_to_bins(159.0, &mut bins);
        let bins = rounded(&bins);
        // The window is (99, 159]: t = 100 is the first bin's end, t = 159 the last's.
        assert_eq!(bins[0], 500);
        assert_eq!(bins[59], 2_000);
        assert_eq!(bins.iter().sum::<u64>(), 2_500);
    }

    #[test]
    fn wider_bins_average_their_refreshes() {
        let mut h = History::default();
        for t in 1..=60 {
            h.push(f64::from(t), 1_000);
        }
        let mut bins = vec![0.0; 6];
        h.add_to_bins(60.0, &mut bins);
        let bins = rounded(&bins);
        // Ten 1-second refreshes of 1000 B each per 10-second bin: 1000 B/s.
        assert_eq!(bins, vec![1_000; 6]);
    }

    #[test]
    fn samples_leave_the_window_after_a_minute() {
        let mut h = History::default();
        h.push(10.0, 1);
        h.push(40.0, 2);
        h.prune(69.0);
        assert_eq!(h.len(), 2);
        h.prune(70.0);
        assert_eq!(h.len(), 1, "the sample of t = 10 is out of (10, 70]");
        let mut bins = vec![0.0; 2];
        h.add_to_bins(101.0, &mut bins);
        assert_eq!(
            rounded(&bins),
            vec![0, 0],
            "t = 40 is before the window (41, 101]"
        );
        h.prune(101.0);
        assert!(h.is_empty());
    }

    #[test]
    fn bins_follow_the_refresh_and_the_width() {
        assert_eq!(bin_count(1.0, 200), 60);
        assert_eq!(bin_count(2.0, 200), 30);
        assert_eq!(bin_count(1.0, 40), 40);
        assert_eq!(bin_count(0.1, 200), 200);
        assert_eq!(bin_count(600.0, 200), 1);
        assert_eq!(bin_count(f64::NAN, 200), 1);
        assert_eq!(bin_count(1.0, 0), 1);
    }
}
