//! Sinks that publish gold outside the lake.

pub mod mongo;
