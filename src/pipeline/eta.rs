//! The `run --once` progress line: events done of the total the run started with, rate and ETA,
//! every few seconds, and a closing line. A scheduled job's log then answers "how far, how fast,
//! how long" without `status`.

use std::time::{Duration, Instant};

pub struct Eta {
    started: Instant,
    last: Instant,
    /// Events between what bronze held and the end offsets at start (retention may make it less).
    to_do: u64,
}

const EVERY: Duration = Duration::from_secs(5);

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

impl Eta {
    pub fn new(to_do: u64) -> Self {
        let now = Instant::now();
        Eta { started: now, last: now, to_do }
    }

    pub fn to_do(&self) -> u64 {
        self.to_do
    }

    fn rate(&self, done: u64) -> f64 {
        done as f64 / self.started.elapsed().as_secs_f64().max(1e-3)
    }

    /// The progress line, when one is due.
    pub fn tick(&mut self, done: u64) -> Option<String> {
        if self.last.elapsed() < EVERY {
            return None;
        }
        self.last = Instant::now();
        let rate = self.rate(done);
        let pct = if self.to_do == 0 { 100.0 } else { (done as f64 * 100.0 / self.to_do as f64).min(100.0) };
        let left = self.to_do.saturating_sub(done);
        let eta = if rate > 0.0 { human(Duration::from_secs_f64(left as f64 / rate)) } else { "unknown".into() };
        Some(format!("run --once: {done} of {} events ({pct:.0}%), {rate:.0} events/s, ETA {eta}", self.to_do))
    }

    /// The closing line.
    pub fn done(&self, done: u64, batches: u64) -> String {
        format!(
            "run --once done: {done} events in {batches} batches, {} ({:.0} events/s)",
            human(self.started.elapsed()),
            self.rate(done)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(human(Duration::from_secs(42)), "42s");
        assert_eq!(human(Duration::from_secs(96)), "1m36s");
        assert_eq!(human(Duration::from_secs(7260)), "2h01m");
    }

    #[test]
    fn the_line_says_done_total_rate_and_eta() {
        let mut e = Eta::new(1000);
        e.last -= EVERY;
        e.started -= Duration::from_secs(10);
        let line = e.tick(250).expect("due");
        assert!(line.starts_with("run --once: 250 of 1000 events (25%), 25 events/s, ETA 30s"), "{line}");
        assert!(e.tick(260).is_none(), "not again within {EVERY:?}");
    }
}
