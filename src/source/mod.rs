//! Where events come from.

pub mod feed;
pub mod kafka;
