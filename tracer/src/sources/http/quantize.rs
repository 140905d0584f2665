//! Path quantization, as Datadog's USM URL quantizer (`protocols/http/quantization.go`,
//! behaviour only): each `/`-separated segment made only of ASCII letters, `-` and `_` is kept,
//! and so is an API version (`v` followed by digits, e.g. `v2`, `v1.2`); any other segment (one
//! with a digit or another character: numeric ids, hex ids, UUIDs, `file.txt`) becomes `*`.
//! Empty segments are kept (`/a//b`, a trailing `/`). Quantizing twice changes nothing (`*`
//! itself becomes `*`).
//!
//! One difference, on purpose: Datadog's tokenizer never looks at a last segment of one
//! character (`/users/1` stays `/users/1`), and drops it when an earlier segment was replaced
//! (`/1a/2` becomes `/*`). Here every segment is judged alike: `/users/1` → `/users/*`,
//! `/1a/2` → `/*/*`.

/// Writes `path` quantized into `out` (cleared first); returns whether it differs from `path`.
pub(crate) fn quantize(path: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut changed = false;
    for (i, segment) in path.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        if kept(segment) {
            out.extend_from_slice(segment);
        } else {
            out.push(b'*');
            changed |= segment != b"*";
        }
    }
    changed
}

/// Whether a segment stays as it is: letters, `-` and `_` only (or empty), or an API version.
fn kept(segment: &[u8]) -> bool {
    let (mut allowed, mut digits, mut other) = (0usize, 0usize, 0usize);
    for &b in segment {
        match b {
            b'0'..=b'9' => digits += 1,
            b'a'..=b'z' | b'A'..=b'Z' | b'-' | b'_' => allowed += 1,
            _ => other += 1,
        }
    }
    if digits == 0 && other == 0 {
        return true;
    }
    // Datadog's API-version rule: the only letter is a leading `v`, with at least one digit
    // (other characters allowed: `v1.2`).
    allowed == 1 && digits > 0 && segment.first() == Some(&b'v')
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn q(path: &str) -> String {
        let mut out = Vec::new();
        quantize(path.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn datadog_examples() {
        // The cases of Datadog's quantizer tests (`quantization_test.go`), same expectations.
        for (path, expected) in [
            ("/", "/"),
            ("/abc", "/abc"),
            ("/trailing/slash/", "/trailing/slash/"),
            ("/users/1/view", "/users/*/view"),
            ("/abc/def", "/abc/def"),
            ("/abc/123/def", "/abc/*/def"),
            ("/abc/def123", "/abc/*"),
            ("/abc#def", "/*"),
            ("/v5/abc", "/v5/abc"),
            ("/latest/meta-data", "/latest/meta-data"),
            ("/health_check", "/health_check"),
            ("/abc/F05065B2-7934-4480-8500-A2C40D76F59F", "/abc/*"),
        ] {
            assert_eq!(q(path), expected, "{path}");
            assert_eq!(q(expected), expected, "idempotent on {expected}");
        }
    }

    #[test]
    fn ids_of_every_shape_become_a_star() {
        for (path, expected) in [
            ("/orders/123/view", "/orders/*/view"),
            ("/blobs/5f2a9c0e", "/blobs/*"),
            ("/u/550e8400-e29b-41d4-a716-446655440000/x", "/u/*/x"),
            ("/api/v1.2/items/42", "/api/v1.2/items/*"),
            ("/api/v2beta/x", "/api/*/x"),
            ("/static/app.js", "/static/*"),
            ("/a//b", "/a//b"),
            ("*", "*"),
            ("", ""),
        ] {
            assert_eq!(q(path), expected, "{path}");
        }
    }

    #[test]
    fn a_last_one_character_segment_is_judged_too() {
        // Where Datadog's tokenizer stops early (see the module docs).
        assert_eq!(q("/users/1"), "/users/*");
        assert_eq!(q("/1a/2"), "/*/*");
        assert_eq!(q("/a/b"), "/a/b");
    }

    #[test]
    fn changed_tells_whether_the_path_moved() {
        let mut out = Vec::new();
        assert!(quantize(b"/users/7", &mut out));
        assert!(!quantize(b"/users/*", &mut out));
        assert!(!quantize(b"/users", &mut out));
    }

    proptest! {
        #[test]
        fn idempotent_and_segment_preserving(path in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut once = Vec::new();
            quantize(&path, &mut once);
            let mut twice = Vec::new();
            prop_assert!(!quantize(&once, &mut twice));
            prop_assert_eq!(&once, &twice);
            let slashes = |p: &[u8]| p.iter().filter(|&&b| b == b'/').count();
            prop_assert_eq!(slashes(&path), slashes(&once));
        }
    }
}
