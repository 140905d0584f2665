//! The per-client delta / merge / aggregate pipeline (filled in by the state-pipeline work).
