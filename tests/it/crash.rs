//! Crash anywhere: a real `orderlake run` process is killed with SIGKILL at random moments while
//! events are being produced (at least 20 kills), then stopped at each named stage boundary by the
//! test-only fault setting, then given an orphaned upload. After a final `run --once`, every
//! offset is in bronze exactly once and gold and MongoDB equal an uninterrupted run's result.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use orderlake::config::Settings;
use orderlake::produce::{self, SaleRecord};
use rand::{Rng, SeedableRng};

use crate::e2e::{assert_lake_matches, assert_mongo_matches};
use crate::reference;
use crate::support::*;

fn orderlake(s: &Settings, config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_orderlake"));
    c.args(args)
        .arg("--config")
        .arg(config)
        .env("ORDERLAKE_BROKERS", &s.brokers)
        .env("ORDERLAKE_LAKE", s.lake.as_str())
        .env("ORDERLAKE_MONGODB_URI", s.mongodb_uri.as_deref().unwrap())
        .env("ORDERLAKE_MONGODB_DATABASE", &s.mongodb_database)
        .env("ORDERLAKE_GROUP", &s.group)
        .env("ORDERLAKE_SALES_TOPIC", &s.sales_topic)
        .env_remove("ORDERLAKE_TEST_FAIL_AT");
    c
}

async fn assert_exactly_once(s: &Settings, all: &[SaleRecord]) {
    assert_bronze_exactly_once(s, all.len()).await;
    let r = reference::compute(all);
    assert_lake_matches(s, &r).await;
    assert_mongo_matches(s, &r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_anywhere_loses_nothing_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("crash");
    let s = settings(&name, &LakeKind::Local(dir.path().join("lake")), true);
    let config = dir.path().join("orderlake.toml");
    std::fs::write(
        &config,
        "[batch]\nmax_records = 250\nmax_latency_ms = 200\n[kafka]\npartitions = 3\n\
         [kafka.options]\n\"session.timeout.ms\" = \"2000\"\n\"heartbeat.interval.ms\" = \"500\"\n",
    )
    .unwrap();
    let log_path = dir.path().join("runs.log");
    let log = std::fs::File::create(&log_path).unwrap();

    // Events arrive while the consumer is being killed.
    let records = renumbered(produce::synthetic(4000, 21), "7");
    let (ps, pr) = (s.clone(), records.clone());
    let producer = tokio::spawn(async move { produce::publish(&ps, &ps.sales_topic, &pr, Some(300)).await });
    let mut rng = rand::rngs::SmallRng::seed_from_u64(2024);
    let mut kills = 0;
    while kills < 22 {
        let child =
            orderlake(&s, &config, &["run"]).stdout(Stdio::null()).stderr(log.try_clone().unwrap()).spawn().unwrap();
        let mut guard = ChildGuard(Some(child));
        tokio::time::sleep(Duration::from_millis(rng.gen_range(2000..6000))).await;
        guard.child().kill().unwrap(); // SIGKILL
        guard.child().wait().unwrap();
        kills += 1;
    }
    producer.await.unwrap().unwrap();
    let out = orderlake(&s, &config, &["run", "--once"]).output().unwrap();
    assert!(out.status.success(), "final run --once: {}", String::from_utf8_lossy(&out.stderr));
    let mut all = records.clone();
    assert_exactly_once(&s, &all).await;
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.matches("batch committed").count() >= 5, "the killed runs did commit batches between kills");

    // Named stage boundaries: the process stops right there; the next run heals.
    for (i, stage) in
        ["after-bronze", "after-silver", "after-gold", "mid-mongo", "before-mongo-progress"].iter().enumerate()
    {
        let more = renumbered(produce::synthetic(120, 100 + i as u64), &format!("6{i}"));
        produce::publish(&s, &s.sales_topic, &more, None).await.unwrap();
        all.extend(more);
        let out = orderlake(&s, &config, &["run", "--once"]).env("ORDERLAKE_TEST_FAIL_AT", stage).output().unwrap();
        assert!(!out.status.success(), "{stage}: the injected fault stops the run");
        assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("injected fault at stage '{stage}'")));
    }

    // A killed upload leaves a data file no commit references: it must not count.
    let bronze_dir = dir.path().join(format!("lake/bronze/{}", s.sales_topic));
    let part = std::fs::read_dir(&bronze_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir() && !p.ends_with("_delta_log"))
        .unwrap();
    let file = std::fs::read_dir(&part)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    std::fs::copy(&file, part.join("part-00000-orphaned-by-a-killed-upload.parquet")).unwrap();

    let out = orderlake(&s, &config, &["run", "--once"]).output().unwrap();
    assert!(out.status.success(), "healing run: {}", String::from_utf8_lossy(&out.stderr));
    assert_exactly_once(&s, &all).await;
}
