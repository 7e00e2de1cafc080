//! Settings: the TOML config file, overridden by command-line flags and their environment variables.
//! Everything is validated here, at start, so a bad setting fails with one line naming the key and
//! the fix instead of an obscure error in the middle of a run.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::error::{Error, Result};

/// The config file as written by a user (`orderlake.example.toml` documents every key).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub kafka: KafkaFile,
    #[serde(default)]
    pub lake: LakeFile,
    #[serde(default)]
    pub mongodb: MongoFile,
    #[serde(default)]
    pub batch: BatchFile,
    #[serde(default)]
    pub tables: TablesFile,
    #[serde(default)]
    pub log: LogFile,
    #[serde(default)]
    pub cdc: crate::cdc_config::CdcFile,
    #[serde(default)]
    pub run: RunFile,
    #[serde(default)]
    pub maintenance: MaintenanceFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaFile {
    pub brokers: Option<String>,
    pub group: Option<String>,
    pub sales_topic: Option<String>,
    /// Partitions for topics orderlake creates because they are missing.
    pub partitions: Option<i32>,
    /// How long to wait for the broker at start before giving up with a clear message.
    pub connect_timeout_ms: Option<u64>,
    /// Extra librdkafka settings, passed through verbatim (e.g. `"security.protocol" = "SASL_SSL"`).
    #[serde(default)]
    pub options: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeFile {
    pub uri: Option<String>,
    #[serde(default)]
    pub storage_options: HashMap<String, String>,
    /// Memory for files a remote lake's batch wrote and the next one reads back (MiB; 0 = none).
    pub read_back_mib: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoFile {
    pub uri: Option<String>,
    pub database: Option<String>,
    /// How long a batch's `customer_totals` and `daily_sales` documents may wait to go out with a
    /// later batch's publish while MongoDB is the bottleneck (0: with every batch).
    pub aggregates_lag_ms: Option<u64>,
    /// How long a due batch may wait for the previous batch's publish to be nearly done, so that
    /// it takes in the events arriving meanwhile (0: cut at `batch.max_latency_ms`).
    pub hold_batches_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchFile {
    pub max_records: Option<usize>,
    pub max_bytes: Option<usize>,
    pub max_latency_ms: Option<u64>,
    pub max_in_flight_bytes: Option<usize>,
    pub align_topics_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFile {
    /// On SIGTERM/SIGINT, how long to finish the batch in hand before giving it up.
    pub shutdown_timeout_ms: Option<u64>,
    /// Backoff cap between retries of a failed batch.
    pub max_backoff_ms: Option<u64>,
    /// With --once: give up (exit 1) after retrying for this long.
    pub once_retry_limit_ms: Option<u64>,
    /// Bronze versions a catch-up applies per step.
    pub catch_up_versions: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceFile {
    pub every_batches: Option<u64>,
    pub target_file_mb: Option<u64>,
    pub keyed_file_rows: Option<u64>,
    pub today_small_files: Option<u64>,
    pub vacuum_retention_hours: Option<u64>,
    pub allow_short_retention: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TablesFile {
    pub bronze: Option<String>,
    pub silver: Option<String>,
    pub gold: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    pub level: Option<String>,
    pub format: Option<String>,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`), for log collectors
    /// such as Azure Monitor, Loki or Elasticsearch.
    Json,
}

/// Values given on the command line or through `ORDERLAKE_*` variables; they win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub brokers: Option<String>,
    pub lake: Option<String>,
    pub mongodb_uri: Option<String>,
    pub mongodb_database: Option<String>,
    pub group: Option<String>,
    pub sales_topic: Option<String>,
    pub storage_options: Vec<String>,
    pub cdc_prefix: Option<String>,
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone)]
pub struct BatchSettings {
    pub max_records: usize,
    pub max_bytes: usize,
    pub max_latency: Duration,
    /// Events read from Kafka but not yet committed to the lake, at most (bytes). Past it, every
    /// assigned partition is paused until the pipeline catches up.
    pub max_in_flight_bytes: usize,
    /// Over several topics, a partition this far (Kafka timestamps) ahead of the furthest-behind
    /// one is paused until that one catches up (zero: never; see `source::align`).
    pub align_topics: Duration,
}

/// Hours below which VACUUM may delete files a reader or time travel still needs (Delta's default
/// `deletedFileRetentionDuration`, 7 days).
pub const SAFE_RETENTION_HOURS: u64 = 168;

#[derive(Debug, Clone)]
pub struct MaintenanceSettings {
    /// `run` maintains the tables after every this many committed batches (0: never).
    pub every_batches: u64,
    /// OPTIMIZE packs small files into files of about this size (append-only tables).
    pub target_file_bytes: u64,
    /// Compaction of the keyed tables (silver, gold) packs files up to this many rows: a batch
    /// that changes one row of a file copies the whole file.
    pub keyed_file_rows: u64,
    /// Today's bronze partition is packed once it holds more than this many small files (each
    /// commit to bronze replays its live files; a few dozen cost about a millisecond).
    pub today_small_files: usize,
    /// VACUUM deletes unreferenced files older than this.
    pub vacuum_retention: Duration,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub brokers: String,
    pub group: String,
    pub sales_topic: String,
    pub partitions: i32,
    pub connect_timeout: Duration,
    pub kafka_options: HashMap<String, String>,
    /// Lake root, always ending in `/`.
    pub lake: Url,
    pub storage_options: HashMap<String, String>,
    /// Bytes of the read-back memory of a remote lake (`lake.read_back_mib`; `lake::store`).
    pub read_back_bytes: usize,
    pub mongodb_uri: Option<String>,
    pub mongodb_database: String,
    /// `mongodb.aggregates_lag_ms`: see `pipeline::publish`.
    pub aggregates_lag: Duration,
    /// `mongodb.hold_batches_ms`: see `pipeline::pace`.
    pub hold_batches: Duration,
    pub batch: BatchSettings,
    pub maintenance: MaintenanceSettings,
    pub bronze_prefix: String,
    pub silver_prefix: String,
    pub gold_prefix: String,
    pub log_level: String,
    pub log_format: LogFormat,
    /// On SIGTERM/SIGINT, how long to finish the batch in hand.
    pub shutdown_timeout: Duration,
    /// Backoff cap between retries of a failed batch.
    pub max_backoff: Duration,
    /// With --once: how long to keep retrying before exiting 1.
    pub once_retry_limit: Duration,
    /// Bronze versions a catch-up (the layers after bronze, or MongoDB, behind it) applies per step.
    pub catch_up_versions: i64,
    /// Debezium CDC sources, when configured.
    pub cdc: Option<crate::cdc_config::CdcSettings>,
    /// Test-only: fail with [`Error::InjectedFault`] when this stage is reached (`ORDERLAKE_TEST_FAIL_AT`,
    /// several comma-separated); `slow-aggregates` instead delays every batch's aggregates by 2 s,
    /// so the next batch's silver write lands while they are pending, and `slow-order-publish`
    /// holds each MongoDB publish after its order documents until the next batch waits for it
    /// (at most 10 s); `slow-order-docs` makes every publish's order documents take 1.5 s longer.
    pub fail_at: Option<String>,
    /// `run --bronze-only`: land events in bronze and stop there; the other layers catch up from
    /// bronze on the next run without it.
    pub bronze_only: bool,
}

fn cfg(key: &str, msg: impl std::fmt::Display) -> Error {
    Error::Config(format!("{key}: {msg}"))
}

impl Settings {
    /// Loads the file (if any) and applies the overrides.
    pub fn load(file: Option<&Path>, o: Overrides) -> Result<Settings> {
        let fc = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| cfg("--config", format!("cannot read {}: {e}", p.display())))?;
                toml::from_str::<FileConfig>(&text).map_err(|e| {
                    let msg = e.message().to_string();
                    cfg(&format!("config file {}", p.display()), format!("{msg} (see orderlake.example.toml)"))
                })?
            }
            None => FileConfig::default(),
        };
        Self::from_parts(fc, o)
    }

    pub fn from_parts(fc: FileConfig, o: Overrides) -> Result<Settings> {
        let brokers = o.brokers.or(fc.kafka.brokers).unwrap_or_else(|| "127.0.0.1:9092".into());
        if brokers.trim().is_empty() {
            return Err(cfg("--brokers / ORDERLAKE_BROKERS", "is empty; give host:port[,host:port]"));
        }
        let group = o.group.or(fc.kafka.group).unwrap_or_else(|| "orderlake".into());
        if group.is_empty() || group.contains(['/', ' ']) {
            return Err(cfg("--group / ORDERLAKE_GROUP", format!("'{group}' must be non-empty without '/' or spaces")));
        }
        let sales_topic = o.sales_topic.or(fc.kafka.sales_topic).unwrap_or_else(|| "shop.sales".into());
        if sales_topic.contains('/') {
            return Err(cfg(
                "--sales-topic / ORDERLAKE_SALES_TOPIC",
                format!("'{sales_topic}' is not a valid topic name"),
            ));
        }
        let partitions = fc.kafka.partitions.unwrap_or(3);
        if !(1..=1000).contains(&partitions) {
            return Err(cfg("kafka.partitions", "must be between 1 and 1000"));
        }

        let lake_raw = o.lake.or(fc.lake.uri).unwrap_or_else(|| "./lake".into());
        let lake = parse_lake_uri(&lake_raw)?;

        let mut storage_options = fc.lake.storage_options;
        storage_options.extend(azure_env_options());
        for kv in &o.storage_options {
            let (k, v) =
                kv.split_once('=').ok_or_else(|| cfg("--storage-option", format!("'{kv}' is not KEY=VALUE")))?;
            storage_options.insert(k.trim().to_string(), v.to_string());
        }

        let mongodb_uri = o.mongodb_uri.or(fc.mongodb.uri).filter(|s| !s.is_empty());
        if let Some(u) = &mongodb_uri
            && !(u.starts_with("mongodb://") || u.starts_with("mongodb+srv://"))
        {
            return Err(cfg("--mongodb-uri / ORDERLAKE_MONGODB_URI", "must start with mongodb:// or mongodb+srv://"));
        }
        let mongodb_database = o.mongodb_database.or(fc.mongodb.database).unwrap_or_else(|| "orderlake".into());
        let lag_ms = fc.mongodb.aggregates_lag_ms.unwrap_or(2_000);
        if lag_ms > 600_000 {
            return Err(cfg(
                "mongodb.aggregates_lag_ms",
                format!("{lag_ms} is above 600000 (10 minutes); 0 publishes the aggregates with every batch"),
            ));
        }
        let hold_ms = fc.mongodb.hold_batches_ms.unwrap_or(2_000);
        if hold_ms > 60_000 {
            return Err(cfg(
                "mongodb.hold_batches_ms",
                format!("{hold_ms} is above 60000 (1 minute); 0 cuts every batch at batch.max_latency_ms"),
            ));
        }

        let batch = BatchSettings {
            max_records: fc.batch.max_records.unwrap_or(50_000),
            max_bytes: fc.batch.max_bytes.unwrap_or(64 * 1024 * 1024),
            max_latency: Duration::from_millis(fc.batch.max_latency_ms.unwrap_or(1_000)),
            max_in_flight_bytes: fc.batch.max_in_flight_bytes.unwrap_or(64 * 1024 * 1024),
            align_topics: Duration::from_millis(fc.batch.align_topics_ms.unwrap_or(1_000)),
        };
        if batch.max_records == 0 {
            return Err(cfg("batch.max_records", "must be at least 1"));
        }
        if batch.max_bytes < 1024 {
            return Err(cfg("batch.max_bytes", "must be at least 1024"));
        }
        if batch.max_in_flight_bytes < batch.max_bytes {
            return Err(cfg(
                "batch.max_in_flight_bytes",
                format!(
                    "{} is below batch.max_bytes ({}): a batch could never fill; raise it or lower batch.max_bytes",
                    batch.max_in_flight_bytes, batch.max_bytes
                ),
            ));
        }
        if batch.align_topics > Duration::from_secs(3_600) {
            return Err(cfg(
                "batch.align_topics_ms",
                format!("{} is above 3600000 (1 hour); 0 turns alignment off", batch.align_topics.as_millis()),
            ));
        }
        if batch.max_latency.is_zero() {
            return Err(cfg("batch.max_latency_ms", "must be at least 1"));
        }
        let m = &fc.maintenance;
        let retention_hours = m.vacuum_retention_hours.unwrap_or(SAFE_RETENTION_HOURS);
        if retention_hours < SAFE_RETENTION_HOURS && !m.allow_short_retention.unwrap_or(false) {
            return Err(cfg(
                "maintenance.vacuum_retention_hours",
                format!(
                    "{retention_hours} is below the safe minimum of {SAFE_RETENTION_HOURS} (7 days): a running reader or time travel may still need those files; set maintenance.allow_short_retention = true to override"
                ),
            ));
        }
        let target_mb = m.target_file_mb.unwrap_or(128);
        if !(1..=4096).contains(&target_mb) {
            return Err(cfg("maintenance.target_file_mb", format!("{target_mb} must be between 1 and 4096")));
        }
        let keyed_rows = m.keyed_file_rows.unwrap_or(250_000);
        if !(1_000..=100_000_000).contains(&keyed_rows) {
            return Err(cfg(
                "maintenance.keyed_file_rows",
                format!("{keyed_rows} must be between 1000 and 100000000 (default 250000)"),
            ));
        }
        let today_small = m.today_small_files.unwrap_or(64);
        if today_small > 10_000 {
            return Err(cfg(
                "maintenance.today_small_files",
                format!("{today_small} must be at most 10000 (default 64): every bronze commit replays them"),
            ));
        }
        let maintenance = MaintenanceSettings {
            every_batches: m.every_batches.unwrap_or(20),
            target_file_bytes: target_mb * 1024 * 1024,
            keyed_file_rows: keyed_rows,
            today_small_files: today_small as usize,
            vacuum_retention: Duration::from_secs(retention_hours * 3600),
        };
        let prefix = |v: Option<String>, d: &str, key: &str| -> Result<String> {
            let p = v.unwrap_or_else(|| d.into());
            if p.is_empty() || p.starts_with('/') || p.contains("..") {
                return Err(cfg(key, format!("'{p}' must be a relative path inside the lake")));
            }
            Ok(p.trim_end_matches('/').to_string())
        };
        let level = fc.log.level.unwrap_or_else(|| "info".into());
        if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
            return Err(cfg("log.level", format!("'{level}' is not one of error, warn, info, debug, trace")));
        }
        let log_format = match (o.log_format, fc.log.format.as_deref()) {
            (Some(f), _) => f,
            (None, None | Some("text")) => LogFormat::Text,
            (None, Some("json")) => LogFormat::Json,
            (None, Some(other)) => return Err(cfg("log.format", format!("'{other}' is not one of text, json"))),
        };
        Ok(Settings {
            brokers,
            group,
            sales_topic,
            partitions,
            connect_timeout: Duration::from_millis(fc.kafka.connect_timeout_ms.unwrap_or(15_000).max(100)),
            kafka_options: {
                let mut options = fc.kafka.options;
                options.extend(kafka_env_options(std::env::vars()));
                options
            },
            lake,
            storage_options,
            read_back_bytes: fc.lake.read_back_mib.map_or(crate::lake::store::CACHE_BYTES, |m| m << 20),
            mongodb_uri,
            mongodb_database,
            aggregates_lag: Duration::from_millis(lag_ms),
            hold_batches: Duration::from_millis(hold_ms),
            batch,
            maintenance,
            bronze_prefix: prefix(fc.tables.bronze, "bronze", "tables.bronze")?,
            silver_prefix: prefix(fc.tables.silver, "silver", "tables.silver")?,
            gold_prefix: prefix(fc.tables.gold, "gold", "tables.gold")?,
            log_level: level,
            log_format,
            fail_at: std::env::var("ORDERLAKE_TEST_FAIL_AT").ok().filter(|s| !s.is_empty()),
            bronze_only: false,
            cdc: crate::cdc_config::CdcSettings::from_file(fc.cdc, o.cdc_prefix)?,
            shutdown_timeout: Duration::from_millis(fc.run.shutdown_timeout_ms.unwrap_or(30_000)),
            max_backoff: Duration::from_millis(fc.run.max_backoff_ms.unwrap_or(30_000).max(10)),
            once_retry_limit: Duration::from_millis(fc.run.once_retry_limit_ms.unwrap_or(300_000)),
            catch_up_versions: match fc.run.catch_up_versions.unwrap_or(50) {
                v @ 1..=100_000 => v as i64,
                v => return Err(cfg("run.catch_up_versions", format!("{v}: set 1 to 100000 (default 50)"))),
            },
        })
    }

    /// The topics this pipeline consumes: the sales topic (unless disabled with an empty name)
    /// and every configured CDC topic.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = Some(self.sales_topic.clone()).filter(|s| !s.is_empty()).into_iter().collect();
        if let Some(c) = &self.cdc {
            t.extend(c.tables.iter().map(|t| t.topic.clone()));
        }
        t
    }

    /// Test-only fault injection: returns an error when `stage` is the configured failure point.
    pub fn checkpoint(&self, stage: &str) -> Result<()> {
        fault_point(self.fail_at.as_deref(), stage)
    }
}

/// [`Settings::checkpoint`] for work that runs apart from the settings (the MongoDB publish task).
pub fn fault_point(fail_at: Option<&str>, stage: &str) -> Result<()> {
    if fault_is(fail_at, stage) { Err(Error::InjectedFault(stage.to_string())) } else { Ok(()) }
}

/// Whether the test-only fault setting names `stage` (it may name several, comma-separated).
pub fn fault_is(fail_at: Option<&str>, stage: &str) -> bool {
    fail_at.is_some_and(|s| s.split(',').any(|f| f.trim() == stage))
}

/// Accepts `file:///abs`, a plain local path (made absolute), `az://container/path`,
/// `abfs[s]://container@account.dfs.core.windows.net/path`.
pub fn parse_lake_uri(raw: &str) -> Result<Url> {
    let key = "--lake / ORDERLAKE_LAKE";
    let mut url = if raw.contains("://") {
        let u = Url::parse(raw).map_err(|e| cfg(key, format!("'{raw}' is not a URI: {e}")))?;
        match u.scheme() {
            "file" | "az" | "azure" | "abfs" | "abfss" | "adl" => u,
            s => {
                return Err(cfg(
                    key,
                    format!(
                        "scheme '{s}' is not supported; use file:///abs/path, az://container/path or abfss://container@account.dfs.core.windows.net/path"
                    ),
                ));
            }
        }
    } else {
        let p = Path::new(raw);
        let abs = if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir()?.join(p) };
        Url::from_directory_path(&abs).map_err(|_| cfg(key, format!("'{raw}' is not a usable local path")))?
    };
    if url.scheme() != "file" && url.host_str().unwrap_or("").is_empty() {
        return Err(cfg(key, format!("'{raw}' names no container; use az://<container>/<path>")));
    }
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// The usual Azure variables become object_store options, so `AZURE_STORAGE_ACCOUNT_NAME` /
/// `AZURE_STORAGE_ACCOUNT_KEY` / `AZURE_STORAGE_USE_EMULATOR` work as they do for other tools.
fn azure_env_options() -> HashMap<String, String> {
    azure_options_from(std::env::vars())
}

fn azure_options_from(vars: impl Iterator<Item = (String, String)>) -> HashMap<String, String> {
    let vars: HashMap<String, String> = vars.collect();
    let mut options: HashMap<String, String> = vars
        .iter()
        .filter(|(k, _)| {
            k.starts_with("AZURE_STORAGE_")
                || k.starts_with("AZURE_CLIENT_")
                || ["AZURE_TENANT_ID", "AZURE_ALLOW_HTTP", "AZURE_MSI_ENDPOINT", "AZURE_FEDERATED_TOKEN_FILE"]
                    .contains(&k.as_str())
        })
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    // Azure Container Apps and App Service publish their managed-identity endpoint as
    // IDENTITY_ENDPOINT (object_store reads the matching IDENTITY_HEADER itself); delta-rs does not
    // look at it, so without this a managed identity there would try the VM endpoint and fail.
    if let Some(endpoint) = vars.get("IDENTITY_ENDPOINT") {
        options.entry("azure_msi_endpoint".into()).or_insert_with(|| endpoint.clone());
    }
    options
}

/// `ORDERLAKE_KAFKA_<PROPERTY>` variables become librdkafka properties (`_` for `.`, `__` for `_`),
/// so secrets such as `sasl.password` can come from the environment (a Key Vault reference in
/// Container Apps, a Kubernetes secret) instead of the config file. They win over the file.
fn kafka_env_options(vars: impl Iterator<Item = (String, String)>) -> HashMap<String, String> {
    vars.filter_map(|(k, v)| {
        let name = k.strip_prefix("ORDERLAKE_KAFKA_")?;
        let property = name.to_ascii_lowercase().split("__").map(|part| part.replace('_', ".")).collect::<Vec<_>>();
        Some((property.join("_"), v))
    })
    .collect()
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
