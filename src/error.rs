//! The library's error type: one enum so callers can tell configuration mistakes (fix and restart)
//! from service failures (retry) without parsing messages.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// A setting is missing or wrong; the message names the key and the fix.
    #[error("configuration: {0}")]
    Config(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("delta lake: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("datafusion: {0}")]
    DataFusion(#[from] deltalake::datafusion::error::DataFusionError),
    #[error("polars: {0}")]
    Polars(#[from] polars::prelude::PolarsError),
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
    /// A stop (SIGTERM/SIGINT) was requested while work was being retried.
    #[error("stopped")]
    Stopped,
    /// Work given up because the batch it belonged to failed; the batch's retry redoes it.
    #[error("abandoned: the batch it belonged to failed")]
    Abandoned,
    /// Raised only by the test-only fault-injection setting, to simulate a crash at a stage boundary.
    #[error("injected fault at stage '{0}'")]
    InjectedFault(String),
}

impl Error {
    /// Whether retrying the same work later can succeed: everything but configuration mistakes and
    /// injected test faults (a deterministic failure keeps failing, and the log says so each time).
    /// A Delta commit lost a race with another writer (another instance, typically).
    pub fn is_commit_conflict(&self) -> bool {
        use deltalake::DeltaTableError as D;
        use deltalake::kernel::transaction::TransactionError as T;
        matches!(
            self,
            Error::Delta(
                D::VersionAlreadyExists(_)
                    | D::Transaction {
                        source: T::CommitConflict(_) | T::VersionAlreadyExists(_) | T::MaxCommitAttempts(_)
                    }
            )
        )
    }

    pub fn is_transient(&self) -> bool {
        !matches!(self, Error::Config(_) | Error::InjectedFault(_) | Error::Stopped)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
