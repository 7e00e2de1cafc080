//! `run --metrics-addr`: Prometheus metrics and the /healthz, /readyz probes of a continuous run
//! against the real broker and Azurite, read over plain HTTP as a scraper would.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use orderlake::produce;

use crate::support::*;

/// `GET path` → (status code, body); `None` while nothing listens.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

/// Waits (at most 90 s) for a run's `/readyz` to answer 200; `log` is its log, for the failure.
pub async fn wait_ready(port: u16, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while get(port, "/readyz").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "never ready:\n{}", log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_probes_follow_a_running_pipeline() {
    let s = settings(&unique("metrics"), &LakeKind::Azurite, false);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[batch]\nmax_records = 400\nmax_latency_ms = 300\n").unwrap();
    let log_path = dir.path().join("run.log");
    let mut cmd = orderlake_cmd(&s);
    cmd.env("ORDERLAKE_METRICS_ADDR", format!("127.0.0.1:{port}"));
    // One batch's background tail fails once and its version is applied again: counted once.
    cmd.env("ORDERLAKE_TEST_FAIL_AT", "aggregates-transient-once");
    let mut guard = spawn_run(cmd, &config, &log_path);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    wait_ready(port, log).await;
    assert_eq!(get(port, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(get(port, "/nothing").map(|r| r.0), Some(404));

    let records = renumbered(produce::synthetic(1500, 12), "6");
    produce::publish(&s, &s.sales_topic, &records, None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(150);
    let metrics = loop {
        let m = get(port, "/metrics").map(|r| r.1).unwrap_or_default();
        let lags: Vec<f64> = (0..3)
            .filter_map(|p| {
                value(&m, &format!("orderlake_partition_lag{{topic=\"{}\",partition=\"{p}\"}}", s.sales_topic))
            })
            .collect();
        if value(&m, "orderlake_events_consumed_total") == Some(records.len() as f64) && lags == [0.0; 3] {
            break m;
        }
        assert!(Instant::now() < deadline, "metrics never showed every event with no lag:\n{m}\n{}", log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // What the metrics count is in bronze, silver and the order tables; the aggregates and the
    // batch log follow in the background within a batch's time. The wait allows for one storage
    // request that Azurite, under the load of the whole suite, holds for 30 s (seen once in CI).
    let (waited, deadline) = (Instant::now(), Instant::now() + Duration::from_secs(45));
    while !lake_complete(&s, records.len()).await {
        let waited = waited.elapsed().as_secs();
        assert!(Instant::now() < deadline, "what the metrics say is in the lake ({waited} s):\n{}", log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let batches = value(&metrics, "orderlake_batches_committed_total").unwrap();
    assert!(batches >= 3.0, "1,500 events in batches of at most 400:\n{metrics}");
    assert_eq!(value(&metrics, "orderlake_batch_duration_seconds_count"), Some(batches), "{metrics}");
    assert_eq!(value(&metrics, "orderlake_batch_duration_seconds_bucket{le=\"+Inf\"}"), Some(batches));
    let freshness = value(&metrics, "orderlake_freshness_seconds").unwrap();
    assert!(freshness > 0.0 && freshness < 120.0, "{metrics}");
    assert_eq!(value(&metrics, "orderlake_events_dead_lettered_total"), Some(0.0));
    // Decoded events count once their batch log row is in, the tail's last step.
    let deadline = Instant::now() + Duration::from_secs(10);
    let decoded = loop {
        let m = get(port, "/metrics").map(|r| r.1).unwrap_or_default();
        let decoded = value(&m, "orderlake_events_decoded_total");
        if decoded >= Some(records.len() as f64) || Instant::now() > deadline {
            break decoded;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(decoded, Some(records.len() as f64), "{metrics}");
    assert!(log().contains("injected transient failure after the aggregates"), "{}", log());
    assert_eq!(value(&metrics, "orderlake_ready"), Some(1.0));
    // Each batch reads back the commits and files the one before wrote: from memory, not Azurite.
    let from_memory = value(&metrics, "orderlake_storage_reads_from_memory_total").unwrap();
    let reads = value(&metrics, "orderlake_storage_reads_total").unwrap();
    assert!(from_memory * 2.0 > reads && reads > 0.0, "most reads answered from memory:\n{metrics}");
    let kept = value(&metrics, "orderlake_storage_kept_bytes").unwrap();
    assert!(kept > 0.0 && kept <= orderlake::lake::store::CACHE_BYTES as f64, "{metrics}");

    unsafe_kill(guard.child().id(), 15);
    assert!(guard.child().wait().unwrap().success(), "SIGTERM exits 0:\n{}", log());
}

/// The read-back memory is a setting: with `lake.read_back_mib = 0` every read goes to storage,
/// and the result is the same lake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_read_back_memory_every_read_goes_to_storage() {
    let s = settings(&unique("noreadback"), &LakeKind::Azurite, false);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[lake]\nread_back_mib = 0\n[batch]\nmax_records = 300\n").unwrap();
    let records = renumbered(produce::synthetic(900, 5), "9");
    produce::publish(&s, &s.sales_topic, &records, None).await.unwrap();
    let out = orderlake_cmd(&s).args(["run", "--once", "--config"]).arg(&config).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let finished = log.lines().find(|l| l.contains("run finished")).unwrap_or_else(|| panic!("{log}"));
    assert!(finished.contains("storage_reads_from_memory=0"), "{finished}");
    assert!(!finished.contains("storage_reads=0 "), "reads were made, all from storage: {finished}");
    assert!(lake_complete(&s, records.len()).await, "{log}");
}
