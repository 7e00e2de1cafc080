//! The log store of remote tables: delta-rs' default one, except for how a commit learns that no
//! one committed since the version it read.
//!
//! Before writing commit N + 1, delta-rs asks for the table's newest version, and the default
//! answer lists the whole `_delta_log/` prefix (against Azurite every time; against Azure from the
//! version on, but a LIST is still priced as a write). Commits are numbered without gaps, so when
//! `N + 1` does not exist and `N` does, `N` is the newest: one HEAD (and the HEAD of `N` is
//! answered from memory when this process wrote or read that commit, see [`super::store`]). In any
//! other case the default listing answers. The commit itself is a create-if-absent PUT either
//! way, so a writer that slips in between still makes it fail and retry as before.

use std::sync::Arc;

use bytes::Bytes;
use deltalake::DeltaResult;
use deltalake::kernel::Version;
use deltalake::kernel::transaction::TransactionError;
use deltalake::logstore::object_store::{self, ObjectStore, ObjectStoreExt};
use deltalake::logstore::{
    CommitOrBytes, LogStore, LogStoreConfig, LogStoreFactory, ObjectStoreRef, StorageConfig, commit_uri_from_version,
    default_logstore,
};
use url::Url;
use uuid::Uuid;

/// delta-rs' default log store with [`LogStore::get_latest_version`] answered by HEADs when it can.
struct ProbingLogStore {
    inner: Arc<dyn LogStore>,
}

#[async_trait::async_trait]
impl LogStore for ProbingLogStore {
    /// The inner store's name: delta-rs decides by the name whether a commit is written as bytes
    /// with a create-if-absent PUT ("DefaultLogStore") or through a temporary file.
    fn name(&self) -> String {
        self.inner.name()
    }

    async fn read_commit_entry(&self, version: Version) -> DeltaResult<Option<Bytes>> {
        self.inner.read_commit_entry(version).await
    }

    async fn write_commit_entry(
        &self,
        version: Version,
        commit_or_bytes: CommitOrBytes,
        operation_id: Uuid,
    ) -> Result<(), TransactionError> {
        self.inner.write_commit_entry(version, commit_or_bytes, operation_id).await
    }

    async fn abort_commit_entry(
        &self,
        version: Version,
        commit_or_bytes: CommitOrBytes,
        operation_id: Uuid,
    ) -> Result<(), TransactionError> {
        self.inner.abort_commit_entry(version, commit_or_bytes, operation_id).await
    }

    async fn get_latest_version(&self, start_version: Version) -> DeltaResult<Version> {
        let store = self.inner.object_store(None);
        let exists = |v: Version| {
            let store = store.clone();
            async move {
                match store.head(&commit_uri_from_version(Some(v))).await {
                    Ok(_) => Some(true),
                    Err(object_store::Error::NotFound { .. }) => Some(false),
                    Err(_) => None, // let the listing answer (and fail, if storage is away)
                }
            }
        };
        if exists(start_version + 1).await == Some(false) && exists(start_version).await == Some(true) {
            return Ok(start_version);
        }
        self.inner.get_latest_version(start_version).await
    }

    fn object_store(&self, operation_id: Option<Uuid>) -> Arc<dyn ObjectStore> {
        self.inner.object_store(operation_id)
    }

    fn root_object_store(&self, operation_id: Option<Uuid>) -> Arc<dyn ObjectStore> {
        self.inner.root_object_store(operation_id)
    }

    fn config(&self) -> &LogStoreConfig {
        self.inner.config()
    }
}

struct ProbingFactory;

impl LogStoreFactory for ProbingFactory {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(Arc::new(ProbingLogStore { inner: default_logstore(prefixed_store, root_store, location, options) }))
    }
}

/// Puts the probing log store in front of delta-rs' for the Azure schemes (after `register_handlers`).
pub fn register_azure() {
    let factory = Arc::new(ProbingFactory);
    for scheme in super::store::AZURE_SCHEMES {
        if let Ok(url) = Url::parse(&format!("{scheme}://")) {
            deltalake::logstore::logstore_factories().insert(url, factory.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;
    use crate::lake::store::tests::Counting;
    use deltalake::logstore::object_store::path::Path;

    async fn commit(store: &Counting, v: u64) {
        store.put(&Path::from(format!("_delta_log/{v:020}.json")), Bytes::from_static(b"{}").into()).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_newest_version_is_found_by_probing_and_by_listing_when_probing_cannot_tell() {
        let store = Arc::new(Counting::default());
        for v in 0..=3 {
            commit(&store, v).await;
        }
        let url = Url::parse("memory:///").unwrap();
        let ls =
            ProbingLogStore { inner: default_logstore(store.clone(), store.clone(), &url, &StorageConfig::default()) };
        let lists = || store.lists.load(Relaxed);
        assert_eq!(ls.get_latest_version(3).await.unwrap(), 3, "3 exists, 4 does not");
        assert_eq!(lists(), 0, "answered without listing the log");
        assert_eq!(ls.get_latest_version(1).await.unwrap(), 3, "2 exists: the listing answers");
        assert_eq!(lists(), 1);
        commit(&store, 4).await;
        assert_eq!(ls.get_latest_version(3).await.unwrap(), 4, "another writer's commit is seen");
        // Commits before a checkpoint may be cleaned up: when the start is gone, the listing answers.
        store.inner.delete(&Path::from(format!("_delta_log/{:020}.json", 4))).await.unwrap();
        commit(&store, 5).await;
        let before = lists();
        assert!(ls.get_latest_version(4).await.is_err(), "the listing's answer: version 4 is missing");
        assert_eq!(lists(), before + 1);
    }
}
