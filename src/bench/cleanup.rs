//! What a bench run leaves behind: each phase's lake directory and MongoDB database, removed as
//! soon as the phase's figures and checks are taken (`--keep` keeps them for a look afterwards; a
//! phase that fails returns before its cleanup, so its data stays to be looked at).
//! Repeated runs then do not fill the user's storage, and on the local emulators every phase
//! starts on equal terms: Azurite keeps its blobs in memory and slows as its container fills
//! (session 24 of docs/performance.md). The run's topics stay: tansu 0.6 answers a DeleteTopics
//! of one topic by deleting every topic on the broker, and a broker's retention removes them anyway.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::Ctx;
use crate::config::{Settings, parse_lake_uri};
use crate::lake::Lake;

/// Passes at removing a phase's lake before its failure is reported.
const ATTEMPTS: u64 = 3;

impl Ctx<'_> {
    /// Removes `phase`'s lake directory and MongoDB database. A failure is reported and the run
    /// goes on: the figures are taken already.
    pub(super) async fn clean(&self, phase: &str) {
        if self.args.keep {
            return;
        }
        let t0 = Instant::now();
        let lake = async {
            let mut s: Settings = self.settings.clone();
            s.lake = parse_lake_uri(&self.lake(phase))?;
            let lake = Lake::new(&s);
            // Azurite now and then drops a request of a bulk delete ("error sending request");
            // a second pass lists what is left and removes it.
            let mut attempt = 1;
            loop {
                match lake.remove_all().await {
                    Err(e) if attempt < ATTEMPTS => {
                        warn!(phase, attempt, error = %e, "bench: removing the phase's lake failed; trying again");
                        tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                        attempt += 1;
                    }
                    done => break done,
                }
            }
        };
        let database = async {
            let uri = self.settings.mongodb_uri.as_deref().unwrap_or_default();
            mongodb::Client::with_uri_str(uri).await?.database(&self.database(phase)).drop().await?;
            Ok::<_, crate::Error>(())
        };
        match tokio::join!(lake, database) {
            (Ok(objects), Ok(())) => {
                info!(phase, objects, ms = t0.elapsed().as_millis() as u64, "bench: phase data removed");
            }
            (lake, db) => warn!(
                phase,
                lake = ?lake.err().map(|e| e.to_string()),
                mongodb = ?db.err().map(|e| e.to_string()),
                "bench: could not remove the phase's data (its figures stand); remove it by hand or ignore"
            ),
        }
    }
}
