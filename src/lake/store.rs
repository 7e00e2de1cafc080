//! The object store under every remote table: delta-rs' Azure store, one per account, container and
//! options (shared by all the tables there), with a memory of the files that never change.
//!
//! A Delta table's commit files (`_delta_log/<version>.json`), checkpoints and data files are
//! written once under names never reused, and a micro-batch reads back most of what the batch
//! before it wrote: after each commit delta-rs reads the commit it just wrote twice (updating the
//! table state), the progress markers read it again, and the next batch's key scans read the
//! data files it wrote, often several times. On Azurite that was two thirds of a small batch's
//! storage requests. Files this process writes (or reads whole) are kept here, up to
//! [`CACHE_BYTES`] in all, oldest out first, and served from memory; everything that can change
//! (`_last_checkpoint`, listings, conditional requests) always goes to the store.
//!
//! The one thing a name-based memory cannot see is a table deleted and created again at the same
//! path by another process while this one runs; this process' own table states would be just as
//! wrong then. A version-0 commit written here forgets everything under that table.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex};

use bytes::Bytes;
use deltalake::logstore::object_store::{
    self, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, path::Path,
};
use deltalake::logstore::{ObjectStoreFactory, ObjectStoreRef, StorageConfig};
use futures::StreamExt;
use futures::stream::BoxStream;
use url::Url;

/// Memory for kept files by default, all stores together (`lake.read_back_mib`). A small
/// freshness batch reads ≈ 1 MiB back; a 50,000-event batch writes ≈ 10 MiB that the next one
/// partly reads.
pub const CACHE_BYTES: usize = 48 << 20;

static CAPACITY: AtomicUsize = AtomicUsize::new(CACHE_BYTES);

/// Sets the memory for kept files (0 keeps none); what is held beyond it goes at the next insert.
pub fn set_capacity(bytes: usize) {
    CAPACITY.store(bytes, Relaxed);
}

/// Files larger than this are never kept (they would push out many small ones).
const MAX_FILE_BYTES: usize = 8 << 20;

/// How often a read was answered from memory, and what is held (for `/metrics`).
#[derive(Debug, Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub bytes: AtomicU64,
}

impl Stats {
    /// `(reads that could be answered from memory, those that were)`.
    pub fn reads(&self) -> (u64, u64) {
        let hits = self.hits.load(Relaxed);
        (hits + self.misses.load(Relaxed), hits)
    }
}

pub fn stats() -> &'static Stats {
    static STATS: LazyLock<Stats> = LazyLock::new(Stats::default);
    &STATS
}

/// Paths (within their container) of tables whose data files this process writes but does not
/// read back: bronze and its dead letters are read only by a catch-up or rebuild, the batch log
/// only by `status`. Their files kept would only push out files that are read.
static WRITE_ONLY: LazyLock<Mutex<Vec<String>>> = LazyLock::new(Default::default);

/// Marks the tables under `url` (a remote lake path) as written, not read back: their data files
/// are not kept when written (their commits still are: delta-rs reads those back).
pub fn write_only(url: &Url) {
    if let Ok((_, path)) = object_store::ObjectStoreScheme::parse(url) {
        let prefix = format!("{}/", path.as_ref().trim_end_matches('/'));
        let mut w = WRITE_ONLY.lock().expect("write-only paths");
        if !w.contains(&prefix) {
            w.push(prefix);
        }
    }
}

fn write_only_data(location: &Path) -> bool {
    let s = location.as_ref();
    !s.contains("/_delta_log/") && WRITE_ONLY.lock().expect("write-only paths").iter().any(|p| s.starts_with(p))
}

/// Whether `location` names a file that is never rewritten: a commit, a checkpoint, a data file.
fn immutable(location: &Path) -> bool {
    let mut parts = location.parts();
    let Some(name) = parts.next_back() else { return false };
    let name = name.as_ref();
    let in_log = parts.next_back().is_some_and(|p| p.as_ref() == "_delta_log");
    if !in_log {
        return name.ends_with(".parquet");
    }
    let (digits, rest) = name.split_at(name.find('.').unwrap_or(name.len()));
    digits.len() == 20
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (rest == ".json" || (rest.starts_with(".checkpoint") && rest.ends_with(".parquet")))
}

/// The table directory of a version-0 commit (`…/_delta_log/00000000000000000000.json`).
fn created_table(location: &Path) -> Option<String> {
    let s = location.as_ref();
    s.strip_suffix("_delta_log/00000000000000000000.json").map(str::to_string)
}

struct Kept {
    bytes: Bytes,
    meta: ObjectMeta,
}

/// The kept files of every store, by store and path; oldest out first.
#[derive(Default)]
struct Files {
    by_key: HashMap<(u64, String), Kept>,
    order: VecDeque<(u64, String)>,
    held: usize,
}

impl Files {
    fn insert(&mut self, key: (u64, String), kept: Kept) {
        self.insert_within(key, kept, CAPACITY.load(Relaxed));
    }

    fn insert_within(&mut self, key: (u64, String), kept: Kept, capacity: usize) {
        if kept.bytes.len() > MAX_FILE_BYTES.min(capacity) {
            return;
        }
        self.held += kept.bytes.len();
        if let Some(old) = self.by_key.insert(key.clone(), kept) {
            self.held -= old.bytes.len();
        } else {
            self.order.push_back(key);
        }
        while self.held > capacity {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some(k) = self.by_key.remove(&oldest) {
                self.held -= k.bytes.len();
            }
        }
        stats().bytes.store(self.held as u64, Relaxed);
    }

    fn remove_where(&mut self, mut gone: impl FnMut(&(u64, String)) -> bool) {
        self.order.retain(|k| !gone(k));
        let held = &mut self.held;
        self.by_key.retain(|k, v| {
            let g = gone(k);
            if g {
                *held -= v.bytes.len();
            }
            !g
        });
        stats().bytes.store(self.held as u64, Relaxed);
    }
}

fn files() -> &'static Mutex<Files> {
    static FILES: LazyLock<Mutex<Files>> = LazyLock::new(Default::default);
    &FILES
}

/// Only plain reads can be answered from memory: no conditions, no object version.
fn plain(o: &GetOptions) -> bool {
    o.if_match.is_none()
        && o.if_none_match.is_none()
        && o.if_modified_since.is_none()
        && o.if_unmodified_since.is_none()
        && o.version.is_none()
}

fn one_chunk(b: Bytes) -> GetResultPayload {
    GetResultPayload::Stream(futures::stream::once(async move { Ok(b) }).boxed())
}

/// A store that keeps the immutable files it writes or reads whole (see the module comment).
pub struct KeepingStore {
    inner: ObjectStoreRef,
    id: u64,
}

impl fmt::Debug for KeepingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeepingStore({:?})", self.inner)
    }
}

impl fmt::Display for KeepingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeepingStore({})", self.inner)
    }
}

impl KeepingStore {
    pub fn new(inner: ObjectStoreRef, id: u64) -> Self {
        KeepingStore { inner, id }
    }

    fn key(&self, location: &Path) -> (u64, String) {
        (self.id, location.to_string())
    }

    fn kept(&self, location: &Path) -> Option<(Bytes, ObjectMeta)> {
        if !immutable(location) {
            return None;
        }
        let hit = files()
            .lock()
            .expect("kept files")
            .by_key
            .get(&self.key(location))
            .map(|k| (k.bytes.clone(), k.meta.clone()));
        let counter = if hit.is_some() { &stats().hits } else { &stats().misses };
        counter.fetch_add(1, Relaxed);
        hit
    }

    fn keep(&self, location: &Path, bytes: Bytes, meta: ObjectMeta) {
        files().lock().expect("kept files").insert(self.key(location), Kept { bytes, meta });
    }

    fn forget(&self, location: &Path) {
        let key = self.key(location);
        files().lock().expect("kept files").remove_where(|k| *k == key);
    }
}

#[async_trait::async_trait]
impl ObjectStore for KeepingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let copy = (immutable(location) && payload.content_length() <= MAX_FILE_BYTES && !write_only_data(location))
            .then(|| {
                let mut all = Vec::with_capacity(payload.content_length());
                payload.iter().for_each(|b| all.extend_from_slice(b));
                Bytes::from(all)
            });
        let put = self.inner.put_opts(location, payload, opts).await?;
        if let Some(table) = created_table(location) {
            // A table made (again) here: nothing kept from an earlier one at this path applies.
            let id = self.id;
            files().lock().expect("kept files").remove_where(|(i, p)| *i == id && p.starts_with(&table));
        }
        if let Some(bytes) = copy {
            let meta = ObjectMeta {
                location: location.clone(),
                last_modified: chrono::Utc::now(),
                size: bytes.len() as u64,
                e_tag: put.e_tag.clone(),
                version: put.version.clone(),
            };
            self.keep(location, bytes, meta);
        }
        Ok(put)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.forget(location);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        if plain(&options)
            && let Some((bytes, meta)) = self.kept(location)
        {
            let size = bytes.len() as u64;
            let range = match &options.range {
                None => 0..size,
                Some(r) => r
                    .as_range(size)
                    .map_err(|e| object_store::Error::Generic { store: "KeepingStore", source: Box::new(e) })?,
            };
            let body = if options.head { Bytes::new() } else { bytes.slice(range.start as usize..range.end as usize) };
            return Ok(GetResult { payload: one_chunk(body), meta, range, attributes: Default::default() });
        }
        let whole = plain(&options) && options.range.is_none() && !options.head && immutable(location);
        let got = self.inner.get_opts(location, options).await?;
        if !whole || got.meta.size > MAX_FILE_BYTES as u64 {
            return Ok(got);
        }
        let (meta, range, attributes) = (got.meta.clone(), got.range.clone(), got.attributes.clone());
        let bytes = got.bytes().await?;
        self.keep(location, bytes.clone(), meta.clone());
        Ok(GetResult { payload: one_chunk(bytes), meta, range, attributes })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        if let Some((bytes, _)) = self.kept(location) {
            let len = bytes.len() as u64;
            if ranges.iter().all(|r| r.start <= r.end && r.end <= len) {
                return Ok(ranges.iter().map(|r| bytes.slice(r.start as usize..r.end as usize)).collect());
            }
        }
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let id = self.id;
        let locations = locations
            .map(move |l| {
                if let Ok(p) = &l {
                    let key = (id, p.to_string());
                    files().lock().expect("kept files").remove_where(|k| *k == key);
                }
                l
            })
            .boxed();
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
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.forget(to);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        self.forget(to);
        self.forget(from);
        self.inner.rename_opts(from, to, options).await
    }
}

/// Builds the stores of remote lakes: the given delta-rs factory's store, made once per account,
/// container and options (every table there shares its HTTP connections), inside a [`KeepingStore`].
pub struct KeepingFactory<F> {
    inner: F,
    built: Mutex<HashMap<u64, ObjectStoreRef>>,
}

impl<F> KeepingFactory<F> {
    pub fn new(inner: F) -> Self {
        KeepingFactory { inner, built: Default::default() }
    }
}

impl<F: ObjectStoreFactory> ObjectStoreFactory for KeepingFactory<F> {
    fn parse_url_opts(&self, url: &Url, config: &StorageConfig) -> deltalake::DeltaResult<(ObjectStoreRef, Path)> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (url.scheme(), url.host_str(), url.port(), url.username()).hash(&mut h);
        let mut options: Vec<_> = config.raw.iter().collect();
        options.sort();
        options.hash(&mut h);
        let id = h.finish();
        let mut built = self.built.lock().expect("stores");
        if let Some(shared) = built.get(&id) {
            let (_, path) = object_store::ObjectStoreScheme::parse(url)
                .map_err(|e| object_store::Error::Generic { store: "KeepingStore", source: Box::new(e) })?;
            return Ok((shared.clone(), path));
        }
        let (store, path) = self.inner.parse_url_opts(url, config)?;
        let shared: ObjectStoreRef = Arc::new(KeepingStore::new(store, id));
        built.insert(id, shared.clone());
        Ok((shared, path))
    }
}

/// The URL schemes delta-rs' Azure support registers.
pub const AZURE_SCHEMES: [&str; 5] = ["az", "adl", "azure", "abfs", "abfss"];

/// Puts a [`KeepingFactory`] in front of delta-rs' Azure stores (after `register_handlers`).
pub fn register_azure() {
    let factory = Arc::new(KeepingFactory::new(deltalake::azure::AzureFactory::default()));
    for scheme in AZURE_SCHEMES {
        if let Ok(url) = Url::parse(&format!("{scheme}://")) {
            deltalake::logstore::object_store_factories().insert(url, factory.clone());
        }
    }
}

pub mod local;
mod log_index;
#[cfg(test)]
pub(crate) mod tests;
