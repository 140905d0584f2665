//! Ephemeral (client-side) port classification from `net.ipv4.ip_local_port_range`.
//!
//! The range is an input value: the pipeline never reads files. [`EphemeralPortRange::read`] is
//! the one place that reads the sysctl, for the library to call at start-up.

use std::path::Path;

use crate::error::{Error, Result};

/// Where Linux exposes the ephemeral port range.
pub const IP_LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// Whether a connection's local port is in the ephemeral range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EphemeralPort {
    /// The range was not known when the connection was decoded.
    #[default]
    Unknown,
    /// The local port is in the ephemeral range.
    Ephemeral,
    /// The local port is outside the ephemeral range.
    NotEphemeral,
}

/// An inclusive port range, `low..=high`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EphemeralPortRange {
    low: u16,
    high: u16,
}

impl Default for EphemeralPortRange {
    /// Linux's default, `32768 60999`.
    fn default() -> Self {
        Self {
            low: 32768,
            high: 60999,
        }
    }
}

impl EphemeralPortRange {
    /// A range from its bounds; `None` if `low > high`.
    pub fn new(low: u16, high: u16) -> Option<Self> {
        (low <= high).then_some(Self { low, high })
    }

    /// Lowest ephemeral port.
    pub fn low(&self) -> u16 {
        self.low
    }

    /// Highest ephemeral port.
    pub fn high(&self) -> u16 {
        self.high
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }

    /// Classifies a local port.
    pub fn classify(&self, port: u16) -> EphemeralPort {
        if self.contains(port) {
            EphemeralPort::Ephemeral
        } else {
            EphemeralPort::NotEphemeral
        }
    }

    /// Parses the sysctl's text, two whitespace-separated numbers (`"32768\t60999\n"`).
    pub fn parse(text: &str) -> Result<Self> {
        let invalid =
            || Error::InvalidConfig(format!("ip_local_port_range: cannot parse {text:?}"));
        let mut fields = text.split_whitespace();
        let low = fields
            .next()
            .and_then(|f| f.parse::<u16>().ok())
            .ok_or_else(invalid)?;
        let high = fields
            .next()
            .and_then(|f| f.parse::<u16>().ok())
            .ok_or_else(invalid)?;
        if fields.next().is_some() {
            return Err(invalid());
        }
        Self::new(low, high).ok_or_else(invalid)
    }

    /// Reads [`IP_LOCAL_PORT_RANGE`].
    pub fn read() -> Result<Self> {
        Self::read_from(Path::new(IP_LOCAL_PORT_RANGE))
    }

    /// Reads and parses a file in the sysctl's format.
    pub fn read_from(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_the_sysctl_format() {
        let range = EphemeralPortRange::parse("32768\t60999\n").unwrap();
        assert_eq!((range.low(), range.high()), (32768, 60999));
    }

    #[test]
    fn parse_rejects_inverted_missing_extra_or_out_of_range_fields() {
        for bad in ["", "1", "60999 32768", "1 2 3", "1 70000", "a b"] {
            assert!(EphemeralPortRange::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn classify_bounds_are_inclusive() {
        let range = EphemeralPortRange::new(1000, 2000).unwrap();
        assert_eq!(range.classify(999), EphemeralPort::NotEphemeral);
        assert_eq!(range.classify(1000), EphemeralPort::Ephemeral);
        assert_eq!(range.classify(2000), EphemeralPort::Ephemeral);
        assert_eq!(range.classify(2001), EphemeralPort::NotEphemeral);
    }

    #[test]
    fn read_from_missing_file_is_an_error_not_a_panic() {
        assert!(
            EphemeralPortRange::read_from(Path::new("/nonexistent/ip_local_port_range")).is_err()
        );
    }

    #[test]
    fn read_from_a_file_parses_it() {
        let path = std::env::temp_dir().join(format!("tracer-port-range-{}", std::process::id()));
        std::fs::write(&path, "1024 65535\n").unwrap();
        let range = EphemeralPortRange::read_from(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((range.low(), range.high()), (1024, 65535));
    }
}
