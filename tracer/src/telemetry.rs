//! The typed counter set: every counter the tracer reports, kernel-side and userspace, each with
//! its name, its kind and a doc line, so that exporters and tools can tell a loss from an
//! activity without a table of names of their own.
//!
//! A module that counts declares its counters once with [`counter_set!`]: the macro makes a
//! struct of atomics and the static [`CounterInfo`] table that describes them.

use std::sync::atomic::AtomicU64;

/// What a counter measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CounterKind {
    /// Something was not recorded or not reported (an event, a connection, an enrichment): a
    /// non-zero delta means the output is incomplete.
    Loss,
    /// Work done (events seen, lookups, entries refreshed): monotonic, fine at any value.
    Activity,
    /// A level at the moment of the call (entries held), not a running total: reported as is,
    /// never turned into a delta.
    Gauge,
}

impl CounterKind {
    /// `loss`, `activity` or `gauge`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Loss => "loss",
            Self::Activity => "activity",
            Self::Gauge => "gauge",
        }
    }
}

/// The description of one counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CounterInfo {
    /// Stable name, `snake_case`, unique across the whole set.
    pub name: &'static str,
    /// What it measures.
    pub kind: CounterKind,
    /// One line for humans (Prometheus `HELP`, `nettrace`'s header).
    pub doc: &'static str,
}

impl CounterInfo {
    /// A loss counter.
    pub const fn loss(name: &'static str, doc: &'static str) -> Self {
        Self {
            name,
            kind: CounterKind::Loss,
            doc,
        }
    }

    /// An activity counter.
    pub const fn activity(name: &'static str, doc: &'static str) -> Self {
        Self {
            name,
            kind: CounterKind::Activity,
            doc,
        }
    }
}

/// One counter's value: a total since start, a per-client delta, or a gauge's level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Which counter.
    pub info: CounterInfo,
    /// Its value.
    pub value: u64,
}

impl Sample {
    /// `info` with `value`.
    pub const fn new(info: CounterInfo, value: u64) -> Self {
        Self { info, value }
    }
}

/// Anything that owns counters and can list them.
pub trait CounterSource {
    /// Appends every counter with its current value to `out`.
    fn collect(&self, out: &mut Vec<Sample>);
}

/// Adds `n` to a counter (relaxed: counters order nothing).
#[inline]
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

/// Declares a struct of `AtomicU64` counters with its static [`CounterInfo`] table and a
/// [`CounterSource`] implementation. Each field names its kind (`Loss`, `Activity`, `Gauge`)
/// and carries one doc line, which becomes the counter's `doc`.
///
/// ```ignore
/// counter_set! {
///     /// Counters of the route cache.
///     pub struct RouteCounters {
///         /// Lookups answered from the cache.
///         route_cache_hits: Activity,
///     }
/// }
/// ```
#[macro_export]
macro_rules! counter_set {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[doc = $doc:literal])+ $field:ident : $kind:ident ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        $vis struct $name {
            $( $(#[doc = $doc])+ pub $field: ::std::sync::atomic::AtomicU64, )*
        }

        impl $name {
            /// The description of every counter of this set, in declaration order.
            pub const INFO: &'static [$crate::telemetry::CounterInfo] = &[
                $( $crate::telemetry::CounterInfo {
                    name: stringify!($field),
                    kind: $crate::telemetry::CounterKind::$kind,
                    doc: concat!($($doc),+).trim_ascii(),
                }, )*
            ];

            /// Every counter's current value, in [`Self::INFO`]'s order.
            pub fn values(&self) -> ::std::vec::Vec<u64> {
                ::std::vec![ $( self.$field.load(::std::sync::atomic::Ordering::Relaxed) ),* ]
            }
        }

        impl $crate::telemetry::CounterSource for $name {
            fn collect(&self, out: &mut ::std::vec::Vec<$crate::telemetry::Sample>) {
                for (info, value) in Self::INFO.iter().zip(self.values()) {
                    out.push($crate::telemetry::Sample { info: *info, value });
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    counter_set! {
        /// Test set.
        struct Two {
            /// First
            /// one.
            first: Loss,
            /// Second one.
            second: Gauge,
        }
    }

    #[test]
    fn a_counter_set_lists_its_counters_with_kind_doc_and_value() {
        let set = Two::default();
        bump(&set.second, 7);
        let mut out = Vec::new();
        set.collect(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].info.name, "first");
        assert_eq!(out[0].info.kind, CounterKind::Loss);
        assert_eq!(out[0].info.doc, "First one.");
        assert_eq!((out[1].info.name, out[1].value), ("second", 7));
        assert_eq!(out[1].info.kind.as_str(), "gauge");
    }
}
