//! The running kernel's version, for error messages and feature floors.

use std::fmt;

/// A kernel version `major.minor.patch`, parsed from `uname -r` style releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    /// e.g. 6 in 6.12.95.
    pub major: u32,
    /// e.g. 12 in 6.12.95.
    pub minor: u32,
    /// e.g. 95 in 6.12.95 (0 when absent).
    pub patch: u32,
}

impl KernelVersion {
    /// A version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses the leading `X.Y[.Z]` of a release string such as `6.1.0-50-cloud-amd64` or
    /// `6.18.44-fc-v657`. Returns `None` when it does not start with `X.Y`.
    pub fn parse_release(release: &str) -> Option<Self> {
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        // The patch level may be absent ("6.18-rc1"): treat it as 0.
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(Self::new(major, minor, patch))
    }

    /// The running kernel's release string (`uname -r`).
    pub fn current_release() -> String {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned())
    }

    /// The running kernel's version, or `None` when the release cannot be parsed.
    pub fn current() -> Option<Self> {
        Self::parse_release(&Self::current_release())
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debian_and_firecracker_releases() {
        assert_eq!(
            KernelVersion::parse_release("6.1.0-50-cloud-amd64"),
            Some(KernelVersion::new(6, 1, 0))
        );
        assert_eq!(
            KernelVersion::parse_release("6.18.44-fc-v657"),
            Some(KernelVersion::new(6, 18, 44))
        );
        assert_eq!(
            KernelVersion::parse_release("5.10.0-32-cloud-amd64"),
            Some(KernelVersion::new(5, 10, 0))
        );
        assert_eq!(
            KernelVersion::parse_release("6.18-rc1"),
            Some(KernelVersion::new(6, 18, 0))
        );
    }

    #[test]
    fn rejects_garbage_releases() {
        assert_eq!(KernelVersion::parse_release(""), None);
        assert_eq!(KernelVersion::parse_release("linux"), None);
        assert_eq!(KernelVersion::parse_release("6"), None);
    }

    #[test]
    fn orders_by_major_then_minor_then_patch() {
        assert!(KernelVersion::new(5, 10, 223) < KernelVersion::new(5, 11, 0));
        assert!(KernelVersion::new(6, 1, 0) < KernelVersion::new(6, 12, 0));
        assert!(KernelVersion::new(6, 12, 1) > KernelVersion::new(6, 12, 0));
    }
}
