//! orderlake: exactly-once ingestion of order events from Kafka into Delta Lake (bronze → silver
//! → gold) and MongoDB. The binary (`main.rs`) only parses arguments; everything is here.
//!
//! Data flows one way: `source` → `decode` → `lake` (bronze, silver) → `gold` → `sink`, driven by
//! `pipeline`.

pub mod bench;
pub mod cdc_config;
pub mod cdc_gen;
pub mod cli;
pub mod config;
pub mod decode;
pub mod error;
pub mod gold;
pub mod lake;
pub mod maintain;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod produce;
pub mod query;
pub mod rebuild;
pub mod redact;
pub mod sink;
pub mod source;
pub mod status;

pub use error::{Error, Result};
