//! Shared helpers: unique names, settings for a lake on Azurite or on disk, publishing, reading
//! tables and MongoDB collections back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Decimal128Type, Int64Type};
use mongodb::bson::{Bson, Document};
use orderlake::config::{FileConfig, Overrides, Settings};
use orderlake::decode::decimal::parse_cents;
use orderlake::lake::{Lake, read};

pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub fn brokers() -> String {
    std::env::var("ORDERLAKE_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn mongodb_uri() -> String {
    std::env::var("ORDERLAKE_TEST_MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into())
}

pub fn azurite_port() -> String {
    std::env::var("AZURITE_PORT").unwrap_or_else(|_| "10000".into())
}

/// A name no other test (or earlier run against the same services) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 100_000_000;
    format!("{prefix}-{}-{t}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `$ORDERLAKE_CACHE`, where `infra/local/install.sh` puts the stack and the venvs.
pub fn cache_dir() -> PathBuf {
    std::env::var("ORDERLAKE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/orderlake"))
}

pub fn python() -> PathBuf {
    cache_dir().join("venv/bin/python")
}

/// Storage options that reach Azurite.
pub fn azurite_options() -> Vec<String> {
    vec![
        "azure_storage_account_name=devstoreaccount1".into(),
        format!("azure_storage_account_key={AZURITE_KEY}"),
        "azure_storage_use_emulator=true".into(),
        "azure_allow_http=true".into(),
    ]
}

pub fn create_container(name: &str) {
    let out = Command::new(python())
        .arg(repo_root().join("infra/local/azure_container.py"))
        .arg(name)
        .env("AZURITE_PORT", azurite_port())
        .output()
        .expect("run azure_container.py");
    assert!(out.status.success(), "creating container {name}: {}", String::from_utf8_lossy(&out.stderr));
}

pub enum LakeKind {
    Azurite,
    Local(PathBuf),
}

/// Settings for a test pipeline named `name` (topic, group and Mongo database derive from it).
pub fn settings(name: &str, lake: &LakeKind, with_mongo: bool) -> Settings {
    settings_with(name, lake, with_mongo, "")
}

/// [`settings`] plus extra config-file TOML (e.g. a `[cdc]` section).
pub fn settings_with(name: &str, lake: &LakeKind, with_mongo: bool, extra_toml: &str) -> Settings {
    let (uri, storage_options) = match lake {
        LakeKind::Azurite => {
            let container = name.to_lowercase().replace(['.', '_'], "-");
            create_container(&container);
            (format!("az://{container}/lake"), azurite_options())
        }
        LakeKind::Local(p) => (format!("file://{}", p.display()), vec![]),
    };
    let o = Overrides {
        brokers: Some(brokers()),
        lake: Some(uri),
        mongodb_uri: with_mongo.then(mongodb_uri),
        mongodb_database: Some(name.replace(['.', '-'], "_")),
        group: Some(name.to_string()),
        sales_topic: Some(name.to_string()),
        storage_options,
        cdc_prefix: None,
        log_format: None,
    };
    // The extra TOML goes last: its sections (e.g. [cdc]) must not swallow the base keys.
    let text = format!("[batch]\nmax_records = 1200\nmax_latency_ms = 500\n[kafka]\npartitions = 3\n{extra_toml}");
    let fc: FileConfig = toml::from_str(&text).unwrap();
    Settings::from_parts(fc, o).expect("test settings")
}

pub async fn read_table(s: &Settings, rel: &str) -> Vec<RecordBatch> {
    let lake = Lake::new(s);
    let t = lake.open(rel).await.unwrap().unwrap_or_else(|| panic!("table {rel} exists"));
    read::scan(&t, None).await.unwrap()
}

pub async fn table_version(s: &Settings, rel: &str) -> Option<u64> {
    Lake::new(s).open(rel).await.unwrap().map(|t| orderlake::lake::version_of(&t))
}

/// A column as strings (any string type), money as cents, dates as days, integers as i64.
pub enum Val {
    S(Option<String>),
    I(Option<i64>),
}

pub fn column(batches: &[RecordBatch], name: &str) -> Vec<Val> {
    let mut out = Vec::new();
    for b in batches {
        let a = b.column_by_name(name).unwrap_or_else(|| panic!("column {name}"));
        let a = arrow::compute::cast(
            a,
            &match a.data_type() {
                arrow::datatypes::DataType::Utf8View | arrow::datatypes::DataType::LargeUtf8 => {
                    arrow::datatypes::DataType::Utf8
                }
                t => t.clone(),
            },
        )
        .unwrap();
        for i in 0..a.len() {
            out.push(match a.data_type() {
                arrow::datatypes::DataType::Utf8 => {
                    Val::S(a.is_valid(i).then(|| a.as_string::<i32>().value(i).to_string()))
                }
                arrow::datatypes::DataType::Decimal128(_, 2) => {
                    Val::I(a.is_valid(i).then(|| a.as_primitive::<Decimal128Type>().value(i) as i64))
                }
                arrow::datatypes::DataType::Date32 => {
                    Val::I(a.is_valid(i).then(|| a.as_primitive::<Date32Type>().value(i) as i64))
                }
                arrow::datatypes::DataType::Int64 => {
                    Val::I(a.is_valid(i).then(|| a.as_primitive::<Int64Type>().value(i)))
                }
                arrow::datatypes::DataType::Int32 => {
                    Val::I(a.is_valid(i).then(|| a.as_primitive::<arrow::datatypes::Int32Type>().value(i) as i64))
                }
                arrow::datatypes::DataType::Boolean => Val::I(a.is_valid(i).then(|| a.as_boolean().value(i) as i64)),
                arrow::datatypes::DataType::Timestamp(..) => Val::I(
                    a.is_valid(i).then(|| a.as_primitive::<arrow::datatypes::TimestampMicrosecondType>().value(i)),
                ),
                t => panic!("unexpected type {t} for {name}"),
            });
        }
    }
    out
}

pub fn strs(batches: &[RecordBatch], name: &str) -> Vec<Option<String>> {
    column(batches, name)
        .into_iter()
        .map(|v| if let Val::S(s) = v { s } else { panic!("{name} is not a string") })
        .collect()
}

pub fn ints(batches: &[RecordBatch], name: &str) -> Vec<Option<i64>> {
    column(batches, name)
        .into_iter()
        .map(|v| if let Val::I(i) = v { i } else { panic!("{name} is not numeric") })
        .collect()
}

/// Rows keyed by the string column `key`, each as the listed numeric columns.
pub fn keyed(batches: &[RecordBatch], key: &str, cols: &[&str]) -> BTreeMap<String, Vec<i64>> {
    let keys = strs(batches, key);
    let vals: Vec<Vec<Option<i64>>> = cols.iter().map(|c| ints(batches, c)).collect();
    let mut out = BTreeMap::new();
    for (i, k) in keys.into_iter().enumerate() {
        let row = vals.iter().map(|v| v[i].unwrap_or(0)).collect();
        assert!(out.insert(k.expect("key is set"), row).is_none(), "duplicate key in {key}");
    }
    out
}

pub async fn mongo_docs(s: &Settings, coll: &str) -> Vec<Document> {
    use futures::TryStreamExt;
    let uri = s.mongodb_uri.clone().unwrap_or_else(mongodb_uri);
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    client
        .database(&s.mongodb_database)
        .collection::<Document>(coll)
        .find(Document::new())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// A Decimal128 (or null) money field as cents.
pub fn money(d: &Document, field: &str) -> i64 {
    match d.get(field) {
        Some(Bson::Decimal128(x)) => parse_cents(&x.to_string()).unwrap_or_else(|e| panic!("{field}={x}: {e}")),
        other => panic!("{field} is not Decimal128: {other:?}"),
    }
}

pub fn int(d: &Document, field: &str) -> i64 {
    match d.get(field) {
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Int32(v)) => *v as i64,
        other => panic!("{field} is not an integer: {other:?}"),
    }
}

/// Runs a Python check script from `tests/py/` with the venv's interpreter.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(repo_root().join("tests/py").join(script))
        .args(args)
        .env("AZURITE_PORT", azurite_port())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{script} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A server of the test's own (SecantusDB or Azurite) on a free port, that the test may stop and
/// restart on the same port and data directory without disturbing the shared services.
pub struct PrivateServer {
    pub port: u16,
    kind: &'static str,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    /// Extra command-line arguments for the next (re)start, e.g. `--auth` and TLS files.
    pub extra_args: Vec<String>,
}

pub type PrivateMongo = PrivateServer;

impl PrivateServer {
    fn launch(kind: &'static str, args: &[&str]) -> PrivateServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let extra_args = args.iter().map(|a| a.to_string()).collect();
        let mut m = PrivateServer { port, kind, dir: tempfile::tempdir().unwrap(), child: None, extra_args };
        m.resume();
        m
    }

    pub fn start() -> PrivateServer {
        Self::launch("secantus", &[])
    }

    /// SecantusDB with extra arguments (e.g. `--enable-test-commands` for fail points).
    pub fn start_with(args: &[&str]) -> PrivateServer {
        Self::launch("secantus", args)
    }

    pub fn azurite() -> PrivateServer {
        Self::launch("azurite", &[])
    }

    pub fn tansu() -> PrivateServer {
        Self::launch("tansu", &[])
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port and data directory and waits until it answers.
    pub fn resume(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let data = self.dir.path().join("data");
        let port = self.port.to_string();
        let mut cmd = if self.kind == "tansu" {
            let cache = python().parent().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
            std::fs::create_dir_all(&data).unwrap();
            let url = format!("tcp://127.0.0.1:{port}");
            let mut c = Command::new(cache.join("tansu/bin/tansu"));
            // The sqlite path is relative: run from inside the data dir (memory:// would lose data).
            c.current_dir(&data).args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "sqlite://tansu.db",
            ]);
            c
        } else if self.kind == "azurite" {
            let cache = python().parent().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
            let mut c = Command::new(cache.join("node/node_modules/.bin/azurite-blob"));
            c.args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port,
                "--skipApiVersionCheck",
                "--loose",
                "--silent",
                "--location",
            ])
            .arg(&data)
            // The shared stack's fixes for Azurite's own stalls (infra/local/azurite-preload.js).
            .env("NODE_OPTIONS", format!("--require {}/infra/local/azurite-preload.js", env!("CARGO_MANIFEST_DIR")));
            c
        } else {
            let mut c = Command::new(python().parent().unwrap().join("secantusd-py"));
            c.args(["--host", "127.0.0.1", "--port", &port, "--storage-path"]).arg(&data);
            c
        };
        let child = cmd
            .args(&self.extra_args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start private server");
        self.child = Some(child);
        for _ in 0..120 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        panic!("private {} did not start on port {}", self.kind, self.port);
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s).
    pub fn pause(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe_kill(c.id(), 15);
            for _ in 0..40 {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.pause();
    }
}

/// Sends a signal to a process this test started.
pub fn unsafe_kill(pid: u32, signal: i32) {
    let _ = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
}

/// A child process that is killed when the guard is dropped, so a failing test leaves no
/// `orderlake` running behind it.
pub struct ChildGuard(pub Option<std::process::Child>);

impl ChildGuard {
    pub fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("child present")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `cmd` (an [`orderlake_cmd`]) running `run --config <config>` in the background, its log appended
/// to `log` (a restarted instance keeps one log); killed when the guard drops.
pub fn spawn_run(mut cmd: Command, config: &std::path::Path, log: &std::path::Path) -> ChildGuard {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let child = cmd.args(["run", "--config"]).arg(config).stdout(Stdio::null()).stderr(log).spawn().unwrap();
    ChildGuard(Some(child))
}

/// Sales lines with their transaction numbers prefixed, so a second batch of synthetic events
/// makes new orders instead of adding lines to the first batch's (`C` cancellations stay `C…`).
pub fn renumbered(records: Vec<orderlake::produce::SaleRecord>, prefix: &str) -> Vec<orderlake::produce::SaleRecord> {
    records
        .into_iter()
        .map(|mut r| {
            let c = if r.transaction_no.starts_with('C') { "C" } else { "" };
            r.transaction_no = format!("{c}{prefix}{}", r.transaction_no.trim_start_matches('C'));
            r
        })
        .collect()
}

/// Bronze of the sales topic holds exactly `expected` events, none twice.
pub async fn assert_bronze_exactly_once(s: &Settings, expected: usize) {
    let bronze = read_table(s, &format!("bronze/{}", s.sales_topic)).await;
    let coords: Vec<(i64, i64)> = ints(&bronze, "partition")
        .into_iter()
        .zip(ints(&bronze, "offset"))
        .map(|(p, o)| (p.unwrap(), o.unwrap()))
        .collect();
    let distinct: std::collections::BTreeSet<_> = coords.iter().collect();
    assert_eq!(distinct.len(), coords.len(), "an offset appears twice in bronze");
    assert_eq!(coords.len(), expected, "every published event is in bronze");
}

/// The `orderlake` binary with the connection settings of `s` in its environment.
pub fn orderlake_cmd(s: &Settings) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_orderlake"));
    c.env("ORDERLAKE_BROKERS", &s.brokers)
        .env("ORDERLAKE_LAKE", s.lake.as_str())
        .env("ORDERLAKE_MONGODB_DATABASE", &s.mongodb_database)
        .env("ORDERLAKE_GROUP", &s.group)
        .env("ORDERLAKE_SALES_TOPIC", &s.sales_topic)
        .env_remove("ORDERLAKE_TEST_FAIL_AT");
    // Storage options travel as the AZURE_* variables they are read from.
    for (k, v) in &s.storage_options {
        c.env(k.to_ascii_uppercase(), v);
    }
    if let Some(u) = &s.mongodb_uri {
        c.env("ORDERLAKE_MONGODB_URI", u);
    }
    c
}

/// Every event is in bronze and the batch log says every lake layer has applied bronze's last version.
/// Read in this order on purpose: once all events are counted, the version read next is at least
/// the one holding them, so the batch log matching it means every layer has them.
/// The newest version of bronze of `s`'s sales topic that holds events: the versions after it, if
/// any, are maintenance's compactions of today's files.
pub async fn bronze_events_version(s: &orderlake::config::Settings) -> i64 {
    let t = Lake::new(s).open(&format!("bronze/{}", s.sales_topic)).await.unwrap().expect("bronze exists");
    orderlake::lake::commits::last_changed(&t, -1).await.unwrap()
}

pub async fn lake_complete(s: &orderlake::config::Settings, events: usize) -> bool {
    // Polled while a run writes: a storage request that fails (Azurite under load has let one hang
    // for 30 s) means "not yet", the next poll asks again.
    match try_lake_complete(s, events).await {
        Ok(done) => done,
        Err(e) => {
            eprintln!("lake_complete: {e} (polling again)");
            false
        }
    }
}

async fn try_lake_complete(s: &orderlake::config::Settings, events: usize) -> orderlake::error::Result<bool> {
    let lake = Lake::new(s);
    let bronze_rel = format!("bronze/{}", s.sales_topic);
    let Some(bronze) = lake.open(&bronze_rel).await? else { return Ok(false) };
    if strs(&read::scan(&bronze, None).await?, "value").len() != events {
        return Ok(false);
    }
    let Some(log) = lake.open("_orderlake/batches").await? else { return Ok(false) };
    let Some(done) = ints(&read::scan(&log, None).await?, "bronze_version").into_iter().flatten().max() else {
        return Ok(false);
    };
    // Bronze's versions after the last batch may be its compactions, which hold no events.
    let Some(bronze) = lake.open(&bronze_rel).await? else { return Ok(false) };
    Ok(orderlake::lake::commits::last_changed(&bronze, done).await? == done)
}
