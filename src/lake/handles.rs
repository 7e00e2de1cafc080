//! The table handles this process keeps between batches, and their re-reading from a checkpoint.
//!
//! A handle brought forward after a commit keeps its file list as delta-rs builds it: the list it
//! had, plus one Arrow batch per commit replayed since, less the files removed. The list is never
//! packed again, so after a few hundred commits a table's ~80 live files sat in ~80 batches of a
//! row or two, and every refresh and every scan of the table ran the kernel's log replay over each
//! of them, at a fixed cost per batch (schema projection, expression evaluation): kernel replay
//! took 1.8 times the CPU after 11 minutes of a run that it took after 2, most of the growth of
//! the CPU per batch. A handle read back from a checkpoint holds its files in a few batches again,
//! so [`super::checkpoints`] re-reads the handle of each table it writes a checkpoint for.

use std::collections::HashMap;
use std::sync::Mutex;

use deltalake::DeltaTable;

use crate::error::Result;

/// The handles, by the table's path relative to the lake root.
#[derive(Debug, Default)]
pub struct Handles {
    tables: Mutex<HashMap<String, DeltaTable>>,
}

impl Handles {
    pub fn get(&self, rel: &str) -> Option<DeltaTable> {
        self.tables.lock().expect("table handles").get(rel).cloned()
    }

    pub fn insert(&self, rel: &str, table: &DeltaTable) {
        self.tables.lock().expect("table handles").insert(rel.to_string(), table.clone());
    }

    /// Keeps `table` unless a newer state of it is kept already.
    pub fn keep(&self, rel: &str, table: &DeltaTable) {
        let mut tables = self.tables.lock().expect("table handles");
        if tables.get(rel).is_none_or(|t| t.version() < table.version()) {
            tables.insert(rel.to_string(), table.clone());
        }
    }

    pub fn forget(&self, rel: &str) {
        self.tables.lock().expect("table handles").remove(rel);
    }

    /// Replaces the kept handle of `rel` by the same table state read from storage, starting from
    /// the checkpoint `checkpointed` (a handle at the checkpoint's version) was just written at.
    /// Commits made since are replayed onto it; if the kept handle moves on meanwhile, it stays
    /// (the next checkpoint tries again). True if replaced.
    pub async fn reread(&self, rel: &str, checkpointed: &DeltaTable) -> Result<bool> {
        let Some(at) = checkpointed.version() else { return Ok(false) };
        let mut fresh = checkpointed.clone();
        fresh.state = None;
        fresh.load_version(at).await?;
        for _ in 0..3 {
            let Some(kept) = self.get(rel).and_then(|t| t.version()) else { return Ok(false) };
            if kept < at {
                return Ok(false);
            }
            if fresh.version().is_some_and(|v| kept > v) {
                fresh.update_incremental(Some(kept)).await?;
            }
            let mut tables = self.tables.lock().expect("table handles");
            if tables.get(rel).and_then(DeltaTable::version) == fresh.version() {
                tables.insert(rel.to_string(), fresh);
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// How many Arrow batches a handle's file list is held in. delta-rs does not expose them; its
/// snapshot's `Debug` prints each (test-only introspection).
#[cfg(test)]
pub(crate) fn file_batches(table: &DeltaTable) -> usize {
    format!("{:?}", table.snapshot().expect("a loaded table").snapshot()).matches("row_count:").count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::{Lake, mark, schema, version_of};
    use deltalake::kernel::Transaction;

    /// Forty commits leave the kept handle's files in forty-odd batches; re-read from the
    /// checkpoint at the fortieth, it holds the same files in one, and commits made after the
    /// checkpoint are replayed onto it.
    #[tokio::test]
    async fn a_handle_reread_from_its_checkpoint_holds_its_files_in_few_batches() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::local(dir.path());
        let spec = &schema::BATCH_LOG;
        let mut t = lake.open_or_create("t", spec).await.unwrap();
        let rows = |v: i64| {
            use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
            use arrow::datatypes::DataType;
            let s = spec.arrow_schema();
            let cols = s.fields().iter().map(|f| match f.data_type() {
                DataType::Utf8 => std::sync::Arc::new(StringArray::from(vec!["topic"])) as ArrayRef,
                other => arrow::compute::cast(&Int64Array::from(vec![v]), other).unwrap(),
            });
            RecordBatch::try_new(s.clone(), cols.collect()).unwrap()
        };
        for v in 1..=40 {
            t = t
                .write(vec![rows(v)])
                .with_commit_properties(crate::lake::commit_with(vec![Transaction::new("test", v)]))
                .await
                .unwrap();
            lake.handles.keep("t", &t);
        }
        let files = |t: &DeltaTable| t.snapshot().unwrap().log_data().num_files();
        assert_eq!(files(&t), 40);
        assert!(file_batches(&t) >= 40, "one batch per commit replayed");

        deltalake::checkpoints::create_checkpoint(&t, None).await.unwrap();
        let checkpointed = t.clone();
        t = mark(t, spec, vec![Transaction::new("test", 41)]).await.unwrap();
        lake.handles.keep("t", &t);
        assert!(lake.handles.reread("t", &checkpointed).await.unwrap());
        let kept = lake.handles.get("t").unwrap();
        assert_eq!(version_of(&kept), version_of(&t), "the commit after the checkpoint is replayed");
        assert_eq!(files(&kept), files(&t));
        assert!(file_batches(&kept) <= 2, "{} batches", file_batches(&kept));
        assert_eq!(lake.txn_version(&kept, "test").await.unwrap(), Some(41));

        // A table forgotten meanwhile (an open that failed) is not brought back by the re-read.
        lake.handles.forget("t");
        assert!(!lake.handles.reread("t", &checkpointed).await.unwrap());
        assert!(lake.handles.get("t").is_none());
    }
}
