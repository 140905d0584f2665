//! The owner's command name as the kernel recorded it.

use std::fmt;

/// A task's `comm` (at most 15 bytes, NUL-padded), recorded by the kernel when it set the
/// connection's owner, so a process that exited before anyone looked in `/proc` still has a
/// name. Empty when the owner is unknown. Copy, no allocation: it rides along every connection
/// of every call.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Comm([u8; 16]);

impl Comm {
    /// From the kernel's bytes. Whatever follows the first NUL is cleared, so that equal names
    /// are equal values whatever an older kernel left behind them.
    pub fn new(mut bytes: [u8; 16]) -> Self {
        if let Some(end) = bytes.iter().position(|&b| b == 0)
            && let Some(tail) = bytes.get_mut(end..)
        {
            tail.fill(0);
        }
        Self(bytes)
    }

    /// The bytes before the first NUL.
    pub fn as_bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        self.0.get(..end).unwrap_or_default()
    }

    /// Whether no name was recorded.
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }

    /// The name as text (bytes that are not UTF-8 replaced).
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Comm({:?})", self.to_string_lossy())
    }
}

impl fmt::Display for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_lossy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_at_the_first_nul_and_keeps_a_full_name() {
        let mut b = [0u8; 16];
        b[..3].copy_from_slice(b"dig");
        assert_eq!(Comm::new(b).as_bytes(), b"dig");
        assert_eq!(Comm::new(b).to_string(), "dig");
        let full = [b'x'; 16];
        assert_eq!(Comm::new(full).as_bytes().len(), 16);
        assert!(Comm::default().is_empty());
        let mut bad = [0u8; 16];
        bad[..2].copy_from_slice(&[0xff, b'a']);
        assert_eq!(Comm::new(bad).to_string(), "\u{fffd}a");
        let mut stale = *b"dig\0rship::a_sh\0";
        assert_eq!(Comm::new(stale), Comm::new(b));
        stale[3] = b'x';
        assert_ne!(Comm::new(stale), Comm::new(b));
    }
}
