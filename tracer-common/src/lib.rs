//! `#[repr(C)]` types and names shared by the tracer's eBPF programs and its userspace library.
//!
//! Every type here is plain old data with explicit padding fields (no implicit padding, no `bool`),
//! so that map keys hash the same on both sides and `aya::Pod` is sound.
#![no_std]

pub mod classify;
pub mod conn;
pub mod counters;
pub mod http;
pub mod linux;
pub mod names;
pub mod offsets;
pub mod packet;
pub mod tcp_state;
pub mod tls;
pub mod tracepoint;

#[cfg(feature = "user")]
mod user;
