//! Observability of a running `orderlake run`: Prometheus metrics on `/metrics`, and `/healthz`
//! (the loop is alive) and `/readyz` (caught up from the lake and consuming) for Kubernetes or
//! Azure Container Apps probes, served from `--metrics-addr`. The pipeline updates plain atomics
//! wherever it already knows a figure; a scrape only reads them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use crate::error::{Error, Result};

/// Upper bounds (seconds) of the batch-duration histogram.
const BUCKETS: [f64; 9] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Default)]
pub struct Metrics {
    events: AtomicU64,
    decoded: AtomicU64,
    dead_letters: AtomicU64,
    batches: AtomicU64,
    batch_events: AtomicU64,
    batch_ms_sum: AtomicU64,
    batch_buckets: [AtomicU64; BUCKETS.len()],
    retries_conflict: AtomicU64,
    retries_other: AtomicU64,
    /// Kafka timestamp of the newest event of the last batch → its commit, in milliseconds.
    freshness_ms: AtomicI64,
    lag: Mutex<BTreeMap<(String, i32), i64>>,
    mongo_behind: Mutex<BTreeMap<String, i64>>,
    /// Whole-table publishes per topic and collection (see `gold::republish`).
    whole_publishes: Mutex<BTreeMap<(String, String), u64>>,
    /// Batches per topic whose aggregate documents went out with a later publish.
    carried: Mutex<BTreeMap<String, u64>>,
    /// Orders per topic whose documents a publish left to one queued behind it (`sink::queue`).
    left_to_later: Mutex<BTreeMap<String, u64>>,
    /// Batches per topic cut after their deadline, to meet MongoDB (`pipeline::pace`).
    held: Mutex<BTreeMap<String, u64>>,
    /// Partitions the feed has paused now: over the in-flight budget, and held back in time.
    paused_budget: AtomicU64,
    paused_align: AtomicU64,
    ready: AtomicBool,
    /// Unix milliseconds of the consume loop's last turn.
    alive_at: AtomicI64,
}

pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::default)
}

/// The process's resident memory now (`/proc/self/statm`), in bytes; `None` off Linux. Cheap
/// enough to read per batch, so the batch log shows how memory follows the tables.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a constant of the running system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|&p| p > 0)?)
}

/// CPU time (user + system, all threads) the process has used since it started; `None` where
/// `getrusage` fails.
pub fn cpu_time() -> Option<std::time::Duration> {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return None;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Some(std::time::Duration::from_micros(us(u.ru_utime) + us(u.ru_stime)))
}

/// CPU milliseconds the process used since the previous call (the first call: since start). The
/// batch log shows it per batch: unlike a batch's wall time, it does not grow when other
/// processes on the machine take the cores, so it tells a batch that does more work from one that
/// waited longer.
pub fn cpu_ms_since_last() -> u64 {
    static LAST_US: AtomicU64 = AtomicU64::new(0);
    let now = cpu_time().map_or(0, |d| d.as_micros() as u64);
    now.saturating_sub(LAST_US.swap(now, Relaxed)) / 1000
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Metrics {
    pub fn tick(&self) {
        self.alive_at.store(now_ms(), Relaxed);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Relaxed);
    }

    /// One committed batch: its events, duration, and the newest Kafka timestamp in it.
    pub fn batch(&self, events: u64, took: std::time::Duration, newest_kafka_ms: Option<i64>) {
        self.events.fetch_add(events, Relaxed);
        self.batches.fetch_add(1, Relaxed);
        self.batch_events.fetch_add(events, Relaxed);
        self.batch_ms_sum.fetch_add(took.as_millis() as u64, Relaxed);
        let secs = took.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.batch_buckets[i].fetch_add(1, Relaxed);
            }
        }
        if let Some(ts) = newest_kafka_ms {
            self.freshness_ms.store(now_ms() - ts, Relaxed);
        }
    }

    /// Events of a version now in every lake layer that decoded into rows (not dead letters).
    pub fn decoded(&self, n: u64) {
        self.decoded.fetch_add(n, Relaxed);
    }

    pub fn dead_letters(&self, n: u64) {
        self.dead_letters.fetch_add(n, Relaxed);
    }

    pub fn retry(&self, conflict: bool) {
        if conflict { &self.retries_conflict } else { &self.retries_other }.fetch_add(1, Relaxed);
    }

    pub fn lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag.lock().expect("metrics lock").insert((topic.to_string(), partition), lag.max(0));
    }

    pub fn mongo_behind(&self, topic: &str, versions: i64) {
        self.mongo_behind.lock().expect("metrics lock").insert(topic.to_string(), versions.max(0));
    }

    /// A publish of `topic` sent every row of `collection` and swept the rest.
    pub fn whole_publish(&self, topic: &str, collection: &str) {
        *self.whole_publishes.lock().expect("metrics lock").entry((topic.into(), collection.into())).or_default() += 1;
    }

    pub fn whole_publishes(&self, topic: &str, collection: &str) -> u64 {
        let counts = self.whole_publishes.lock().expect("metrics lock");
        counts.get(&(topic.to_string(), collection.to_string())).copied().unwrap_or(0)
    }

    /// A publish of `topic` left its aggregates to a later one (`pipeline::publish`).
    pub fn aggregates_carried(&self, topic: &str) {
        *self.carried.lock().expect("metrics lock").entry(topic.into()).or_default() += 1;
    }

    pub fn aggregates_carried_count(&self, topic: &str) -> u64 {
        self.carried.lock().expect("metrics lock").get(topic).copied().unwrap_or(0)
    }

    /// A publish of `topic` left `orders` orders to a publish queued behind it (`sink::queue`).
    pub fn orders_left_to_later(&self, topic: &str, orders: u64) {
        *self.left_to_later.lock().expect("metrics lock").entry(topic.into()).or_default() += orders;
    }

    /// A batch of `topic` was held past its deadline for the publish in flight (`pipeline::pace`).
    pub fn batch_held(&self, topic: &str) {
        *self.held.lock().expect("metrics lock").entry(topic.into()).or_default() += 1;
    }

    /// The partitions paused now, over the in-flight budget and held back for alignment in time
    /// (`source::align`).
    pub fn partitions_paused(&self, over_budget: usize, aligning: usize) {
        self.paused_budget.store(over_budget as u64, Relaxed);
        self.paused_align.store(aligning as u64, Relaxed);
    }

    /// Alive unless the loop has not turned for `stuck_after_ms` (a batch plus its retries).
    pub fn healthy(&self, stuck_after_ms: i64) -> bool {
        let at = self.alive_at.load(Relaxed);
        at == 0 || now_ms() - at < stuck_after_ms
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}").ok();
        };
        counter(
            "orderlake_events_consumed_total",
            "Events read from Kafka and committed to bronze.",
            self.events.load(Relaxed),
        );
        counter(
            "orderlake_events_decoded_total",
            "Events decoded into rows and applied to every lake layer (consumed minus dead-lettered).",
            self.decoded.load(Relaxed),
        );
        counter(
            "orderlake_events_dead_lettered_total",
            "Events that could not be decoded (rows of the dead-letter table).",
            self.dead_letters.load(Relaxed),
        );
        counter(
            "orderlake_batches_committed_total",
            "Micro-batches committed through every lake layer.",
            self.batches.load(Relaxed),
        );
        let kept = crate::lake::store::stats();
        let (reads, from_memory) = kept.reads();
        counter(
            "orderlake_storage_reads_from_memory_total",
            "Reads of lake files (commits, checkpoints, data) answered from the files this process wrote or read whole, without a storage request.",
            from_memory,
        );
        counter(
            "orderlake_storage_reads_total",
            "Reads of lake files that could have been answered from memory (those answered plus those sent to storage).",
            reads,
        );
        writeln!(o, "# HELP orderlake_batch_retries_total Failed batch attempts that were retried, by cause.").ok();
        writeln!(o, "# TYPE orderlake_batch_retries_total counter").ok();
        writeln!(
            o,
            "orderlake_batch_retries_total{{cause=\"commit_conflict\"}} {}",
            self.retries_conflict.load(Relaxed)
        )
        .ok();
        writeln!(o, "orderlake_batch_retries_total{{cause=\"other\"}} {}", self.retries_other.load(Relaxed)).ok();
        let (count, ms) = (self.batches.load(Relaxed), self.batch_ms_sum.load(Relaxed));
        writeln!(
            o,
            "# HELP orderlake_batch_duration_seconds Time from a batch's bronze write to its last lake commit."
        )
        .ok();
        writeln!(o, "# TYPE orderlake_batch_duration_seconds histogram").ok();
        for (le, b) in BUCKETS.iter().zip(&self.batch_buckets) {
            writeln!(o, "orderlake_batch_duration_seconds_bucket{{le=\"{le}\"}} {}", b.load(Relaxed)).ok();
        }
        writeln!(o, "orderlake_batch_duration_seconds_bucket{{le=\"+Inf\"}} {count}").ok();
        writeln!(o, "orderlake_batch_duration_seconds_sum {}", ms as f64 / 1000.0).ok();
        writeln!(o, "orderlake_batch_duration_seconds_count {count}").ok();
        writeln!(o, "# HELP orderlake_batch_events_sum Events over all committed batches (divide by the batch count for the mean size).").ok();
        writeln!(
            o,
            "# TYPE orderlake_batch_events_sum counter\norderlake_batch_events_sum {}",
            self.batch_events.load(Relaxed)
        )
        .ok();
        writeln!(o, "# HELP orderlake_freshness_seconds Kafka timestamp of the newest event of the last batch to its lake commit.").ok();
        writeln!(o, "# TYPE orderlake_freshness_seconds gauge").ok();
        writeln!(o, "orderlake_freshness_seconds {}", self.freshness_ms.load(Relaxed) as f64 / 1000.0).ok();
        writeln!(o, "# HELP orderlake_partition_lag Events in the partition after the last committed offset.").ok();
        writeln!(o, "# TYPE orderlake_partition_lag gauge").ok();
        for ((t, p), lag) in self.lag.lock().expect("metrics lock").iter() {
            writeln!(o, "orderlake_partition_lag{{topic=\"{t}\",partition=\"{p}\"}} {lag}").ok();
        }
        writeln!(o, "# HELP orderlake_mongodb_publish_lag_versions Bronze versions committed to the lake but not yet confirmed in MongoDB.").ok();
        writeln!(o, "# TYPE orderlake_mongodb_publish_lag_versions gauge").ok();
        for (t, behind) in self.mongo_behind.lock().expect("metrics lock").iter() {
            writeln!(o, "orderlake_mongodb_publish_lag_versions{{topic=\"{t}\"}} {behind}").ok();
        }
        writeln!(o, "# HELP orderlake_mongodb_whole_publishes_total Publishes that sent a whole aggregate, or every order document, because the Delta log no longer reached MongoDB's position.").ok();
        writeln!(o, "# TYPE orderlake_mongodb_whole_publishes_total counter").ok();
        for ((t, c), n) in self.whole_publishes.lock().expect("metrics lock").iter() {
            writeln!(o, "orderlake_mongodb_whole_publishes_total{{topic=\"{t}\",collection=\"{c}\"}} {n}").ok();
        }
        writeln!(o, "# HELP orderlake_mongodb_aggregates_carried_total Publishes that left their customer_totals and daily_sales documents to the next one, because it was already waiting (mongodb.aggregates_lag_ms).").ok();
        writeln!(o, "# TYPE orderlake_mongodb_aggregates_carried_total counter").ok();
        for (t, n) in self.carried.lock().expect("metrics lock").iter() {
            writeln!(o, "orderlake_mongodb_aggregates_carried_total{{topic=\"{t}\"}} {n}").ok();
        }
        writeln!(o, "# HELP orderlake_mongodb_orders_left_to_later_total Orders whose documents a publish left out because a publish queued behind it writes them at a newer version (a CDC source's orders and order_items topics touch the same orders).").ok();
        writeln!(o, "# TYPE orderlake_mongodb_orders_left_to_later_total counter").ok();
        for (t, n) in self.left_to_later.lock().expect("metrics lock").iter() {
            writeln!(o, "orderlake_mongodb_orders_left_to_later_total{{topic=\"{t}\"}} {n}").ok();
        }
        writeln!(o, "# HELP orderlake_batches_held_total Batches cut after batch.max_latency_ms because MongoDB was still writing the previous one: they took in the events that arrived meanwhile (mongodb.hold_batches_ms).").ok();
        writeln!(o, "# TYPE orderlake_batches_held_total counter").ok();
        for (t, n) in self.held.lock().expect("metrics lock").iter() {
            writeln!(o, "orderlake_batches_held_total{{topic=\"{t}\"}} {n}").ok();
        }
        writeln!(o, "# HELP orderlake_partitions_paused Partitions not fetched now: over batch.max_in_flight_bytes (the lake or MongoDB is behind), or ahead in time of another topic (batch.align_topics_ms).").ok();
        writeln!(o, "# TYPE orderlake_partitions_paused gauge").ok();
        for (reason, n) in [("in_flight_budget", &self.paused_budget), ("align_topics", &self.paused_align)] {
            writeln!(o, "orderlake_partitions_paused{{reason=\"{reason}\"}} {}", n.load(Relaxed)).ok();
        }
        writeln!(o, "# HELP orderlake_storage_kept_bytes Bytes of lake files kept in memory for reading back.").ok();
        writeln!(
            o,
            "# TYPE orderlake_storage_kept_bytes gauge\norderlake_storage_kept_bytes {}",
            kept.bytes.load(Relaxed)
        )
        .ok();
        if let Some(rss) = resident_bytes() {
            writeln!(o, "# HELP process_resident_memory_bytes Resident memory size in bytes.").ok();
            writeln!(o, "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}").ok();
        }
        writeln!(o, "# HELP orderlake_ready 1 once the run has caught up from the lake and consumes.").ok();
        writeln!(o, "# TYPE orderlake_ready gauge\norderlake_ready {}", u8::from(self.ready.load(Relaxed))).ok();
        o
    }
}

fn response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` in the background. Binding fails at start
/// (a taken port is a configuration error, not a mid-run surprise).
pub async fn serve(addr: SocketAddr, stuck_after_ms: i64) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("--metrics-addr / ORDERLAKE_METRICS_ADDR: cannot listen on {addr}: {e}")))?;
    info!(%addr, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let n = match tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf)).await {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let m = global();
                let text = "text/plain; charset=utf-8";
                let reply = match path {
                    "/metrics" => response("200 OK", "text/plain; version=0.0.4", &m.render()),
                    "/healthz" if m.healthy(stuck_after_ms) => response("200 OK", text, "ok\n"),
                    "/healthz" => response("503 Service Unavailable", text, "the consume loop is stuck\n"),
                    "/readyz" if m.ready.load(Relaxed) => response("200 OK", text, "ready\n"),
                    "/readyz" => response("503 Service Unavailable", text, "starting, catching up or stopping\n"),
                    _ => response("404 Not Found", text, "try /metrics, /healthz or /readyz\n"),
                };
                if let Err(e) = conn.write_all(reply.as_bytes()).await {
                    warn!(error = %e, "metrics endpoint: could not answer");
                }
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_every_family_and_a_consistent_histogram() {
        let m = Metrics::default();
        m.batch(100, std::time::Duration::from_millis(300), Some(now_ms() - 1500));
        m.batch(50, std::time::Duration::from_secs(3), None);
        m.lag("shop.sales", 2, 7);
        m.retry(true);
        m.partitions_paused(0, 2);
        let text = m.render();
        assert!(text.contains("orderlake_events_consumed_total 150"), "{text}");
        assert!(text.contains("# TYPE orderlake_events_decoded_total counter"), "{text}");
        assert!(text.contains("orderlake_batch_duration_seconds_bucket{le=\"0.5\"} 1"), "{text}");
        assert!(text.contains("orderlake_batch_duration_seconds_bucket{le=\"5\"} 2"), "{text}");
        assert!(text.contains("orderlake_batch_duration_seconds_count 2"), "{text}");
        assert!(text.contains("orderlake_partition_lag{topic=\"shop.sales\",partition=\"2\"} 7"), "{text}");
        assert!(text.contains("orderlake_batch_retries_total{cause=\"commit_conflict\"} 1"), "{text}");
        assert!(text.contains("orderlake_freshness_seconds 1.5"), "{text}");
        assert!(text.contains("orderlake_partitions_paused{reason=\"align_topics\"} 2"), "{text}");
        assert!(text.contains("orderlake_partitions_paused{reason=\"in_flight_budget\"} 0"), "{text}");
        // This test process holds at least its own binary's pages, far more than a MiB.
        let rss = text.lines().find_map(|l| l.strip_prefix("process_resident_memory_bytes ")).expect("{text}");
        assert!(rss.parse::<u64>().unwrap() > 1 << 20, "{text}");
    }
}
