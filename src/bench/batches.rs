//! Whether a batch's cost grows with the tables, read from a measured run's own log. Every batch
//! `orderlake run` commits logs one `batch committed` line with its events and the time its silver
//! and gold work took; the lake part per event of the first batches against the last ones says
//! whether a batch at the end of a long run (big tables) costs more than one at the start. The
//! throughput figures cannot show this: publishing to MongoDB runs beside the lake work and bounds
//! the whole phase, hiding a lake whose batches slowly get dearer.

/// The lake work (silver + gold) per event at the start and at the end of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchCost {
    /// Batches the figure is taken over (the first one, which creates the tables, left out).
    pub batches: usize,
    /// Median over the first third of those batches, in µs of lake work per event.
    pub early_us_per_event: f64,
    /// Median over the last third.
    pub late_us_per_event: f64,
    /// orderlake's CPU time per event (`cpu_ms`: all its threads, background work included) over
    /// the first and the last third, in µs; `None` for a log without `cpu_ms`. Wall time grows
    /// when the other servers on the machine get busier late in a run; CPU time only when
    /// orderlake does more work per event.
    pub cpu_us_per_event: Option<(f64, f64)>,
}

impl BatchCost {
    /// Late over early: 1.00 is a flat per-batch cost; above 1, batches got dearer as the tables grew.
    pub fn growth(&self) -> f64 {
        self.late_us_per_event / self.early_us_per_event
    }

    /// Late over early CPU per event, when the log has it.
    pub fn cpu_growth(&self) -> Option<f64> {
        self.cpu_us_per_event.map(|(early, late)| late / early)
    }

    /// Reads the `batch committed` lines of an `orderlake run` log (the default text format).
    /// `None` when the run committed fewer than four batches after its first, too few for thirds.
    pub fn from_log(log: &str) -> Option<BatchCost> {
        // (events, lake ms, CPU ms) per batch.
        let rows: Vec<(f64, f64, Option<f64>)> = log
            .lines()
            .filter(|l| l.contains("batch committed"))
            .filter_map(|l| {
                let events = field(l, "events")?;
                let lake_ms = field(l, "silver_ms")? + field(l, "gold_ms")?;
                (events > 0.0).then(|| (events, lake_ms, field(l, "cpu_ms")))
            })
            .skip(1)
            .collect();
        if rows.len() < 4 {
            return None;
        }
        let third = rows.len() / 3;
        let (early, late) = (&rows[..third], &rows[rows.len() - third..]);
        let lake =
            |rows: &[(f64, f64, Option<f64>)]| median(&rows.iter().map(|r| r.1 * 1000.0 / r.0).collect::<Vec<_>>());
        // Summed, not a median: the CPU of work a batch leaves to the background (aggregates,
        // MongoDB, maintenance) is counted in whichever batch line comes next.
        let cpu = |rows: &[(f64, f64, Option<f64>)]| {
            let ms: Option<f64> = rows.iter().map(|r| r.2).sum();
            Some(ms? * 1000.0 / rows.iter().map(|r| r.0).sum::<f64>())
        };
        Some(BatchCost {
            batches: rows.len(),
            early_us_per_event: lake(early),
            late_us_per_event: lake(late),
            cpu_us_per_event: cpu(early).zip(cpu(late)),
        })
    }
}

/// The number after ` name=` in a tracing text line.
fn field(line: &str, name: &str) -> Option<f64> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    let digits: &str = line[at..].split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(events: u32, silver: u32, gold: u32) -> String {
        with_cpu(events, silver, gold, events / 100)
    }

    fn with_cpu(events: u32, silver: u32, gold: u32, cpu: u32) -> String {
        format!(
            "2026-11-22T14:33:13.717101Z  INFO orderlake::pipeline::stages: batch committed topic=\"t\" \
             bronze_version=2 events={events} dead_letters=0 orders=8875 silver_ms={silver} gold_ms={gold} \
             total_ms=625 cpu_ms={cpu} rss_mib=242 mongo_published=Some((17970, 0, 0))"
        )
    }

    #[test]
    fn early_and_late_thirds_are_compared_per_event_without_the_first_batch() {
        let mut log =
            vec!["2026-11-22T14:33:12Z  INFO orderlake: partitions assigned".to_string(), line(100, 900, 900)];
        // Early batches: 10 µs per event; the last third at twice the batch size costs 15 µs per event.
        for _ in 0..3 {
            log.push(line(30_000, 150, 150));
        }
        log.push(line(40_000, 200, 300));
        log.push(line(50_000, 300, 300));
        for _ in 0..3 {
            log.push(line(60_000, 400, 500));
        }
        let cost = BatchCost::from_log(&log.join("\n")).expect("enough batches");
        assert_eq!(cost.batches, 8);
        assert!((cost.early_us_per_event - 10.0).abs() < 1e-9, "{cost:?}");
        assert!((cost.late_us_per_event - 15.0).abs() < 1e-9, "{cost:?}");
        assert!((cost.growth() - 1.5).abs() < 1e-9);
        // Every line has 10 µs of CPU per event: flat.
        assert_eq!(cost.cpu_us_per_event, Some((10.0, 10.0)));
    }

    #[test]
    fn cpu_per_event_is_summed_over_each_third() {
        let mut log = vec![with_cpu(100, 9, 9, 50)];
        // Early third: 300 + 0 + 300 ms over 60,000 events (a batch whose background work shows
        // in the next line still averages out); late third: 900 ms over 60,000 events.
        log.extend([with_cpu(20_000, 100, 100, 300), with_cpu(20_000, 100, 100, 0), with_cpu(20_000, 100, 100, 300)]);
        log.extend([with_cpu(20_000, 100, 100, 400), with_cpu(20_000, 100, 100, 400), with_cpu(20_000, 100, 100, 400)]);
        log.extend([with_cpu(20_000, 100, 100, 300), with_cpu(20_000, 100, 100, 300), with_cpu(20_000, 100, 100, 300)]);
        let cost = BatchCost::from_log(&log.join("\n")).unwrap();
        assert_eq!(cost.cpu_us_per_event, Some((10.0, 15.0)));
        assert_eq!(cost.cpu_growth(), Some(1.5));
        // A log from before `cpu_ms` existed has no CPU figure, the wall-time one stays.
        let old = log.iter().map(|l| l.replace(" cpu_ms=", " was_cpu=")).collect::<Vec<_>>().join("\n");
        let cost = BatchCost::from_log(&old).unwrap();
        assert_eq!((cost.cpu_us_per_event, cost.batches), (None, 9));
    }

    #[test]
    fn a_run_with_too_few_batches_or_no_batch_lines_has_no_figure() {
        let few: Vec<String> = (0..4).map(|_| line(50_000, 200, 300)).collect();
        assert_eq!(BatchCost::from_log(&few.join("\n")), None);
        assert_eq!(BatchCost::from_log("bronze only: nothing refined\n"), None);
    }

    #[test]
    fn a_field_name_that_ends_another_is_not_mistaken_for_it() {
        // `events=` must not match inside `max_events=`, nor `gold_ms=` inside `old_gold_ms=`.
        let l = "batch committed max_events=7 events=10 silver_ms=1 old_gold_ms=99 gold_ms=2";
        assert_eq!(field(l, "events"), Some(10.0));
        assert_eq!(field(l, "gold_ms"), Some(2.0));
        assert_eq!(field(l, "rss_mib"), None);
    }
}
