//! Where events come from.

pub mod align;
pub mod feed;
pub mod kafka;
