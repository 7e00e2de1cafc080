//! One retry policy for everything the pipeline retries (batches, catch-up, position lookups):
//! permanent errors and stop requests end it at once, `--once` runs give up after
//! `run.once_retry_limit_ms`, everything else waits with exponential backoff up to `run.max_backoff_ms`.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::shutdown::Shutdown;
use crate::config::Settings;
use crate::error::{Error, Result};

pub struct Retry {
    started: Instant,
    backoff: Duration,
    max: Duration,
    limit: Option<Duration>,
    /// 1 for the first try; grows with each retry.
    pub attempt: u32,
}

impl Retry {
    pub fn new(settings: &Settings, once: bool) -> Retry {
        Retry {
            started: Instant::now(),
            backoff: Duration::from_millis(100),
            max: settings.max_backoff,
            limit: once.then_some(settings.once_retry_limit),
            attempt: 1,
        }
    }

    /// Called after a failure: returns the error when giving up, or `Ok` once it is time to try again.
    pub async fn after(&mut self, e: Error, what: &str, shutdown: &Shutdown) -> Result<()> {
        if !e.is_transient() || self.limit.is_some_and(|l| self.started.elapsed() >= l) {
            return Err(e);
        }
        if e.is_commit_conflict() {
            // Expected with several instances in one group: both bring silver and gold up to date.
            info!(
                attempt = self.attempt,
                retry_in_ms = self.backoff.as_millis() as u64,
                "{what}: another writer committed first; retrying on the new table version"
            );
        } else {
            warn!(error = %crate::redact::redact(&e.to_string()), attempt = self.attempt,
                retry_in_ms = self.backoff.as_millis() as u64, "{what}; retrying");
        }
        if shutdown.sleep_or_stop(self.backoff).await {
            return Err(Error::Stopped);
        }
        self.backoff = (self.backoff * 2).min(self.max);
        self.attempt += 1;
        Ok(())
    }
}
