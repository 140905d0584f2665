//! The packet-capture benchmark's floor (`benches/benches/capture.rs`): `cgroup_skb` programs
//! that do nothing and let every packet through. Attached to the same hooks as the capture, they
//! measure what the kernel charges for running any program there (the cgroup hook's dispatch,
//! the program's entry and exit), so the capture's own work is what it adds on top. They exist
//! only for that benchmark: the tracer never attaches them (they are in no probe table).

use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};

#[cgroup_skb(ingress)]
pub fn nt_floor_in(_ctx: SkBuffContext) -> i32 {
    1
}

#[cgroup_skb(egress)]
pub fn nt_floor_out(_ctx: SkBuffContext) -> i32 {
    1
}
