//! Integration tests against the real local services started by `infra/local/start.sh`
//! (tansu on :9092, Azurite on :10000, SecantusDB on :27017). One test binary so the heavy
//! dependency tree is linked once. Every test uses its own topic, group, container and database.

mod align;
mod backpressure;
mod bad_input;
mod bench;
mod carried;
mod cdc;
mod config_errors;
mod crash;
mod deploy;
mod e2e;
mod gold_window;
mod held;
mod lake_format;
mod late_changes;
mod logs;
mod maintain;
mod metrics;
mod moved;
mod notebooks;
mod outage;
mod overlap;
mod publish;
mod query;
mod rebalance;
mod rebuild;
mod reference;
mod restart;
mod secure;
mod stack;
mod stalled;
mod support;
mod terraform;
