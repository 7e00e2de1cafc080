//! Tests of `config`: defaults, overrides and the one-line errors of bad settings.

use super::*;

#[test]
fn kafka_properties_come_from_orderlake_kafka_variables() {
    let vars = [
        ("ORDERLAKE_KAFKA_SASL_PASSWORD", "secret"),
        ("ORDERLAKE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
        ("ORDERLAKE_KAFKA_SOME__ODD_NAME", "x"),
        ("ORDERLAKE_LAKE", "az://c/lake"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let o = kafka_env_options(vars.into_iter());
    assert_eq!(o.len(), 3, "{o:?}");
    assert_eq!(o["sasl.password"], "secret");
    assert_eq!(o["security.protocol"], "SASL_SSL");
    assert_eq!(o["some_odd.name"], "x");
}

#[test]
fn container_apps_identity_endpoint_reaches_object_store() {
    let vars = [("IDENTITY_ENDPOINT", "http://localhost:42356/msi/token"), ("AZURE_CLIENT_ID", "abc")]
        .map(|(k, v)| (k.to_string(), v.to_string()));
    let o = azure_options_from(vars.into_iter());
    assert_eq!(o["azure_msi_endpoint"], "http://localhost:42356/msi/token");
    assert_eq!(o["azure_client_id"], "abc");
    let explicit = [("IDENTITY_ENDPOINT", "http://a"), ("AZURE_MSI_ENDPOINT", "http://b")]
        .map(|(k, v)| (k.to_string(), v.to_string()));
    assert_eq!(azure_options_from(explicit.into_iter())["azure_msi_endpoint"], "http://b");
}

#[test]
fn defaults_are_sensible() {
    let s = Settings::from_parts(FileConfig::default(), Overrides::default()).unwrap();
    assert_eq!(s.brokers, "127.0.0.1:9092");
    assert_eq!(s.sales_topic, "shop.sales");
    assert_eq!(s.mongodb_database, "orderlake");
    assert!(s.mongodb_uri.is_none());
    assert_eq!(s.lake.scheme(), "file");
    assert!(s.lake.path().ends_with("/lake/"));
    assert_eq!(s.read_back_bytes, 48 << 20);
    assert_eq!(s.aggregates_lag, Duration::from_secs(2));
    let fc: FileConfig = toml::from_str("[mongodb]\naggregates_lag_ms = 0\n").unwrap();
    assert!(Settings::from_parts(fc, Overrides::default()).unwrap().aggregates_lag.is_zero());
    assert_eq!(s.hold_batches, Duration::from_secs(2));
    assert_eq!(s.batch.align_topics, Duration::from_secs(1));
    let fc: FileConfig = toml::from_str("[batch]\nalign_topics_ms = 0\n").unwrap();
    assert!(Settings::from_parts(fc, Overrides::default()).unwrap().batch.align_topics.is_zero());
    let fc: FileConfig = toml::from_str("[mongodb]\nhold_batches_ms = 0\n").unwrap();
    assert!(Settings::from_parts(fc, Overrides::default()).unwrap().hold_batches.is_zero());
    let fc: FileConfig = toml::from_str("[lake]\nread_back_mib = 0\n").unwrap();
    assert_eq!(Settings::from_parts(fc, Overrides::default()).unwrap().read_back_bytes, 0);
}

#[test]
fn overrides_win_over_the_file() {
    let fc: FileConfig =
        toml::from_str("[kafka]\nbrokers = \"a:1\"\ngroup = \"g1\"\n[batch]\nmax_records = 10\n").unwrap();
    let o = Overrides { brokers: Some("b:2".into()), ..Default::default() };
    let s = Settings::from_parts(fc, o).unwrap();
    assert_eq!(s.brokers, "b:2");
    assert_eq!(s.group, "g1");
    assert_eq!(s.batch.max_records, 10);
}

#[test]
fn bad_settings_name_the_key() {
    let e = toml::from_str::<FileConfig>("[kafka]\nbrokerz = \"x\"\n").unwrap_err();
    assert!(e.message().contains("brokerz"), "{e}");
    let bad = |o: Overrides| Settings::from_parts(FileConfig::default(), o).unwrap_err().to_string();
    assert!(bad(Overrides { lake: Some("s3://b/x".into()), ..Default::default() }).contains("--lake"));
    assert!(bad(Overrides { mongodb_uri: Some("http://x".into()), ..Default::default() }).contains("--mongodb-uri"));
    assert!(
        bad(Overrides { storage_options: vec!["novalue".into()], ..Default::default() }).contains("--storage-option")
    );
    assert!(bad(Overrides { group: Some("a/b".into()), ..Default::default() }).contains("--group"));
    let fc: FileConfig = toml::from_str("[batch]\nmax_bytes = 4096\nmax_in_flight_bytes = 2048\n").unwrap();
    let e = Settings::from_parts(fc, Overrides::default()).unwrap_err().to_string();
    assert!(e.contains("batch.max_in_flight_bytes") && e.contains("batch.max_bytes"), "{e}");
    for v in [0, 200_000] {
        let fc: FileConfig = toml::from_str(&format!("[run]\ncatch_up_versions = {v}\n")).unwrap();
        let e = Settings::from_parts(fc, Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("run.catch_up_versions: ") && e.contains("1 to 100000"), "{e}");
    }
    let fc: FileConfig = toml::from_str("[mongodb]\naggregates_lag_ms = 3600000\n").unwrap();
    let e = Settings::from_parts(fc, Overrides::default()).unwrap_err().to_string();
    assert!(e.contains("mongodb.aggregates_lag_ms: ") && e.contains("0 publishes"), "{e}");
    let fc: FileConfig = toml::from_str("[maintenance]\ntoday_small_files = 100000\n").unwrap();
    let e = Settings::from_parts(fc, Overrides::default()).unwrap_err().to_string();
    assert!(e.contains("maintenance.today_small_files: ") && e.contains("at most 10000"), "{e}");
    let fc: FileConfig = toml::from_str("[mongodb]\nhold_batches_ms = 120000\n").unwrap();
    let e = Settings::from_parts(fc, Overrides::default()).unwrap_err().to_string();
    assert!(e.contains("mongodb.hold_batches_ms: ") && e.contains("0 cuts every batch"), "{e}");
    let fc: FileConfig = toml::from_str("[batch]\nalign_topics_ms = 7200000\n").unwrap();
    let e = Settings::from_parts(fc, Overrides::default()).unwrap_err().to_string();
    assert!(e.contains("batch.align_topics_ms: ") && e.contains("0 turns alignment off"), "{e}");
    let fc: FileConfig = toml::from_str("[log]\nformat = \"yaml\"\n").unwrap();
    let e = Settings::from_parts(fc, Overrides::default()).unwrap_err().to_string();
    assert!(e.contains("log.format: 'yaml' is not one of text, json"), "{e}");
}

#[test]
fn log_format_comes_from_the_file_unless_overridden() {
    let fc = || toml::from_str::<FileConfig>("[log]\nformat = \"json\"\n").unwrap();
    assert_eq!(Settings::from_parts(FileConfig::default(), Overrides::default()).unwrap().log_format, LogFormat::Text);
    assert_eq!(Settings::from_parts(fc(), Overrides::default()).unwrap().log_format, LogFormat::Json);
    let o = Overrides { log_format: Some(LogFormat::Text), ..Default::default() };
    assert_eq!(Settings::from_parts(fc(), o).unwrap().log_format, LogFormat::Text);
}

#[test]
fn the_example_config_is_valid_and_shows_the_defaults() {
    let fc: FileConfig = toml::from_str(include_str!("../orderlake.example.toml")).unwrap();
    let s = Settings::from_parts(fc, Overrides::default()).unwrap();
    let d = Settings::from_parts(FileConfig::default(), Overrides::default()).unwrap();
    assert_eq!((s.brokers, s.group, s.batch.max_records), (d.brokers, d.group, d.batch.max_records));
    assert_eq!(s.batch.max_latency, d.batch.max_latency);
    assert_eq!(s.batch.max_in_flight_bytes, d.batch.max_in_flight_bytes);
    assert_eq!(s.batch.align_topics, d.batch.align_topics);
    assert_eq!(s.aggregates_lag, d.aggregates_lag);
    assert_eq!(s.hold_batches, d.hold_batches);
    assert_eq!(s.log_format, d.log_format);
    let (m, dm) = (&s.maintenance, &d.maintenance);
    assert_eq!(
        (m.every_batches, m.target_file_bytes, m.keyed_file_rows, m.today_small_files, m.vacuum_retention),
        (dm.every_batches, dm.target_file_bytes, dm.keyed_file_rows, dm.today_small_files, dm.vacuum_retention)
    );
}

#[test]
fn vacuum_retention_has_a_safe_minimum() {
    let short = "[maintenance]\nvacuum_retention_hours = 24\n";
    let e = Settings::from_parts(toml::from_str(short).unwrap(), Overrides::default()).unwrap_err().to_string();
    assert!(e.contains("maintenance.vacuum_retention_hours") && e.contains("allow_short_retention"), "{e}");
    let forced = format!("{short}allow_short_retention = true\n");
    let s = Settings::from_parts(toml::from_str(&forced).unwrap(), Overrides::default()).unwrap();
    assert_eq!(s.maintenance.vacuum_retention, Duration::from_secs(24 * 3600));
}

#[test]
fn lake_uris() {
    assert_eq!(parse_lake_uri("az://lake/orders").unwrap().as_str(), "az://lake/orders/");
    assert_eq!(parse_lake_uri("file:///tmp/x/").unwrap().as_str(), "file:///tmp/x/");
    assert!(parse_lake_uri("az:///nocontainer").is_err());
}
