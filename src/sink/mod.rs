//! Sinks that publish gold outside the lake.

mod documents;
pub mod mongo;
pub mod queue;
pub mod tombstones;
