//! The benchmark's output: one table of figures and ratios for people, the same as JSON for
//! tools (`bench/results/<id>.json` and `bench/results/latest.json`).

use std::fmt;
use std::path::Path;

use serde_json::{Value, json};

use super::cdc::Figures as Cdc;
use super::ceiling::Ceiling;
use super::child::Measured;
use super::freshness::Latencies;
use super::{Ctx, Phase};
use crate::error::{Error, Result};

pub struct Report {
    pub json: Value,
    text: String,
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    json!({"cpu": cpu, "cores": cores, "memory_gib": mem_gib, "build": if cfg!(debug_assertions) { "debug" } else { "release" }})
}

fn phase_json(p: &Phase, ceiling: f64) -> Value {
    let mut v = json!({"events": p.events, "seconds": p.m.seconds, "events_per_s": p.per_s(),
           "ratio_to_ceiling": p.per_s() / ceiling, "peak_rss_mib": p.m.peak_rss_mib, "peak_anon_mib": p.m.peak_anon_mib});
    if let Some(b) = p.batches {
        v["per_batch"] = json!({"batches": b.batches, "early_us_per_event": b.early_us_per_event,
                                "late_us_per_event": b.late_us_per_event, "growth": b.growth(),
                                "early_cpu_us_per_event": b.cpu_us_per_event.map(|c| c.0),
                                "late_cpu_us_per_event": b.cpu_us_per_event.map(|c| c.1),
                                "cpu_growth": b.cpu_growth()});
    }
    v
}

fn check(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// `v` with `decimals` decimals, or as many more (up to six) as it takes not to print the target
/// itself beside a figure that differs from it (0.4957 against 0.50 read "0.50 — NOT met";
/// "0.496" explains the verdict).
fn shown(v: f64, target: f64, decimals: usize) -> String {
    let mut d = decimals;
    while v != target && d < 6 && format!("{v:.d$}") == format!("{target:.d$}") {
        d += 1;
    }
    format!("{v:.d$}")
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        ctx: &Ctx<'_>,
        produce_per_s: f64,
        ceiling: Ceiling,
        bronze: Phase,
        full: Phase,
        small: Option<(Phase, Ceiling)>,
        fresh: (Latencies, Measured),
        peer: Option<Phase>,
        cdc: Option<Cdc>,
    ) -> Report {
        let c = ceiling.events as f64 / ceiling.seconds;
        let (lat, fresh_m) = fresh;
        let (small, small_ceiling) = small.unzip();
        let scaling = small.map(|s| full.m.seconds / (s.m.seconds * full.events as f64 / s.events as f64));
        let ceiling_scaling =
            small_ceiling.map(|s| ceiling.seconds / (s.seconds * ceiling.events as f64 / s.events as f64));
        let scaling_vs_ceiling = scaling.zip(ceiling_scaling).map(|(o, b)| o / b);
        let small_c = small_ceiling.map_or(c, |s| s.events as f64 / s.seconds);
        let vs_peer = peer.map(|p| full.per_s() / p.per_s());
        let machine = machine();
        let cdc_c = cdc.map(|x| x.ceiling.events as f64 / x.ceiling.seconds);
        let json = json!({
            "id": ctx.id,
            "machine": machine,
            "events": ceiling.events,
            "partitions": ctx.args.partitions,
            "produce_events_per_s": produce_per_s,
            "ceiling": {"events": ceiling.events, "bytes": ceiling.bytes, "seconds": ceiling.seconds, "events_per_s": c},
            "bronze_only": phase_json(&bronze, c),
            "full_pipeline": phase_json(&full, c),
            // The N/10 run against the ceiling on its own topic, where measured.
            "full_pipeline_tenth": small.map(|s| phase_json(&s, small_c)),
            "scaling_time_ratio": scaling,
            "ceiling_tenth": small_ceiling.map(|s| json!({"events": s.events, "bytes": s.bytes, "seconds": s.seconds,
                                                         "events_per_s": s.events as f64 / s.seconds})),
            "ceiling_scaling_time_ratio": ceiling_scaling,
            "scaling_vs_ceiling": scaling_vs_ceiling,
            "freshness": {"rate": ctx.args.rate, "seconds": ctx.args.freshness_secs, "max_latency_ms": ctx.args.max_latency_ms,
                          "hold_batches_ms": ctx.args.hold_batches_ms.unwrap_or(ctx.settings.hold_batches.as_millis() as u64),
                          "produced_per_s": lat.produced_per_s, "tracked_orders": lat.tracked, "seen_orders": lat.seen,
                          "p50_ms": lat.p50_ms, "p95_ms": lat.p95_ms, "p99_ms": lat.p99_ms, "max_ms": lat.max_ms,
                          "peak_rss_mib": fresh_m.peak_rss_mib, "peak_anon_mib": fresh_m.peak_anon_mib},
            "python_peer": peer.map(|p| phase_json(&p, c)),
            "orderlake_vs_peer": vs_peer,
            // The Debezium phases, against their own ceiling (the four table topics).
            "cdc": cdc.zip(cdc_c).map(|(x, cc)| json!({
                "changes": x.changes,
                "ceiling": {"events": x.ceiling.events, "bytes": x.ceiling.bytes, "seconds": x.ceiling.seconds, "events_per_s": cc},
                "bronze_only": phase_json(&x.bronze, cc),
                "full_pipeline": phase_json(&x.full, cc),
            })),
        });

        let mut t = String::new();
        let w = &mut t;
        let _ = fmt::Write::write_fmt(
            w,
            format_args!(
                "orderlake bench {} — {} events, {} partitions, {} build, {} cores ({})\n\n",
                ctx.id,
                ceiling.events,
                ctx.args.partitions,
                machine["build"].as_str().unwrap_or_default(),
                machine["cores"],
                machine["cpu"].as_str().unwrap_or_default()
            ),
        );
        let _ = fmt::Write::write_fmt(
            w,
            format_args!(
                "{:<34}{:>10}{:>10}{:>12}{:>12}{:>14}{:>12}\n",
                "phase", "events", "seconds", "events/s", "× ceiling", "peak RSS MiB", "of it anon"
            ),
        );
        let row = |w: &mut String, name: &str, e: u64, s: f64, c: f64, m: Option<&Measured>| {
            let mib = |f: fn(&Measured) -> f64| m.map_or("-".to_string(), |m| format!("{:.0}", f(m)));
            let _ = fmt::Write::write_fmt(
                w,
                format_args!(
                    "{:<34}{:>10}{:>10.1}{:>12.0}{:>12.2}{:>14}{:>12}\n",
                    name,
                    e,
                    s,
                    e as f64 / s,
                    e as f64 / s / c,
                    mib(|m| m.peak_rss_mib),
                    mib(|m| m.peak_anon_mib)
                ),
            );
        };
        row(w, "ceiling (bare rdkafka consumer)", ceiling.events, ceiling.seconds, c, None);
        row(w, "bronze only", bronze.events, bronze.m.seconds, c, Some(&bronze.m));
        row(w, "full pipeline (bronze→gold→MongoDB)", full.events, full.m.seconds, c, Some(&full.m));
        if let Some(s) = small_ceiling {
            row(w, "ceiling, N/10 (its own topic)", s.events, s.seconds, small_c, None);
        }
        if let Some(s) = small {
            row(w, "full pipeline, N/10 (its topic)", s.events, s.m.seconds, small_c, Some(&s.m));
        }
        if let Some(p) = peer {
            row(w, "python peer (confluent-kafka+polars)", p.events, p.m.seconds, c, Some(&p.m));
        }
        if let Some((x, cc)) = cdc.zip(cdc_c) {
            row(w, "CDC ceiling (4 Debezium topics)", x.ceiling.events, x.ceiling.seconds, cc, None);
            row(w, "CDC bronze only", x.bronze.events, x.bronze.m.seconds, cc, Some(&x.bronze.m));
            row(w, "CDC full (MERGE→gold→MongoDB)", x.full.events, x.full.m.seconds, cc, Some(&x.full.m));
        }
        w.push_str(
            "(peak RSS counts mapped files too, mostly the executable's code, which the page cache shares and can \
             drop; 'of it anon' is heap and stacks, sampled every 50 ms; CDC rows are against the CDC ceiling)\n",
        );
        let _ = fmt::Write::write_fmt(
            w,
            format_args!(
                "\nfreshness at {}/s (batch max latency {} ms, held for MongoDB up to {} ms): p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms \
                 ({} of {} tracked orders seen), peak RSS {:.0} MiB ({:.0} anon)\n",
                ctx.args.rate,
                ctx.args.max_latency_ms,
                ctx.args.hold_batches_ms.unwrap_or(ctx.settings.hold_batches.as_millis() as u64),
                lat.p50_ms,
                lat.p95_ms,
                lat.p99_ms,
                lat.max_ms,
                lat.seen,
                lat.tracked,
                fresh_m.peak_rss_mib,
                fresh_m.peak_anon_mib
            ),
        );
        if let Some(r) = scaling {
            let _ = fmt::Write::write_fmt(
                w,
                format_args!(
                    "scaling: time(N) / (10 × time(N/10)) = {r:.2}  (1.00 = linear; above 1 = per-event cost grows)\n"
                ),
            );
        }
        if let (Some(b), Some(v)) = (ceiling_scaling, scaling_vs_ceiling) {
            let _ = fmt::Write::write_fmt(
                w,
                format_args!(
                    "the broker's own scaling (ceiling, same ratio) = {b:.2}; orderlake's against it = {v:.2}  (above 1 \
                     = orderlake's time grows faster than the bare consumer's)\n"
                ),
            );
        }
        let batch_growth = full.batches.map(|b| b.growth());
        let _ = match full.batches {
            Some(b) => fmt::Write::write_fmt(
                w,
                format_args!(
                    "per-batch lake cost (silver + gold per event, full pipeline): {:.1} µs in the first third of its \
                     {} batches, {:.1} µs in the last third: growth {:.2}  (1.00 = flat as the tables grow)\n",
                    b.early_us_per_event,
                    b.batches,
                    b.late_us_per_event,
                    b.growth()
                ),
            ),
            None => fmt::Write::write_fmt(
                w,
                format_args!(
                    "per-batch cost: not measured (full.log has fewer than five `batch committed` lines; a bigger \
                     --events, or ORDERLAKE_LOG keeping orderlake at info)\n"
                ),
            ),
        };
        if let Some((b, (early, late))) = full.batches.and_then(|b| Some((b, b.cpu_us_per_event?))) {
            let _ = fmt::Write::write_fmt(
                w,
                format_args!(
                    "per-batch CPU (all of orderlake's threads, per event): {early:.1} µs in the first third, {late:.1} µs \
                     in the last: growth {:.2}  (wall time above also grows when the other servers take the cores)\n",
                    b.cpu_growth().unwrap_or_default()
                ),
            );
        }
        let _ = fmt::Write::write_fmt(w, format_args!("\ntargets (this machine, ratios within this run):\n"));
        let bronze_r = bronze.per_s() / c;
        let full_r = full.per_s() / c;
        let peak = bronze.m.peak_rss_mib.max(full.m.peak_rss_mib).max(fresh_m.peak_rss_mib);
        let mut lines = vec![
            format!("  bronze ≥ 0.80 × ceiling: {} — {}", shown(bronze_r, 0.8, 2), check(bronze_r >= 0.8)),
            format!("  full pipeline ≥ 0.50 × ceiling: {} — {}", shown(full_r, 0.5, 2), check(full_r >= 0.5)),
            format!(
                "  freshness p99 ≤ 2000 ms at {}/s: {:.0} ms — {}",
                ctx.args.rate,
                lat.p99_ms,
                check(lat.p99_ms <= 2000.0)
            ),
            format!("  peak RSS ≤ 512 MiB: {peak:.0} MiB — {}", check(peak <= 512.0)),
        ];
        if let Some(v) = vs_peer {
            lines.push(format!("  ≥ 10 × the Python peer: {} × — {}", shown(v, 10.0, 1), check(v >= 10.0)));
        }
        if let Some(r) = scaling {
            lines.push(format!("  linear scaling (ratio ≤ 1.25): {} — {}", shown(r, 1.25, 2), check(r <= 1.25)));
        }
        if let Some(v) = scaling_vs_ceiling {
            lines.push(format!(
                "  linear scaling against the broker's own (≤ 1.25): {} — {}",
                shown(v, 1.25, 2),
                check(v <= 1.25)
            ));
        }
        if let Some(g) = batch_growth {
            lines.push(format!(
                "  per-batch cost flat as tables grow (growth ≤ 1.25): {} — {}",
                shown(g, 1.25, 2),
                check(g <= 1.25)
            ));
        }
        if let Some(g) = full.batches.and_then(|b| b.cpu_growth()) {
            lines.push(format!(
                "  per-batch CPU flat as tables grow (growth ≤ 1.25): {} — {}",
                shown(g, 1.25, 2),
                check(g <= 1.25)
            ));
        }
        for l in lines {
            let _ = fmt::Write::write_fmt(w, format_args!("{l}\n"));
        }
        Report { json, text: t }
    }

    /// Writes `<out>/<id>.json` and `<out>/latest.json`.
    pub fn write(&self, out: &Path, id: &str) -> Result<()> {
        let body = serde_json::to_string_pretty(&self.json).map_err(|e| Error::Other(e.to_string()))?;
        for name in [format!("{id}.json"), "latest.json".to_string()] {
            std::fs::write(out.join(&name), &body)
                .map_err(|e| Error::Other(format!("{}: {e}", out.join(&name).display())))?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn a_figure_never_prints_as_its_target_when_it_misses_it() {
        assert_eq!(shown(0.4956524832088884, 0.5, 2), "0.496");
        assert_eq!(shown(0.5004, 0.5, 2), "0.5004");
        assert_eq!(shown(0.5, 0.5, 2), "0.50");
        assert_eq!(shown(0.58, 0.5, 2), "0.58");
        assert_eq!(shown(9.97, 10.0, 1), "9.97");
        assert_eq!(shown(1.8474, 10.0, 1), "1.8");
        assert_eq!(shown(0.49996, 0.5, 2), "0.49996");
    }
}
