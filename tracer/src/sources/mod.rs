//! Data sources fed by the kernel's packet capture (pure userspace: they consume ring records
//! decoded by [`crate::decode::packet_record`] and never touch the kernel themselves).
//!
//! - [`dns`]: DNS statistics per conversation and reverse DNS (IP → names).

pub mod dns;
