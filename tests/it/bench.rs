//! `orderlake bench` in quick mode, as `make test` runs it: every phase runs against the real
//! broker, Azurite and SecantusDB, and every figure lands in the printed table and the JSON.
//! A smoke test of the benchmark, never of a speed: no figure is compared to a target here. And
//! what it leaves behind: nothing of its phases' lakes and databases.

use std::process::Command;

use orderlake::model::RawEvent;

use crate::support::*;

#[test]
fn quick_bench_reports_every_figure() {
    let name = unique("bench");
    let container = name.to_lowercase().replace(['.', '_'], "-");
    create_container(&container);
    let out = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderlake"));
    cmd.args(["bench", "--events", "50000", "--freshness-secs", "4", "--rate", "1000", "--max-records", "5000"])
        .args(["--cdc", "6000"])
        .arg("--out")
        .arg(out.path())
        .arg("--python")
        .arg(python())
        .env("ORDERLAKE_BROKERS", brokers())
        .env("ORDERLAKE_LAKE", format!("az://{container}/runs"))
        .env("ORDERLAKE_MONGODB_URI", mongodb_uri())
        .env("ORDERLAKE_MONGODB_DATABASE", name.replace(['.', '-'], "_"))
        .env_remove("ORDERLAKE_CONFIG");
    for o in azurite_options() {
        cmd.arg("--storage-option").arg(o);
    }
    let run = cmd.output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "bench failed:\n{stdout}\n{stderr}");
    let rows = [
        "ceiling",
        "bronze only",
        "full pipeline",
        "N/10",
        "python peer",
        "freshness at 1000/s",
        "scaling",
        "broker's own",
        "per-batch CPU",
        "CDC ceiling",
        "CDC bronze only",
        "CDC full",
    ];
    for row in rows.into_iter().chain(["per-batch lake cost (silver + gold per event", "per-batch cost flat"]) {
        assert!(stdout.contains(row), "no '{row}' in the table:\n{stdout}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("latest.json")).unwrap()).unwrap();
    assert_eq!(json["events"], 50000);
    assert!(json["ceiling"]["events_per_s"].as_f64().unwrap() > 0.0);
    for phase in ["bronze_only", "full_pipeline", "full_pipeline_tenth", "python_peer"] {
        let p = &json[phase];
        assert!(p["events_per_s"].as_f64().unwrap() > 0.0, "{phase}: {p}");
        assert!(p["peak_rss_mib"].as_f64().unwrap() > 10.0, "{phase}: a real process was measured: {p}");
        let anon = p["peak_anon_mib"].as_f64().unwrap();
        assert!(anon > 5.0 && anon <= p["peak_rss_mib"].as_f64().unwrap(), "{phase}: anon is part of the RSS: {p}");
        assert!(p["ratio_to_ceiling"].as_f64().is_some(), "{phase}: {p}");
    }
    assert_eq!(json["full_pipeline"]["events"], 50000);
    // 50,000 events in batches of at most 5,000: ten batches, the first (creating the tables) left out.
    let b = &json["full_pipeline"]["per_batch"];
    assert!(b["batches"].as_u64().unwrap() >= 9, "{b}");
    assert!(b["early_us_per_event"].as_f64().unwrap() > 0.0 && b["late_us_per_event"].as_f64().unwrap() > 0.0, "{b}");
    // orderlake's own CPU per event, from the batch lines' `cpu_ms`: a real process does some.
    assert!(b["early_cpu_us_per_event"].as_f64().unwrap() > 0.0, "{b}");
    assert!(b["cpu_growth"].as_f64().unwrap() > 0.0, "{b}");
    assert!(json["bronze_only"].get("per_batch").is_none(), "bronze only refines nothing");
    assert_eq!(json["python_peer"]["events"], 50000, "the peer processed the same topic");
    let f = &json["freshness"];
    assert!(f["tracked_orders"].as_u64().unwrap() > 0);
    assert_eq!(f["seen_orders"], f["tracked_orders"], "every tracked order reached MongoDB: {f}");
    assert!(f["peak_anon_mib"].as_f64().unwrap() > 5.0, "{f}");
    assert!(f["p99_ms"].as_f64().unwrap() >= f["p50_ms"].as_f64().unwrap());
    assert!(json["orderlake_vs_peer"].as_f64().unwrap() > 0.0);
    assert!(json["scaling_time_ratio"].as_f64().unwrap() > 0.0);
    assert_eq!(json["ceiling_tenth"]["events"], 5000, "the bare consumer read the N/10 topic too");
    // The CDC phases read every change published (tombstones too) on the four table topics; the
    // full run is checked by the bench itself against the generated database's orders.
    let cdc = &json["cdc"];
    assert!(cdc["changes"].as_u64().unwrap() >= 6000, "{cdc}");
    assert_eq!(cdc["ceiling"]["events"], cdc["changes"], "{cdc}");
    for phase in ["bronze_only", "full_pipeline"] {
        assert_eq!(cdc[phase]["events"], cdc["changes"], "{cdc}");
        assert!(cdc[phase]["events_per_s"].as_f64().unwrap() > 0.0, "{cdc}");
        assert!(cdc[phase]["peak_rss_mib"].as_f64().unwrap() > 10.0, "{cdc}");
    }
    let (o, b) = (json["scaling_time_ratio"].as_f64().unwrap(), json["ceiling_scaling_time_ratio"].as_f64().unwrap());
    assert!((json["scaling_vs_ceiling"].as_f64().unwrap() - o / b).abs() < 1e-9, "{json}");

    // Each phase's lake and database went once measured.
    let id = json["id"].as_str().unwrap();
    let database_prefix = format!("{}_{}", name.replace(['.', '-'], "_"), id.replace('-', "_"));
    let left = run_python("bench_leftovers.py", &[&container, &mongodb_uri(), &database_prefix]);
    assert_eq!(left.trim(), "blobs=0 databases=0", "{stderr}");
}

/// The bench's cleanup removes exactly one phase's lake: not a sibling whose name starts the same
/// (`full` and `full-small`), never a whole container, and a local lake as a directory.
#[tokio::test]
async fn removing_a_phase_lake_leaves_its_siblings() {
    use orderlake::lake::{Lake, bronze, schema};
    let name = unique("cleanup");
    let base = settings(&name, &LakeKind::Azurite, false);
    let at = |sub: &str| {
        let mut s = base.clone();
        s.lake = orderlake::config::parse_lake_uri(&format!("{}{sub}", base.lake)).unwrap();
        s
    };
    let event = RawEvent {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        key: None,
        value: Some("{}".into()),
        timestamp_ms: Some(1),
    };
    let (full, small) = (at("full"), at("full-small"));
    for s in [&full, &small] {
        let t = Lake::new(s).open_or_create("bronze/t", &schema::BRONZE).await.unwrap();
        bronze::append(t, &s.group, std::slice::from_ref(&event), 1).await.unwrap();
    }
    let removed = Lake::new(&full).remove_all().await.unwrap();
    assert!(removed >= 2, "a commit and a data file at least: {removed}");
    assert!(Lake::new(&full).open("bronze/t").await.unwrap().is_none());
    assert_eq!(table_version(&small, "bronze/t").await, Some(1), "the sibling is untouched");

    let mut container = base.clone();
    container.lake.set_path("/");
    let err = Lake::new(&container).remove_all().await.unwrap_err().to_string();
    assert!(err.contains("refusing"), "{err}");
    assert_eq!(table_version(&small, "bronze/t").await, Some(1));

    let dir = tempfile::tempdir().unwrap();
    let local = settings(&name, &LakeKind::Local(dir.path().join("phase")), false);
    let t = Lake::new(&local).open_or_create("bronze/t", &schema::BRONZE).await.unwrap();
    bronze::append(t, &local.group, &[event], 1).await.unwrap();
    Lake::new(&local).remove_all().await.unwrap();
    assert!(!dir.path().join("phase").exists() && dir.path().exists());
}
