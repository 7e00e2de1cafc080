//! The keeping store against an in-memory store that counts the requests reaching it.

use std::sync::atomic::AtomicUsize;

use deltalake::logstore::object_store::memory::InMemory;
use deltalake::logstore::object_store::{GetRange, ObjectStoreExt, PutMode};

use super::*;

/// Counts the reads (GET and HEAD) and listings that reach the store underneath.
#[derive(Debug, Default)]
pub(crate) struct Counting {
    pub inner: InMemory,
    pub reads: AtomicUsize,
    pub lists: AtomicUsize,
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting")
    }
}

#[async_trait::async_trait]
impl ObjectStore for Counting {
    async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> object_store::Result<PutResult> {
        self.inner.put_opts(l, p, o).await
    }
    async fn put_multipart_opts(
        &self,
        l: &Path,
        o: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(l, o).await
    }
    async fn get_opts(&self, l: &Path, o: GetOptions) -> object_store::Result<GetResult> {
        self.reads.fetch_add(1, Relaxed);
        self.inner.get_opts(l, o).await
    }
    async fn get_ranges(&self, l: &Path, r: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        self.reads.fetch_add(1, Relaxed);
        self.inner.get_ranges(l, r).await
    }
    fn delete_stream(
        &self,
        l: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(l)
    }
    fn list(&self, p: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.lists.fetch_add(1, Relaxed);
        self.inner.list(p)
    }
    async fn list_with_delimiter(&self, p: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(p).await
    }
    async fn copy_opts(&self, f: &Path, t: &Path, o: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(f, t, o).await
    }
}

/// A keeping store over a fresh counting store; each test its own id, so tests share no entries.
fn stores(id: u64) -> (Arc<Counting>, KeepingStore) {
    let counting = Arc::new(Counting::default());
    (counting.clone(), KeepingStore::new(counting, id))
}

fn reads(c: &Counting) -> usize {
    c.reads.load(Relaxed)
}

#[test]
fn only_files_that_never_change_are_kept() {
    for kept in [
        "t/_delta_log/00000000000000000007.json",
        "t/_delta_log/00000000000000000010.checkpoint.parquet",
        "t/_delta_log/00000000000000000010.checkpoint.0000000001.0000000002.parquet",
        "t/part-00000-3b9f8a90-c000.snappy.parquet",
        "t/day=2026-11-22/part-00001-aa.parquet",
    ] {
        assert!(immutable(&Path::from(kept)), "{kept}");
    }
    for not in [
        "t/_delta_log/_last_checkpoint",
        "t/_delta_log/7.json",
        "t/_delta_log/0000000000000000000a.json",
        "t/_delta_log/00000000000000000007.crc.tmp",
        "t/_delta_log/_commits/00000000000000000007.uuid.json",
        "t/notes.json",
    ] {
        assert!(!immutable(&Path::from(not)), "{not}");
    }
}

#[tokio::test]
async fn a_written_file_is_read_back_from_memory_whole_in_ranges_and_as_head() {
    let (c, s) = stores(1001);
    let data = Path::from("lake/gold/t/part-00000-x.parquet");
    let body: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    s.put(&data, body.clone().into()).await.unwrap();

    assert_eq!(s.get(&data).await.unwrap().bytes().await.unwrap(), body);
    assert_eq!(s.get_range(&data, 100..250).await.unwrap(), body[100..250]);
    let suffix = GetOptions { range: Some(GetRange::Suffix(8)), ..Default::default() };
    let got = s.get_opts(&data, suffix).await.unwrap();
    assert_eq!(got.range, 9_992..10_000);
    assert_eq!(got.bytes().await.unwrap(), body[9_992..]);
    let ranges = s.get_ranges(&data, &[0..4, 5_000..5_010, 9_999..10_000]).await.unwrap();
    assert_eq!(ranges, vec![body[0..4].to_vec(), body[5_000..5_010].to_vec(), body[9_999..].to_vec()]);
    assert_eq!(s.head(&data).await.unwrap().size, 10_000);
    assert_eq!(reads(&c), 0, "every read above was answered from memory");

    // A commit written with create-if-absent is kept as well; `_last_checkpoint` never is.
    let commit = Path::from("lake/gold/t/_delta_log/00000000000000000003.json");
    s.put_opts(&commit, Bytes::from_static(b"{\"txn\":{}}").into(), PutMode::Create.into()).await.unwrap();
    assert_eq!(s.get(&commit).await.unwrap().bytes().await.unwrap(), b"{\"txn\":{}}".as_slice());
    let last = Path::from("lake/gold/t/_delta_log/_last_checkpoint");
    s.put(&last, Bytes::from_static(b"{\"version\":0}").into()).await.unwrap();
    s.get(&last).await.unwrap();
    s.get(&last).await.unwrap();
    assert_eq!(reads(&c), 2, "_last_checkpoint changes: read from the store each time");

    // Out-of-range requests fail as the store's would, without a request.
    let beyond = GetOptions { range: Some(GetRange::Bounded(20_000..20_010)), ..Default::default() };
    assert!(s.get_opts(&data, beyond).await.is_err());
    // A conditional read always asks the store.
    let etag = GetOptions { if_none_match: Some("*".into()), ..Default::default() };
    let _ = s.get_opts(&data, etag).await;
    assert_eq!(reads(&c), 3);
}

#[tokio::test]
async fn a_file_written_elsewhere_is_kept_after_one_whole_read_and_a_failed_create_keeps_nothing() {
    let (c, s) = stores(1002);
    let commit = Path::from("t/_delta_log/00000000000000000001.json");
    // Another writer's commit: straight into the store underneath.
    c.put(&commit, Bytes::from_static(b"theirs").into()).await.unwrap();
    assert_eq!(s.get(&commit).await.unwrap().bytes().await.unwrap(), b"theirs".as_slice());
    assert_eq!(s.get(&commit).await.unwrap().bytes().await.unwrap(), b"theirs".as_slice());
    assert_eq!(reads(&c), 1);

    // Losing the race for a version keeps nothing of the loser's bytes.
    let next = Path::from("t/_delta_log/00000000000000000002.json");
    c.put(&next, Bytes::from_static(b"winner").into()).await.unwrap();
    let lost = s.put_opts(&next, Bytes::from_static(b"loser").into(), PutMode::Create.into()).await;
    assert!(lost.is_err());
    assert_eq!(s.get(&next).await.unwrap().bytes().await.unwrap(), b"winner".as_slice());

    // Ranged reads of a file never read whole go to the store each time.
    let data = Path::from("t/part-1.parquet");
    c.put(&data, Bytes::from(vec![7u8; 100]).into()).await.unwrap();
    let before = reads(&c);
    s.get_range(&data, 0..10).await.unwrap();
    s.get_range(&data, 0..10).await.unwrap();
    assert_eq!(reads(&c), before + 2);
}

#[tokio::test]
async fn deleting_or_creating_a_table_again_forgets_what_was_kept() {
    let (c, s) = stores(1003);
    let v0 = Path::from("lake/t/_delta_log/00000000000000000000.json");
    let v1 = Path::from("lake/t/_delta_log/00000000000000000001.json");
    let other = Path::from("lake/u/_delta_log/00000000000000000001.json");
    for p in [&v0, &v1, &other] {
        s.put(p, Bytes::from_static(b"old").into()).await.unwrap();
    }
    // The table is deleted by someone else and made again here: version 0 written anew.
    c.delete(&v1).await.unwrap();
    s.put(&v0, Bytes::from_static(b"new").into()).await.unwrap();
    assert_eq!(s.get(&v0).await.unwrap().bytes().await.unwrap(), b"new".as_slice());
    assert!(s.get(&v1).await.is_err(), "version 1 of the old table must not be served");
    let before = reads(&c);
    assert_eq!(s.get(&other).await.unwrap().bytes().await.unwrap(), b"old".as_slice());
    assert_eq!(reads(&c), before, "another table's files stay kept");

    s.delete(&other).await.unwrap();
    assert!(s.get(&other).await.is_err(), "a file deleted here is not served from memory");
}

#[test]
fn the_memory_stays_within_its_bound_oldest_out_first() {
    let mut f = Files::default();
    let meta = |n: &str| ObjectMeta {
        location: Path::from(n),
        last_modified: chrono::Utc::now(),
        size: 0,
        e_tag: None,
        version: None,
    };
    let chunk = MAX_FILE_BYTES;
    let n = CACHE_BYTES / chunk + 3;
    for i in 0..n {
        let name = format!("f{i}.parquet");
        f.insert_within(
            (9, name.clone()),
            Kept { bytes: Bytes::from(vec![0u8; chunk]), meta: meta(&name) },
            CACHE_BYTES,
        );
    }
    assert!(f.held <= CACHE_BYTES);
    assert!(!f.by_key.contains_key(&(9, "f0.parquet".to_string())), "the oldest went first");
    assert!(f.by_key.contains_key(&(9, format!("f{}.parquet", n - 1))), "the newest stays");
    assert_eq!(f.held, f.by_key.values().map(|k| k.bytes.len()).sum::<usize>());
    f.insert_within(
        (9, "big.parquet".into()),
        Kept { bytes: Bytes::from(vec![0u8; chunk + 1]), meta: meta("big") },
        CACHE_BYTES,
    );
    assert!(!f.by_key.contains_key(&(9, "big.parquet".to_string())), "larger than a file may be: not kept");
    // A smaller setting (`lake.read_back_mib`) lets go of the oldest at the next insert; 0 keeps nothing.
    f.insert_within((9, "last.parquet".into()), Kept { bytes: Bytes::from(vec![0u8; 10]), meta: meta("last") }, chunk);
    assert!(f.held <= chunk && f.by_key.contains_key(&(9, "last.parquet".to_string())));
    let mut none = Files::default();
    none.insert_within((9, "x.parquet".into()), Kept { bytes: Bytes::from(vec![0u8; 10]), meta: meta("x") }, 0);
    assert!(none.by_key.is_empty() && none.held == 0);
}

#[tokio::test]
async fn data_files_of_write_only_tables_are_not_kept_but_their_commits_are() {
    write_only(&Url::parse("az://c/lake/bronze_wo/").unwrap());
    let (c, s) = stores(1004);
    let data = Path::from("lake/bronze_wo/shop.sales/ingest_date=2026-11-22/part-0.parquet");
    let commit = Path::from("lake/bronze_wo/shop.sales/_delta_log/00000000000000000004.json");
    let silver = Path::from("lake/silver/orders/part-0.parquet");
    for p in [&data, &commit, &silver] {
        s.put(p, Bytes::from_static(b"x").into()).await.unwrap();
    }
    s.get_range(&data, 0..1).await.unwrap();
    assert_eq!(reads(&c), 1, "bronze data is read from storage");
    s.get(&commit).await.unwrap();
    s.get_range(&silver, 0..1).await.unwrap();
    assert_eq!(reads(&c), 1, "bronze commits and other tables' files come from memory");
}
