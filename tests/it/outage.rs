//! Outages and shutdown: with MongoDB down mid-run, the lake path goes on, the log says the
//! pipeline is degraded, nothing is recorded as published that was not, and publishing catches up
//! by itself once MongoDB is back; SIGTERM then commits, leaves the group and exits 0.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orderlake::produce;

use crate::e2e::{assert_lake_matches, assert_mongo_matches, mongo_matches};
use crate::reference;
use crate::support::*;

async fn gold_orders(s: &orderlake::config::Settings) -> usize {
    match table_version(s, "gold/order_totals").await {
        Some(_) => strs(&read_table(s, "gold/order_totals").await, "order_id").len(),
        None => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_outage_degrades_then_catches_up_and_sigterm_exits_cleanly() {
    let mut mongo = PrivateMongo::start();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("outage");
    let mut s = settings(&name, &LakeKind::Local(dir.path().join("lake")), true);
    s.mongodb_uri = Some(mongo.uri());
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[batch]\nmax_records = 300\nmax_latency_ms = 300\n[run]\nmax_backoff_ms = 2000\nshutdown_timeout_ms = 20000\n",
    )
    .unwrap();
    let log_path = dir.path().join("run.log");
    let mut cmd = orderlake_cmd(&s);
    cmd.env("ORDERLAKE_MONGODB_URI", format!("{}/?serverSelectionTimeoutMS=2000", mongo.uri()));
    let mut guard = spawn_run(cmd, &config, &log_path);

    let first = renumbered(produce::synthetic(600, 31), "5");
    produce::publish(&s, &s.sales_topic, &first, None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(150);
    while mongo_docs(&s, "order_totals").await.len() < reference::compute(&first).orders.len() {
        assert!(Instant::now() < deadline, "first events never reached MongoDB");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // MongoDB goes away; events keep coming and the lake keeps taking them.
    mongo.pause();
    let second = renumbered(produce::synthetic(600, 32), "4");
    produce::publish(&s, &s.sales_topic, &second, None).await.unwrap();
    let mut all = first.clone();
    all.extend(second.iter().cloned());
    let want_orders = reference::compute(&all).orders.len();
    let deadline = Instant::now() + Duration::from_secs(150);
    while !lake_complete(&s, all.len()).await {
        assert!(Instant::now() < deadline, "the lake stalled while MongoDB was down");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(gold_orders(&s).await, want_orders);
    assert_lake_matches(&s, &reference::compute(&all)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("MongoDB unavailable: the lake goes on"), "degraded state is logged:\n{log}");

    // MongoDB comes back: publishing catches up without a restart.
    mongo.resume();
    let deadline = Instant::now() + Duration::from_secs(180);
    let bronze_version = bronze_events_version(&s).await;
    loop {
        let progress = mongo_docs(&s, orderlake::sink::mongo::PROGRESS).await;
        let published = progress.first().and_then(|d| d.get_i64("bronze_version").ok());
        if published == Some(bronze_version) && mongo_docs(&s, "order_totals").await.len() == want_orders {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publishing did not catch up:\n{}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_mongo_matches(&s, &reference::compute(&all)).await;

    // SIGTERM: commits what it has, leaves the group, exits 0 in bounded time.
    let stopping = Instant::now();
    unsafe_kill(guard.child().id(), 15);
    let status = guard.child().wait().unwrap();
    assert!(status.success(), "exit 0 on SIGTERM");
    assert!(stopping.elapsed() < Duration::from_secs(25));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("signal=\"SIGTERM\"") || log.contains("SIGTERM"), "{log}");
    assert!(log.contains("MongoDB reachable again"), "{log}");
}

/// Azure storage goes away mid-run: batches fail and are retried with backoff, nothing is
/// recorded as done before it is written, and once storage is back everything lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_outage_is_retried_and_nothing_is_lost_or_doubled() {
    let mut az = PrivateServer::azurite();
    let name = unique("az-outage");
    let container = name.to_lowercase();
    let out = Command::new(python())
        .arg(repo_root().join("infra/local/azure_container.py"))
        .arg(&container)
        .env("AZURITE_PORT", az.port.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let az_port = az.port;
    let dir = tempfile::tempdir().unwrap();
    // Settings for the test's own use (Kafka and MongoDB); the lake is only reached by the binary.
    let s = settings(&name, &LakeKind::Local(dir.path().join("unused")), true);
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[batch]\nmax_records = 300\nmax_latency_ms = 300\n[run]\nmax_backoff_ms = 2000\n")
        .unwrap();
    let orderlake = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_orderlake"));
        c.args(args)
            .arg("--config")
            .arg(&config)
            .env("ORDERLAKE_BROKERS", &s.brokers)
            .env("ORDERLAKE_LAKE", format!("az://{container}/lake"))
            .env("ORDERLAKE_MONGODB_URI", s.mongodb_uri.as_deref().unwrap())
            .env("ORDERLAKE_MONGODB_DATABASE", &s.mongodb_database)
            .env("ORDERLAKE_GROUP", &s.group)
            .env("ORDERLAKE_SALES_TOPIC", &s.sales_topic)
            .env("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1")
            .env("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY)
            .env("AZURE_STORAGE_USE_EMULATOR", "true")
            .env("AZURITE_BLOB_STORAGE_URL", format!("http://127.0.0.1:{az_port}"));
        c
    };
    let log_path = dir.path().join("run.log");
    let mut guard = ChildGuard(Some(
        orderlake(&["run"]).stdout(Stdio::null()).stderr(std::fs::File::create(&log_path).unwrap()).spawn().unwrap(),
    ));

    let first = renumbered(produce::synthetic(600, 41), "2");
    produce::publish(&s, &s.sales_topic, &first, None).await.unwrap();
    let want = reference::compute(&first).orders.len();
    let deadline = Instant::now() + Duration::from_secs(150);
    while mongo_docs(&s, "order_totals").await.len() < want {
        assert!(
            Instant::now() < deadline,
            "first events never landed:\n{}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Storage goes away for a while; events keep arriving.
    az.pause();
    let second = renumbered(produce::synthetic(600, 42), "1");
    produce::publish(&s, &s.sales_topic, &second, None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(25)).await;
    az.resume();

    let mut all = first.clone();
    all.extend(second.iter().cloned());
    let r = reference::compute(&all);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if mongo_matches(&s, &r).await {
            break;
        }
        assert!(Instant::now() < deadline, "did not recover:\n{}", std::fs::read_to_string(&log_path).unwrap());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_mongo_matches(&s, &r).await;
    unsafe_kill(guard.child().id(), 15);
    assert!(guard.child().wait().unwrap().success(), "SIGTERM exits 0");
    let log = std::fs::read_to_string(&log_path).unwrap();
    // The outage hits a batch, or the aggregates a batch left writing in the background (then
    // the catch-up that redoes them is what retries).
    assert!(
        log.contains("batch failed; retrying") || log.contains("catching up failed; retrying"),
        "the outage was retried:\n{log}"
    );
    assert!(log.contains("recovered"), "{log}");

    // Storage away again, and a stop request arrives while batches are being retried: the process
    // still exits 0 within the bound, and the next run writes what it gave up, exactly once.
    let log2 = dir.path().join("run2.log");
    let mut guard = ChildGuard(Some(
        orderlake(&["run"]).stdout(Stdio::null()).stderr(std::fs::File::create(&log2).unwrap()).spawn().unwrap(),
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;
    az.pause();
    let third = renumbered(produce::synthetic(100, 43), "0");
    produce::publish(&s, &s.sales_topic, &third, None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let stopping = Instant::now();
    unsafe_kill(guard.child().id(), 15);
    let status = guard.child().wait().unwrap();
    assert!(status.success(), "SIGTERM while retrying exits 0:\n{}", std::fs::read_to_string(&log2).unwrap());
    eprintln!("stop during the storage outage took {:?}", stopping.elapsed());
    assert!(stopping.elapsed() < Duration::from_secs(15), "bounded: {:?}", stopping.elapsed());
    az.resume();
    let out = orderlake(&["run", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    all.extend(third.iter().cloned());
    assert_mongo_matches(&s, &reference::compute(&all)).await;

    // The lake, read through the binary: every event in bronze exactly once, no lag.
    let st = orderlake(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let bronze_line = text.lines().find(|l| l.starts_with(&format!("bronze/{}", s.sales_topic))).unwrap();
    assert!(bronze_line.trim_end().ends_with(&format!(" {}", all.len())), "bronze rows: {bronze_line}");
    for l in text.lines().filter(|l| l.starts_with(&format!("{}/", s.sales_topic))) {
        assert!(l.trim_end().ends_with(" 0"), "lag 0: {l}");
    }
}

/// The broker goes away mid-run: the consumer reconnects by itself, the batch in hand is kept,
/// and once the broker is back every event lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_reconnects_and_nothing_is_lost_or_doubled() {
    let mut broker = PrivateServer::tansu();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("broker-outage");
    let mut s = settings(&name, &LakeKind::Local(dir.path().join("lake")), true);
    s.brokers = format!("127.0.0.1:{}", broker.port);
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[batch]\nmax_records = 300\nmax_latency_ms = 300\n[run]\nmax_backoff_ms = 2000\n")
        .unwrap();
    orderlake::source::kafka::ensure_topics(&s, &[s.sales_topic.clone()]).await.unwrap();
    let log_path = dir.path().join("run.log");
    let mut guard = spawn_run(orderlake_cmd(&s), &config, &log_path);
    let first = renumbered(produce::synthetic(600, 51), "8");
    produce::publish(&s, &s.sales_topic, &first, None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(150);
    while !lake_complete(&s, first.len()).await {
        assert!(
            Instant::now() < deadline,
            "first events never landed:\n{}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    broker.pause();
    tokio::time::sleep(Duration::from_secs(25)).await;
    broker.resume();
    let second = renumbered(produce::synthetic(600, 52), "9");
    produce::publish(&s, &s.sales_topic, &second, None).await.unwrap();
    let mut all = first.clone();
    all.extend(second.iter().cloned());
    let deadline = Instant::now() + Duration::from_secs(180);
    while !lake_complete(&s, all.len()).await {
        assert!(Instant::now() < deadline, "did not recover:\n{}", std::fs::read_to_string(&log_path).unwrap());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let r = reference::compute(&all);
    assert_lake_matches(&s, &r).await;
    assert_bronze_exactly_once(&s, all.len()).await;
    unsafe_kill(guard.child().id(), 15);
    assert!(guard.child().wait().unwrap().success(), "SIGTERM exits 0");
}
