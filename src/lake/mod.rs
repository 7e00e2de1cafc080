//! The Delta lake: where tables live, opening or creating them, and the `txn` progress markers
//! that make every layer exactly once. Table-specific writing lives in the submodules.

pub mod bronze;
pub mod checkpoints;
pub mod commits;
pub mod compact;
pub mod dead_letter;
pub mod handles;
pub(crate) mod keys;
pub mod log_cleanup;
mod log_store;
mod markers;
pub use markers::{Walked, commits_of};
pub mod merge;
pub mod read;
pub mod rebase;
pub mod retention;
pub mod rewrite;
pub mod rows;
pub mod schema;
pub mod silver;
pub mod splice;
pub mod stats;
pub mod store;
pub mod tiered;

use std::collections::HashMap;

use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use tracing::info;
use url::Url;

use crate::config::Settings;
use crate::error::{Error, Result};
use schema::TableSpec;

/// Checkpoints every 10 commits keep log replay short for every reader (DESIGN.md §2).
const CHECKPOINT_INTERVAL: &str = "10";

/// Whether a storage error says the credentials were refused. Matched on the status and the
/// service's error codes, never on a bare "403": a request id or a date in the text may hold it
/// (a wrong key was once reported as a missing container because the text also held "404").
fn refused_credentials(text: &str) -> bool {
    ["AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch", "status 403", "403 Forbidden"]
        .iter()
        .any(|p| text.contains(p))
}

/// A lake root plus the storage options needed to reach it. Clones share the table cache.
#[derive(Debug, Clone)]
pub struct Lake {
    root: Url,
    options: HashMap<String, String>,
    /// Tables opened before, by relative path. A batch opens a dozen tables several times; loading
    /// each from scratch (list the log, read the checkpoint, build a store client) cost ~1 s per
    /// batch on Azurite, while refreshing a known table reads only the commits since.
    handles: std::sync::Arc<handles::Handles>,
    /// Tables looked for and not there (yet), kept as built: building one makes a new HTTP client,
    /// which reads every system root certificate, and a batch looks for the same absent tables
    /// (customers without CDC, tombstones without deletes) every time.
    absent: std::sync::Arc<std::sync::Mutex<HashMap<String, DeltaTable>>>,
    /// Progress markers per table version (replaying the log for each question was most of a
    /// small batch's storage requests).
    markers: std::sync::Arc<markers::Markers>,
    /// Checkpoints of the tables this process commits to, written in the background.
    checkpoints: std::sync::Arc<checkpoints::Checkpoints>,
    /// VACUUM's retention, from which a created table's tombstone retention follows
    /// ([`retention`]).
    vacuum_retention: std::time::Duration,
}

static REGISTER: std::sync::Once = std::sync::Once::new();

/// Per-request retry limits for a remote lake unless the user sets them (object_store keys).
const REMOTE_RETRY_DEFAULTS: [(&str, &str); 2] = [("max_retries", "4"), ("retry_timeout", "20s")];

/// The user's storage options plus orderlake's defaults. object_store's own defaults retry one
/// request for up to three minutes, during which a stop request cannot be honoured and nothing is
/// logged; orderlake retries whole batches itself (with backoff, watching SIGTERM), so a refused
/// connection fails a request within a couple of seconds and the batch-level retry takes over.
fn object_store_options(settings: &Settings) -> HashMap<String, String> {
    let mut options = settings.storage_options.clone();
    if settings.lake.scheme() != "file" {
        for (k, v) in REMOTE_RETRY_DEFAULTS {
            options.entry(k.to_string()).or_insert_with(|| v.to_string());
        }
    }
    options
}

impl Lake {
    /// A lake in a local directory with default settings, for unit tests.
    #[cfg(test)]
    pub(crate) fn local(root: &std::path::Path) -> Lake {
        use crate::config::{FileConfig, Overrides};
        let o = Overrides { lake: Some(root.to_str().expect("a UTF-8 path").into()), ..Default::default() };
        Lake::new(&Settings::from_parts(FileConfig::default(), o).expect("default settings"))
    }

    pub fn new(settings: &Settings) -> Self {
        REGISTER.call_once(|| {
            deltalake::azure::register_handlers(None);
            store::register_azure();
            log_store::register_azure();
            store::local::register();
        });
        if settings.lake.scheme() != "file" {
            store::set_capacity(settings.read_back_bytes);
            for rel in [settings.bronze_prefix.as_str(), "_orderlake"] {
                if let Ok(url) = settings.lake.join(&format!("{}/", rel.trim_matches('/'))) {
                    store::write_only(&url);
                }
            }
        }
        let handles = std::sync::Arc::new(handles::Handles::default());
        Lake {
            root: settings.lake.clone(),
            options: object_store_options(settings),
            handles: handles.clone(),
            absent: Default::default(),
            markers: Default::default(),
            checkpoints: std::sync::Arc::new(checkpoints::Checkpoints::new(handles)),
            vacuum_retention: settings.maintenance.vacuum_retention,
        }
    }

    /// Waits (at most `limit`) for the checkpoints queued by commits so far; false if some are
    /// still unwritten (readers then replay a few more commits; nothing else depends on them).
    pub async fn settle_checkpoints(&self, limit: std::time::Duration) -> bool {
        self.checkpoints.settle(limit).await
    }

    pub fn root(&self) -> &Url {
        &self.root
    }

    pub fn table_url(&self, rel: &str) -> Result<Url> {
        self.root
            .join(&format!("{}/", rel.trim_matches('/')))
            .map_err(|e| Error::Other(format!("table path {rel}: {e}")))
    }

    /// Checks at start that the lake root can be reached and written, so a missing container,
    /// rejected credentials or an unwritable path fail with one line instead of mid-batch.
    pub async fn check(&self) -> Result<()> {
        let key = "--lake / ORDERLAKE_LAKE";
        if self.root.scheme() == "file" {
            let path = self.root.to_file_path().map_err(|_| Error::Config(format!("{key}: bad path {}", self.root)))?;
            let probe = path.join(".orderlake-write-probe");
            return std::fs::create_dir_all(&path)
                .and_then(|_| std::fs::write(&probe, b"probe"))
                .and_then(|_| std::fs::remove_file(&probe))
                .map_err(|e| Error::Config(format!("{key}: cannot write to {}: {e}", path.display())));
        }
        let store = DeltaTableBuilder::from_url(self.root.clone())?
            .with_storage_options(self.options.clone())
            .build()
            .map_err(|e| Error::Config(format!("{key}: {e}")))?
            .log_store()
            .root_object_store(None);
        let listed = tokio::time::timeout(std::time::Duration::from_secs(30), store.list_with_delimiter(None)).await;
        let container = self.root.host_str().unwrap_or_default();
        match listed {
            Ok(Ok(_)) => Ok(()),
            Err(_) => {
                Err(Error::Config(format!("{key}: no answer from the storage account for {} within 30 s", self.root)))
            }
            Ok(Err(e)) => {
                let text = e.to_string();
                let msg = if refused_credentials(&text) {
                    "the storage account rejected the credentials (check AZURE_STORAGE_ACCOUNT_KEY / SAS / service principal)".to_string()
                } else if text.contains("ContainerNotFound")
                    || text.contains("status 404")
                    || text.contains("404 Not Found")
                {
                    format!(
                        "container '{container}' does not exist; create it first (e.g. `az storage container create --name {container}`)"
                    )
                } else {
                    crate::redact::redact(&text)
                };
                Err(Error::Config(format!("{key}: {msg}")))
            }
        }
    }

    /// Deletes every object under the lake root and returns how many went (a local root goes as
    /// one directory: 0). Only `orderlake bench` calls it, on the per-phase lakes it made. The
    /// objects are listed from the container by the root's own path, so a wrong root removes
    /// nothing rather than a whole container.
    pub async fn remove_all(&self) -> Result<usize> {
        if self.root.scheme() == "file" {
            let path = self.root.to_file_path().map_err(|_| Error::Other(format!("bad lake path {}", self.root)))?;
            return match std::fs::remove_dir_all(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(0),
            };
        }
        let prefix = object_store::path::Path::from(self.root.path().trim_matches('/'));
        if prefix.as_ref().is_empty() {
            return Err(Error::Other(format!("refusing to remove the whole container of {}", self.root)));
        }
        let mut container = self.root.clone();
        container.set_path("/");
        let store = DeltaTableBuilder::from_url(container)?
            .with_storage_options(self.options.clone())
            .build()?
            .log_store()
            .root_object_store(None);
        use futures::{StreamExt, TryStreamExt};
        use object_store::ObjectStoreExt;
        let paths: Vec<_> = store.list(Some(&prefix)).map_ok(|m| m.location).try_collect().await?;
        futures::stream::iter(&paths)
            .map(|p| {
                let store = &store;
                async move {
                    match store.delete(p).await {
                        Err(object_store::Error::NotFound { .. }) => Ok(()),
                        other => other,
                    }
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(paths.len())
    }

    /// Opens a table; `Ok(None)` when it does not exist yet. Existence is checked by listing
    /// `_delta_log/` first, so a missing table is a plain answer rather than a logged load error.
    /// A table seen before is refreshed with the commits since (always the latest state).
    pub async fn open(&self, rel: &str) -> Result<Option<DeltaTable>> {
        let url = self.table_url(rel)?;
        if url.scheme() == "file" && url.to_file_path().is_ok_and(|p| !p.join("_delta_log").exists()) {
            self.forget(rel);
            return Ok(None);
        }
        let known = self.handles.get(rel);
        let table = match known {
            Some(t) => match refresh(t).await {
                Ok(t) => t,
                Err(e) => {
                    // Whatever went wrong, the next open starts from scratch.
                    self.forget(rel);
                    return Err(e);
                }
            },
            None => {
                let built = self.absent.lock().expect("absent tables").remove(rel);
                let mut t = match built {
                    Some(t) => t,
                    None => DeltaTableBuilder::from_url(url)?.with_storage_options(self.options.clone()).build()?,
                };
                if !t.verify_deltatable_existence().await? {
                    self.absent.lock().expect("absent tables").insert(rel.to_string(), t);
                    return Ok(None);
                }
                t.load().await?;
                t
            }
        };
        self.handles.insert(rel, &table);
        Ok(Some(table))
    }

    /// The last version an application recorded in `table` under `app_id` (`txn` action), as of
    /// the version `table` was loaded at.
    pub async fn txn_version(&self, table: &DeltaTable, app_id: &str) -> Result<Option<i64>> {
        self.markers.get(table, app_id).await
    }

    /// Whether `table` already records `version` (or later) for `app_id`: another instance, or an
    /// earlier attempt, has applied it. Checked on the freshly loaded table right before a commit,
    /// so a late writer never moves a marker backwards.
    pub async fn has_applied(&self, table: &DeltaTable, app_id: &str, version: i64) -> Result<bool> {
        Ok(self.txn_version(table, app_id).await?.is_some_and(|v| v >= version))
    }

    /// Writes `table`'s checkpoint now unless its last one is too recent (see
    /// [`checkpoints::Checkpoints::now`]); true if written.
    pub async fn checkpoint_now(&self, rel: &str, table: &DeltaTable) -> Result<bool> {
        self.checkpoints.now(rel, table).await
    }

    /// Remembers a table this process just committed to, so the next [`Lake::open`] starts from
    /// it instead of reading the commit back, and queues its checkpoint when one is due (every
    /// commit made with [`commit_with`] must come through here). An older state never replaces
    /// a newer one.
    pub fn keep(&self, rel: &str, table: &DeltaTable) {
        self.handles.keep(rel, table);
        self.checkpoints.after_commit(rel, table);
    }

    fn forget(&self, rel: &str) {
        self.handles.forget(rel);
    }

    /// Opens a table, creating it with `spec` when missing. Two instances creating the same table
    /// at once is fine: the loser of the race opens the winner's table.
    pub async fn open_or_create(&self, rel: &str, spec: &TableSpec) -> Result<DeltaTable> {
        if let Some(t) = self.open(rel).await? {
            return Ok(t);
        }
        let url = self.table_url(rel)?;
        if url.scheme() == "file" {
            let path = url.to_file_path().map_err(|_| Error::Other(format!("bad file URL {url}")))?;
            std::fs::create_dir_all(&path)
                .map_err(|e| Error::Config(format!("--lake: cannot create {}: {e}", path.display())))?;
        }
        // Not loaded first: there is nothing to load, and the kernel would log the attempt as an error.
        let table = DeltaTableBuilder::from_url(url)?.with_storage_options(self.options.clone()).build()?;
        let created = table
            .create()
            .with_table_name(rel.rsplit('/').next().unwrap_or(rel))
            .with_columns(spec.delta_fields())
            .with_partition_columns(spec.partition_by.iter().map(|s| s.to_string()))
            .with_configuration_property(deltalake::TableProperty::CheckpointInterval, Some(CHECKPOINT_INTERVAL))
            .with_configuration_property(
                deltalake::TableProperty::DeletedFileRetentionDuration,
                Some(retention::value(self.vacuum_retention)),
            )
            .with_configuration_property(deltalake::TableProperty::DataSkippingStatsColumns, Some(stats::value(spec)))
            .await;
        match created {
            Ok(t) => {
                info!(table = rel, "created Delta table");
                Ok(t)
            }
            Err(DeltaTableError::VersionAlreadyExists(_)) | Err(DeltaTableError::Generic(_)) => {
                self.open(rel).await?.ok_or_else(|| Error::Other(format!("table {rel} vanished while being created")))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Brings a known table to its latest version. Whether anything was committed since is asked with
/// one request for the next commit file: refreshing lists the whole `_delta_log` prefix, and a
/// batch opens each table several times, mostly with nothing new (the commits are numbered
/// without gaps, so no next file means no newer version).
pub async fn refresh(mut table: DeltaTable) -> Result<DeltaTable> {
    let next = format!("_delta_log/{:020}.json", version_of(&table) + 1);
    use object_store::ObjectStoreExt;
    match table.log_store().object_store(None).head(&next.into()).await {
        Err(object_store::Error::NotFound { .. }) => return Ok(table),
        Err(e) => return Err(DeltaTableError::from(e).into()),
        Ok(_) => {}
    }
    table.update_state().await?;
    Ok(table)
}

/// The commit properties of every orderlake commit: its `txn` progress markers, in the same
/// commit as the data. Without delta-rs' checkpoint and expired-log cleanup after the commit:
/// [`checkpoints`] writes those in the background for the tables passed to [`Lake::keep`].
pub fn commit_with(txns: Vec<Transaction>) -> CommitProperties {
    CommitProperties::default()
        .with_application_transactions(txns)
        .with_create_checkpoint(false)
        .with_cleanup_expired_logs(Some(false))
}

/// Records progress markers without data: one commit holding an empty batch and the `txn`s.
/// (delta-rs refuses a write with no batch at all.)
pub async fn mark(table: DeltaTable, spec: &TableSpec, txns: Vec<Transaction>) -> Result<DeltaTable> {
    let empty = arrow::array::RecordBatch::new_empty(spec.arrow_schema());
    let props = commit_with(txns);
    Ok(table
        .write(vec![empty])
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        .with_commit_properties(props)
        .await?)
}

/// The current version of a table (tables orderlake opens always exist).
pub fn version_of(table: &DeltaTable) -> u64 {
    table.version().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileConfig, Overrides};

    /// Commits write no checkpoint themselves; the background writer writes one at the table's
    /// own interval (here 5, not orderlake's 10: a table another tool created) and removes the
    /// expired commit files it covers. A table kept twice at one version is written once, and
    /// a table is not checkpointed again within `MIN_SPACING`.
    #[tokio::test]
    async fn checkpoints_are_written_in_the_background_at_the_tables_interval() {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap();
        let spec = &schema::BATCH_LOG;
        let mut t = DeltaTableBuilder::from_url(url)
            .unwrap()
            .build()
            .unwrap()
            .create()
            .with_columns(spec.delta_fields())
            .with_configuration_property(deltalake::TableProperty::CheckpointInterval, Some("5"))
            // Every commit file is expired as soon as a checkpoint covers it.
            .with_configuration_property(deltalake::TableProperty::LogRetentionDuration, Some("interval 0 seconds"))
            .await
            .unwrap();
        let log = dir.path().join("_delta_log");
        let has_commit = |v: u64| log.join(format!("{v:020}.json")).exists();
        let has_checkpoint = |v: u64| log.join(format!("{v:020}.checkpoint.parquet")).exists();
        let checkpoints = checkpoints::Checkpoints::new(Default::default());
        for v in 1..=4u64 {
            t = mark(t, spec, vec![Transaction::new("test", v as i64)]).await.unwrap();
            assert_eq!(version_of(&t), v);
            if v == 4 {
                assert!(!has_checkpoint(4), "the commit itself wrote no checkpoint");
            }
            checkpoints.after_commit("t", &t);
            checkpoints.after_commit("t", &t);
        }
        assert!(checkpoints.settle(std::time::Duration::from_secs(30)).await);
        assert!(has_checkpoint(4));
        assert!(!has_checkpoint(3) && !has_checkpoint(9));
        assert!(!has_commit(0) && !has_commit(3), "the checkpoint's job cleaned up the commits it covers");
        assert!(has_commit(4));
        let mut latest =
            DeltaTableBuilder::from_url(url::Url::from_directory_path(dir.path()).unwrap()).unwrap().build().unwrap();
        latest.load().await.unwrap();
        assert_eq!(version_of(&latest), 4, "the table loads from the checkpoint");

        // The next interval comes within `MIN_SPACING` of the last checkpoint: none is written.
        for v in 5..=9u64 {
            t = mark(t, spec, vec![Transaction::new("test", v as i64)]).await.unwrap();
            checkpoints.after_commit("t", &t);
        }
        assert!(checkpoints.settle(std::time::Duration::from_secs(30)).await);
        assert!(!has_checkpoint(9), "at most one checkpoint per table per {:?}", checkpoints::MIN_SPACING);
    }

    #[test]
    fn refused_credentials_are_told_by_status_and_code_not_by_any_number() {
        let refused = "Generic MicrosoftAzure error: Error performing list request: Client error with status \
            403 Forbidden: <Code>AuthorizationFailure</Code><Message>RequestId:9f1a4041-b404-11ee</Message>";
        assert!(refused_credentials(refused));
        let missing = "Generic MicrosoftAzure error: Client error with status 404 Not Found: \
            <Code>ContainerNotFound</Code><Message>RequestId:1403ab</Message>";
        assert!(!refused_credentials(missing));
    }

    #[test]
    fn remote_lakes_give_up_on_a_request_sooner_unless_told_otherwise() {
        let settings = |lake: &str, opts: Vec<String>| {
            let o = Overrides { lake: Some(lake.into()), storage_options: opts, ..Default::default() };
            Settings::from_parts(FileConfig::default(), o).unwrap()
        };
        let local = object_store_options(&settings("/tmp/lake", vec![]));
        assert!(!local.contains_key("max_retries"));
        let s = settings("az://c/lake", vec![]);
        let d = object_store_options(&s);
        assert_eq!((d["max_retries"].as_str(), d["retry_timeout"].as_str()), ("4", "20s"));
        assert!(!s.storage_options.contains_key("max_retries"), "other readers (the peer) see the user's options");
        let mine = object_store_options(&settings("az://c/lake", vec!["max_retries=10".into()]));
        assert_eq!(mine["max_retries"], "10", "the user's value wins");
    }
}
