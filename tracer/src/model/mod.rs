//! The userspace data model (filled in by the state-pipeline work).
