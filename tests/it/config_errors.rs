//! Bad configuration fails at start, through the real binary, with exit code 2 and one line that
//! names the setting and what is wrong; secrets given on the command line never appear in output.

use std::process::Command;

use crate::support::*;

/// Runs `orderlake run --once` with `args`, expecting a configuration error; returns its last line.
fn config_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_orderlake"));
    c.current_dir(dir.path()).args(["run", "--once"]).args(args).env("ORDERLAKE_GROUP", unique("cfg"));
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "expected a configuration error:\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("error: configuration: "), "one clear line: {last}");
    last
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn bad_settings_fail_at_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let typo = write(dir.path(), "typo.toml", "[kafka]\nbrokerz = \"x:1\"\n");
    assert!(config_error(&["--config", &typo], &[]).contains("brokerz"));
    let key_rule = write(
        dir.path(),
        "pii.toml",
        "[cdc]\nprefix = \"shop.public\"\n[cdc.tables.products]\npii = { product_id = \"mask\" }\n",
    );
    let e = config_error(&["--config", &key_rule], &[]);
    assert!(e.contains("cdc.tables.products.pii.product_id: product_id is the table's key"), "{e}");
    assert!(
        config_error(&["--lake", "s3://bucket/x"], &[])
            .contains("--lake / ORDERLAKE_LAKE: scheme 's3' is not supported")
    );
    assert!(
        config_error(&["--lake", "/etc/hostname/lake"], &[])
            .contains("--lake / ORDERLAKE_LAKE: cannot write to /etc/hostname/lake")
    );

    let fast = write(dir.path(), "fast.toml", "[kafka]\nconnect_timeout_ms = 2000\n");
    let lake = dir.path().join("lake").display().to_string();
    let started = std::time::Instant::now();
    let e = config_error(&["--config", &fast, "--lake", &lake, "--brokers", "127.0.0.1:1"], &[]);
    assert!(e.contains("--brokers / ORDERLAKE_BROKERS: no Kafka broker answered at 127.0.0.1:1"), "{e}");
    assert!(started.elapsed().as_secs() < 20, "bounded wait");

    let mut az = vec!["--lake".to_string(), format!("az://no-such-container-{}/lake", std::process::id())];
    for o in azurite_options() {
        az.extend(["--storage-option".to_string(), o]);
    }
    let az: Vec<&str> = az.iter().map(String::as_str).collect();
    assert!(config_error(&az, &[]).contains("does not exist; create it first"));

    let container = unique("cfg-wrong-key");
    create_container(&container);
    let wrong_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
    let lake_az = format!("az://{container}/lake");
    let e = config_error(
        &[
            "--lake",
            &lake_az,
            "--storage-option",
            "azure_storage_account_name=devstoreaccount1",
            "--storage-option",
            &format!("azure_storage_account_key={wrong_key}"),
            "--storage-option",
            "azure_storage_use_emulator=true",
        ],
        &[],
    );
    assert!(e.contains("rejected the credentials"), "{e}");
    assert!(!e.contains(wrong_key));

    let e = config_error(
        &["--lake", &lake, "--mongodb-uri", "mongodb://app:TopSecret123@127.0.0.1:1/?serverSelectionTimeoutMS=1500"],
        &[],
    );
    assert!(e.contains("--mongodb-uri / ORDERLAKE_MONGODB_URI: cannot reach MongoDB"), "{e}");
    assert!(!e.contains("TopSecret123"), "the password is redacted: {e}");
}

#[test]
fn secrets_never_reach_logs_or_status() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("secrets");
    let container = name.to_lowercase();
    create_container(&container);
    let run = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_orderlake"));
        c.current_dir(dir.path())
            .args(args)
            .env("ORDERLAKE_LOG", "debug")
            .env("ORDERLAKE_LAKE", format!("az://{container}/lake"))
            .env("ORDERLAKE_GROUP", &name)
            .env("ORDERLAKE_SALES_TOPIC", &name)
            .env("ORDERLAKE_BROKERS", brokers())
            .env("ORDERLAKE_MONGODB_URI", format!("{}/?appName=orderlake-test", mongodb_uri()))
            .env("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1")
            .env("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY)
            .env("AZURE_STORAGE_USE_EMULATOR", "true");
        let out = c.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let produced = run(&["produce", "--synthetic", "50"]);
    let ran = run(&["run", "--once"]);
    let status = run(&["status"]);
    for (what, text) in [("produce", &produced), ("run", &ran), ("status", &status)] {
        assert!(!text.contains(AZURITE_KEY), "{what} printed the account key");
        assert!(!text.contains(&AZURITE_KEY[..20]), "{what} printed part of the account key");
    }
    assert!(ran.contains("batch committed"), "the run did work: {ran}");
}

/// A lake's bronze belongs to the group that wrote it: another group would read every topic again
/// from its start into the same tables (each event twice in bronze, and in silver and gold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_group_is_refused_on_a_lake_a_group_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(&unique("owner"), &LakeKind::Local(dir.path().to_path_buf()), false);
    let records = renumbered(orderlake::produce::synthetic(200, 5), "8");
    orderlake::produce::publish(&s, &s.sales_topic, &records, None).await.unwrap();
    crate::e2e::run_once(&s).await;
    let bronze = format!("bronze/{}", s.sales_topic);
    let version = table_version(&s, &bronze).await;

    let other = unique("other");
    for extra in [&[][..], &["--bronze-only"][..]] {
        let out =
            orderlake_cmd(&s).args(["run", "--once"]).args(extra).env("ORDERLAKE_GROUP", &other).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: refused at start:\n{stderr}");
        let last = stderr.lines().last().unwrap();
        assert!(last.starts_with("error: configuration: --group / ORDERLAKE_GROUP: "), "{last}");
        assert!(last.contains(&format!("group '{}' consumed", s.group)), "names the owner: {last}");
        assert!(last.contains(&format!("run with --group {}", s.group)), "and the fix: {last}");
    }
    assert_eq!(table_version(&s, &bronze).await, version, "nothing written");
    assert_bronze_exactly_once(&s, records.len()).await;

    // The owner goes on as before.
    let out = orderlake_cmd(&s).args(["run", "--once"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
