//! Runs an `orderlake` (or peer) process the way a user would, and measures it from outside: wall
//! time and peak resident memory (`VmHWM` from `/proc`, sampled until the process exits), and how
//! much of it was anonymous memory (heap, stacks) rather than mapped files (the executable's code,
//! which the page cache shares and can drop).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// What one measured process did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measured {
    pub seconds: f64,
    pub peak_rss_mib: f64,
    /// The highest `RssAnon` seen in the samples (every 50 ms): a spike between two can be missed.
    pub peak_anon_mib: f64,
}

/// A running measured process; its peak RSS is sampled by [`Running::sample`] and at the end.
pub struct Running {
    child: Child,
    started: Instant,
    peak_kib: u64,
    peak_anon_kib: u64,
    pub log: PathBuf,
}

impl Running {
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Result<Running> {
        let file =
            std::fs::File::create(&log).map_err(|e| Error::Other(format!("bench log {}: {e}", log.display())))?;
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|e| Error::Other(format!("cannot start {:?}: {e}", cmd.get_program())))?;
        Ok(Running { child, started: Instant::now(), peak_kib: 0, peak_anon_kib: 0, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads the process's high-water mark (the kernel keeps the maximum, so sampling now and then
    /// only has to happen before the process exits) and its anonymous memory now.
    pub fn sample(&mut self) {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())) {
            let kib = |field: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(field))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            };
            if let Some(k) = kib("VmHWM:") {
                self.peak_kib = self.peak_kib.max(k);
            }
            if let Some(k) = kib("RssAnon:") {
                self.peak_anon_kib = self.peak_anon_kib.max(k);
            }
        }
    }

    /// Waits for the exit, at most `limit` from the start, sampling memory meanwhile; a non-zero
    /// exit is an error quoting the log.
    pub async fn wait(self, limit: Duration) -> Result<Measured> {
        let deadline = self.started + limit;
        self.wait_until(deadline, format!("still running after {limit:?}")).await
    }

    async fn wait_until(mut self, deadline: Instant, late: String) -> Result<Measured> {
        loop {
            self.sample();
            if let Some(status) = self.child.try_wait().map_err(|e| Error::Other(e.to_string()))? {
                let seconds = self.started.elapsed().as_secs_f64();
                if !status.success() {
                    let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    return Err(Error::Other(format!(
                        "benchmarked process failed ({status}); log {}:\n{}",
                        self.log.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )));
                }
                let mib = |kib: u64| kib as f64 / 1024.0;
                return Ok(Measured {
                    seconds,
                    peak_rss_mib: mib(self.peak_kib),
                    peak_anon_mib: mib(self.peak_anon_kib),
                });
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err(Error::Other(format!("benchmarked process {late}; killed")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM (a clean stop), then waits at most `limit` from now: a long freshness phase may
    /// have run for longer than that already.
    pub async fn stop(self, limit: Duration) -> Result<Measured> {
        let _ = Command::new("kill").arg("-15").arg(self.child.id().to_string()).status();
        self.wait_until(Instant::now() + limit, format!("still running {limit:?} after SIGTERM")).await
    }
}
