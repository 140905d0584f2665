//! Everything that touches the kernel.
