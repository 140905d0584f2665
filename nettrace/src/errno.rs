//! Names of the errnos a TCP connection fails with.

use std::borrow::Cow;

/// The symbolic name of `errno` when it is one a connection can fail with, else `None`.
pub fn name(errno: u16) -> Option<&'static str> {
    let name = match i32::from(errno) {
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETRESET => "ENETRESET",
        libc::EPIPE => "EPIPE",
        libc::EPROTO => "EPROTO",
        _ => return None,
    };
    Some(name)
}

/// [`name`], or `errno N` for a code without a name here.
pub fn describe(errno: u16) -> Cow<'static, str> {
    match name(errno) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("errno {errno}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_five_reported_failures_have_their_linux_names() {
        assert_eq!(name(111), Some("ECONNREFUSED"));
        assert_eq!(name(104), Some("ECONNRESET"));
        assert_eq!(name(110), Some("ETIMEDOUT"));
        assert_eq!(name(113), Some("EHOSTUNREACH"));
        assert_eq!(name(101), Some("ENETUNREACH"));
    }

    #[test]
    fn unknown_codes_are_described_by_number() {
        assert_eq!(name(0), None);
        assert_eq!(describe(9999), "errno 9999");
        assert_eq!(describe(u16::MAX), "errno 65535");
        assert_eq!(describe(111), "ECONNREFUSED");
    }
}
