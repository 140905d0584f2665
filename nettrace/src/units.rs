//! Human byte counts and rates in binary units (B, KiB, MiB, ...).

const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// `512 B`, `1.5 KiB`, `3.0 MiB`: whole bytes below 1 KiB, one decimal above.
pub fn bytes(n: u64) -> String {
    // u64 -> f64 loses precision only above 2^53, far beyond the one decimal shown.
    scaled(n as f64)
}

/// `bytes(n)` per second; `seconds` <= 0 or not finite gives `-`.
pub fn rate(n: u64, seconds: f64) -> String {
    if !(seconds.is_finite() && seconds > 0.0) {
        return "-".to_owned();
    }
    format!("{}/s", scaled(n as f64 / seconds))
}

fn scaled(value: f64) -> String {
    if !value.is_finite() || value < 0.0 {
        return "-".to_owned();
    }
    if value < 1023.5 {
        return format!("{} B", value.round());
    }
    let mut value = value / 1024.0;
    let mut unit = 1;
    // Move up while the one-decimal rendering would read 1024.0 or more.
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let name = UNITS.get(unit).copied().unwrap_or("EiB");
    format!("{value:.1} {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_counts_are_whole_bytes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1), "1 B");
        assert_eq!(bytes(1023), "1023 B");
    }

    #[test]
    fn larger_counts_use_binary_units_with_one_decimal() {
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(10 * 1024 * 1024), "10.0 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn rounding_never_shows_1024_of_a_unit() {
        assert_eq!(bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(bytes(1024 * 1023 + 1000), "1.0 MiB");
        assert_eq!(bytes(1024 * 1023), "1023.0 KiB");
    }

    #[test]
    fn rates_divide_by_the_interval() {
        assert_eq!(rate(2048, 2.0), "1.0 KiB/s");
        assert_eq!(rate(100, 0.5), "200 B/s");
        assert_eq!(rate(0, 2.0), "0 B/s");
        assert_eq!(rate(5, 0.0), "-");
        assert_eq!(rate(5, f64::NAN), "-");
    }
}
