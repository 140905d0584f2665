//! The 64-bit connection cookie: the kernel's socket cookie re-hashed with the tuple.
//!
//! Why re-hash: the kernel cookie identifies a socket, but one socket used by two processes is
//! two kernel entries (the pid is part of the key), and Datadog saw 32-bit cookies collide at
//! high churn. Mixing the full tuple into a 64-bit hash makes the cookie unique per kernel entry
//! for all practical purposes (a collision among 100k live connections has odds of about 3e-10).
//!
//! The function (written for this crate, not a standard hash): the state starts as
//! `finalize(kernel_cookie ^ SEED)`; each 8-byte little-endian word `w` of the tuple encoding
//! ([`ConnectionTuple::encode`], the tail zero-padded) is absorbed as
//! `state = finalize(state.rotate_left(23) ^ w).wrapping_add(GOLDEN)`; the result is
//! `finalize(state ^ encoded_length)`. `finalize` is the SplitMix64 finalizer (two
//! xor-shift-multiply rounds), which makes every input bit affect every output bit. It is not
//! keyed and not meant to resist deliberate collisions: the state pipeline detects and counts
//! those (same cookie, different tuple).

use crate::model::tuple::{ConnectionTuple, TUPLE_BYTES_MAX};

const SEED: u64 = 0x243F_6A88_85A3_08D3;
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finalizer: a bijection on u64 with full avalanche.
const fn finalize(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Hashes a kernel cookie and arbitrary bytes (see the module docs for the exact function).
pub fn hash_cookie_bytes(kernel_cookie: u64, bytes: &[u8]) -> u64 {
    let mut state = finalize(kernel_cookie ^ SEED);
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        for (dst, src) in word.iter_mut().zip(chunk) {
            *dst = *src;
        }
        state = finalize(state.rotate_left(23) ^ u64::from_le_bytes(word)).wrapping_add(GOLDEN);
    }
    finalize(state ^ bytes.len() as u64)
}

/// The userspace cookie of a kernel connection entry: `kernel_cookie` mixed with the tuple.
pub fn connection_cookie(kernel_cookie: u64, tuple: &ConnectionTuple) -> u64 {
    let mut buf = [0u8; TUPLE_BYTES_MAX];
    let len = tuple.encode(&mut buf);
    hash_cookie_bytes(kernel_cookie, buf.get(..len).unwrap_or(&buf))
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashSet,
        net::{IpAddr, Ipv4Addr},
    };

    use super::*;
    use crate::model::Protocol;

    fn tuple(sport: u16, pid: u32) -> ConnectionTuple {
        ConnectionTuple {
            src: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 4, 5, 6)),
            sport,
            dport: 80,
            pid,
            netns: 1,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn cookie_is_deterministic() {
        assert_eq!(
            connection_cookie(42, &tuple(1, 1)),
            connection_cookie(42, &tuple(1, 1))
        );
    }

    #[test]
    fn same_kernel_cookie_with_different_pid_gives_different_cookies() {
        assert_ne!(
            connection_cookie(42, &tuple(1, 1)),
            connection_cookie(42, &tuple(1, 2))
        );
    }

    #[test]
    fn cookies_of_200k_distinct_entries_do_not_collide() {
        let mut seen = HashSet::new();
        for kernel_cookie in 0..50u64 {
            for sport in 0..4000u16 {
                assert!(seen.insert(connection_cookie(kernel_cookie, &tuple(sport, 9))));
            }
        }
    }

    #[test]
    fn flipping_one_input_bit_flips_about_half_the_output_bits() {
        let base = connection_cookie(0x1234_5678, &tuple(1000, 77));
        let mut total = 0u32;
        for bit in 0..64 {
            total +=
                (base ^ connection_cookie(0x1234_5678 ^ (1 << bit), &tuple(1000, 77))).count_ones();
        }
        for bit in 0..16 {
            total +=
                (base ^ connection_cookie(0x1234_5678, &tuple(1000 ^ (1 << bit), 77))).count_ones();
        }
        let mean = f64::from(total) / 80.0;
        assert!((28.0..36.0).contains(&mean), "mean flipped bits {mean}");
    }

    #[test]
    fn length_is_mixed_so_trailing_zero_bytes_matter() {
        assert_ne!(
            hash_cookie_bytes(1, &[1, 2, 3]),
            hash_cookie_bytes(1, &[1, 2, 3, 0])
        );
    }
}
