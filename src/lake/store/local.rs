//! The object store of a local lake: object_store's local file system, except for listing a
//! table's `_delta_log/` from an offset.
//!
//! After every commit, and at every refresh of a table, delta-rs' kernel lists the table's log
//! from the version it holds to find the newer commits. object_store answers that on a local
//! disk by walking the whole directory and turning every entry's name into a store path before
//! comparing it with the offset (≈ 1–3 µs an entry). Commit files stay for the log retention (30
//! days), so the log gains two files a second per table at two batches a second: that walk was
//! the fastest-growing cost of a continuous run on a local lake (a third of it by the hour). Here
//! the names come from [`super::log_index`], which reads a log directory once and then follows
//! its changes, with names compared as bytes, and only the newer entries are looked up, all in
//! one blocking task.
//! Azure lists from the offset on its side; it needs none of this.
//!
//! Where the byte comparison might not order entries as the walk would (a subdirectory, a name
//! that needs escaping, a path that needs decoding), the walk answers as before.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use deltalake::logstore::object_store::{
    self, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, path::Path,
};
use deltalake::logstore::{ObjectStoreFactory, ObjectStoreRef, StorageConfig};
use futures::StreamExt;
use futures::stream::BoxStream;
use url::Url;

/// A local file system store with a cheap listing of `_delta_log/` from an offset.
#[derive(Debug)]
pub struct LocalStore {
    inner: ObjectStoreRef,
}

impl LocalStore {
    pub fn new(inner: ObjectStoreRef) -> Self {
        LocalStore { inner }
    }
}

impl fmt::Display for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalStore({})", self.inner)
    }
}

/// The names in the directory of `prefix` (a store path from the file system's root) that sort
/// after `after` (a name in it), sorted; `None` when a byte comparison of names
/// cannot be trusted to order them as the walk does, or the directory cannot be read (the walk
/// then answers, or fails, itself).
fn names_after(prefix: &Path, after: &str) -> Option<Vec<String>> {
    let dir = prefix.as_ref();
    // Only a log directory, and only a path that needs no decoding.
    if !dir.ends_with("_delta_log") || dir.contains('%') || after.contains('/') {
        return None;
    }
    super::log_index::names_after(&std::path::Path::new("/").join(dir), after)
}

/// An entry's size and times as object_store's local store reports them (its ETag included);
/// `None` for one removed since it was listed, which the walk leaves out as well.
fn meta(dir: &std::path::Path, prefix: &Path, name: &str) -> Option<object_store::Result<ObjectMeta>> {
    use std::os::unix::fs::MetadataExt;
    let md = match std::fs::metadata(dir.join(name)) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) })),
    };
    let modified = md.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH);
    let micros = modified.duration_since(std::time::SystemTime::UNIX_EPOCH).unwrap_or_default().as_micros();
    Some(Ok(ObjectMeta {
        location: prefix.clone().join(name),
        last_modified: modified.into(),
        size: md.len(),
        e_tag: Some(format!("{:x}-{micros:x}-{:x}", md.ino(), md.len())),
        version: None,
    }))
}

/// The name in `prefix`'s directory that `offset` stands for.
fn offset_name<'a>(prefix: &Path, offset: &'a Path) -> Option<&'a str> {
    offset.as_ref().strip_prefix(prefix.as_ref())?.strip_prefix('/')
}

impl LocalStore {
    /// The entries of the log directory `prefix` after the name `after`, in name order, as the
    /// walk (`fallback`) would list them; the walk answers when [`names_after`] cannot.
    fn listed(
        &self,
        prefix: Path,
        after: String,
        fallback: impl FnOnce(&ObjectStoreRef) -> BoxStream<'static, object_store::Result<ObjectMeta>> + Send + 'static,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = self.inner.clone();
        let listed = async move {
            // The names and their sizes and times in one blocking task: a `head` per entry was a
            // blocking task each, and the kernel lists every commit since the last checkpoint
            // at every refresh of every table.
            let read = tokio::task::spawn_blocking(move || {
                let names = names_after(&prefix, &after)?;
                let dir = std::path::Path::new("/").join(prefix.as_ref());
                Some(names.iter().filter_map(|n| meta(&dir, &prefix, n)).collect::<Vec<_>>())
            });
            match read.await.ok().flatten() {
                Some(metas) => futures::stream::iter(metas).boxed(),
                None => fallback(&inner),
            }
        };
        futures::stream::once(listed).flatten().boxed()
    }
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let Some((prefix, after)) = prefix.and_then(|p| Some((p, offset_name(p, offset)?))) else {
            return self.inner.list_with_offset(prefix, offset);
        };
        let (p, o) = (prefix.clone(), offset.clone());
        self.listed(prefix.clone(), after.to_string(), move |inner| inner.list_with_offset(Some(&p), &o))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// Builds local stores: delta-rs' default one inside a [`LocalStore`].
struct LocalFactory {
    inner: Arc<dyn ObjectStoreFactory>,
}

impl ObjectStoreFactory for LocalFactory {
    fn parse_url_opts(&self, url: &Url, config: &StorageConfig) -> deltalake::DeltaResult<(ObjectStoreRef, Path)> {
        let (store, path) = self.inner.parse_url_opts(url, config)?;
        Ok((Arc::new(LocalStore::new(store)), path))
    }
}

/// Puts a [`LocalStore`] in front of delta-rs' local file system store.
pub fn register() {
    let Ok(url) = Url::parse("file://") else { return };
    let factories = deltalake::logstore::object_store_factories();
    let Some(default) = factories.get(&url).map(|f| f.value().clone()) else { return };
    factories.insert(url, Arc::new(LocalFactory { inner: default }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::logstore::object_store::local::LocalFileSystem;
    use futures::TryStreamExt;

    async fn listed(store: &dyn ObjectStore, prefix: &Path, offset: &Path) -> Vec<ObjectMeta> {
        store.list_with_offset(Some(prefix), offset).try_collect().await.unwrap()
    }

    fn sorted(mut metas: Vec<ObjectMeta>) -> Vec<ObjectMeta> {
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        metas
    }

    #[tokio::test]
    async fn a_log_is_listed_from_an_offset_as_the_walk_lists_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("t").join("_delta_log");
        std::fs::create_dir_all(&log).unwrap();
        for name in [
            "00000000000000000000.json",
            "00000000000000000001.json",
            "00000000000000000002.json",
            "00000000000000000002.checkpoint.parquet",
            "00000000000000000003.json",
            "00000000000000000003.crc",
            "00000000000000000004.json#1", // being written
            "_last_checkpoint",
        ] {
            std::fs::write(log.join(name), name).unwrap();
        }
        let walk: ObjectStoreRef = Arc::new(LocalFileSystem::new());
        let local = LocalStore::new(walk.clone());
        let prefix = Path::from_absolute_path(&log).unwrap();
        for v in ["00000000000000000000.json", "00000000000000000002.json", "00000000000000000003.crc", "_last"] {
            let offset = prefix.clone().join(v);
            let ours = listed(&local, &prefix, &offset).await;
            assert_eq!(ours, sorted(listed(walk.as_ref(), &prefix, &offset).await), "from {v}");
            assert!(ours.windows(2).all(|w| w[0].location < w[1].location), "in order");
        }
        let newer: Vec<String> = listed(&local, &prefix, &prefix.clone().join("00000000000000000001.json"))
            .await
            .into_iter()
            .map(|m| m.location.filename().unwrap().to_string())
            .collect();
        assert_eq!(
            newer,
            [
                "00000000000000000002.checkpoint.parquet",
                "00000000000000000002.json",
                "00000000000000000003.crc",
                "00000000000000000003.json",
                "_last_checkpoint"
            ]
        );

        let names = names_after(&prefix, "00000000000000000002.json").expect("read as bytes");
        assert_eq!(names.len(), 3, "{names:?}");

        // A subdirectory: the walk answers, entries below it included.
        std::fs::create_dir(log.join("_commits")).unwrap();
        std::fs::write(log.join("_commits").join("x.json"), "x").unwrap();
        let offset = prefix.clone().join("00000000000000000002.json");
        let ours = listed(&local, &prefix, &offset).await;
        assert!(ours.iter().any(|m| m.location.as_ref().ends_with("_commits/x.json")));
        assert_eq!(sorted(ours), sorted(listed(walk.as_ref(), &prefix, &offset).await));
        assert!(names_after(&prefix, "00000000000000000002.json").is_none());

        // Not a log directory, or a missing one: the walk answers.
        assert!(names_after(&Path::from_absolute_path(dir.path()).unwrap(), "").is_none());
        let gone = Path::from_absolute_path(dir.path().join("u").join("_delta_log")).unwrap();
        assert!(listed(&local, &gone, &gone.clone().join("0.json")).await.is_empty());
    }
}
