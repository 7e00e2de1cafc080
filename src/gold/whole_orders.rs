//! Every order of `gold/order_totals`, with its lines, as slices of order frames for MongoDB.
//!
//! When the Delta log no longer shows which orders changed since MongoDB's position (its commits
//! expired while MongoDB was away, see `republish`), the documents of orders that lost an item or
//! went meanwhile can only be corrected by sending every order again and sweeping the documents
//! the sending did not touch. All of a shop's lines at once would be hundreds of MiB; a slice of
//! [`SLICE`] orders, read by key range from the files the order tables cluster by order id, is a
//! few MiB. Both tables are read as one snapshot, the one the batch committed, so a slice's totals
//! and lines agree with each other and with the version the documents carry.

use std::collections::BTreeSet;

use deltalake::DeltaTable;

use super::republish::WholeAt;
use super::{OrderFrames, bridge, strings};
use crate::error::Result;
use crate::lake::keys::by_family;
use crate::lake::read::{scan_columns, scan_keys};
use crate::lake::schema;
use crate::lake::{Lake, version_of};

/// Orders per slice: their documents are built, sent and dropped before the next slice is read.
pub const SLICE: usize = 10_000;

/// The order tables as one batch left them, to publish whole.
pub struct WholeOrders {
    totals: DeltaTable,
    lines: Option<DeltaTable>,
    /// What to tell the walks once MongoDB holds every order at [`WholeOrders::version`].
    pub at: WholeAt,
}

impl WholeOrders {
    /// The order tables under `gold_prefix` as they are now (`None` before the first order).
    pub(crate) async fn open(lake: &Lake, gold_prefix: &str, at: WholeAt) -> Result<Option<WholeOrders>> {
        let (totals_rel, lines_rel) = (format!("{gold_prefix}/order_totals"), format!("{gold_prefix}/order_lines"));
        let (totals, lines) = tokio::try_join!(lake.open(&totals_rel), lake.open(&lines_rel))?;
        Ok(totals.map(|totals| WholeOrders { totals, lines, at }))
    }

    /// The `order_totals` version every document is published at (the MongoDB staleness guard).
    pub fn version(&self) -> i64 {
        version_of(&self.totals) as i64
    }

    /// Every order id, in the order the files cluster them, cut into slices of `per` (the
    /// pipeline's is [`SLICE`]): each slice then reads a narrow key range rather than every file.
    pub async fn slices(&self, per: usize) -> Result<Vec<Vec<String>>> {
        let ids = bridge::to_frame(
            &scan_columns(&self.totals, &["order_id"]).await?,
            &schema::GOLD_ORDER_TOTALS.arrow_schema(),
        )?;
        let mut ids: Vec<String> = strings(&ids, "order_id")?.into_iter().collect();
        ids.sort_by(|a, b| by_family(a, b));
        Ok(ids.chunks(per.max(1)).map(<[String]>::to_vec).collect())
    }

    /// The totals and lines of the orders `ids`, as frames to publish at [`WholeOrders::version`].
    pub async fn frames(&self, ids: &[String]) -> Result<OrderFrames> {
        let keys: BTreeSet<String> = ids.iter().cloned().collect();
        let lines = async {
            match &self.lines {
                Some(l) => scan_keys(l, "order_id", &keys, None).await,
                None => Ok(Vec::new()),
            }
        };
        let (totals, lines) = tokio::try_join!(scan_keys(&self.totals, "order_id", &keys, None), lines)?;
        Ok(OrderFrames {
            order_totals: bridge::to_frame(&totals, &schema::GOLD_ORDER_TOTALS.arrow_schema())?,
            order_lines: bridge::to_frame(&lines, &schema::GOLD_ORDER_LINES.arrow_schema())?,
            deleted_orders: Vec::new(),
            version: self.version(),
        })
    }
}

#[cfg(test)]
mod tests {
    use polars::prelude::*;

    use super::*;
    use crate::lake::schema::{GOLD_ORDER_LINES, GOLD_ORDER_TOTALS, TableSpec};

    fn totals(ids: &[String]) -> DataFrame {
        let n = ids.len();
        df! {
            "order_id" => ids, "customer_id" => vec!["c1"; n], "country" => vec!["France"; n],
            "order_date" => vec![20058i32; n], "status" => vec!["done"; n], "cancelled" => vec![false; n],
            "lines" => vec![2i64; n], "units" => vec![3i64; n], "total_amount" => vec![150i64; n],
            "updated_at" => vec![0i64; n],
        }
        .unwrap()
    }

    /// Two lines per order, `<order>-a` and `<order>-b`.
    fn lines(ids: &[String]) -> DataFrame {
        let orders: Vec<&String> = ids.iter().flat_map(|i| [i, i]).collect();
        let items: Vec<String> = ids.iter().flat_map(|i| [format!("{i}-a"), format!("{i}-b")]).collect();
        let n = items.len();
        df! {
            "item_id" => items, "order_id" => orders.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "order_date" => vec![20058i32; n], "customer_id" => vec!["c1"; n], "country" => vec!["France"; n],
            "product_id" => vec!["p1"; n], "product_name" => vec!["mug"; n], "quantity" => vec![1i64; n],
            "unit_price" => vec![50i64; n], "line_amount" => vec![50i64; n],
        }
        .unwrap()
    }

    async fn append(lake: &Lake, rel: &str, spec: &TableSpec, df: DataFrame) {
        let df = df.lazy().with_column(col("order_date").cast(DataType::Date)).collect().unwrap();
        let t = lake.open_or_create(rel, spec).await.unwrap();
        let t = t.write(vec![bridge::to_batch(&df, spec).unwrap()]).await.unwrap();
        lake.keep(rel, &t);
    }

    fn column(df: &DataFrame, c: &str) -> Vec<String> {
        let mut v: Vec<String> = df.column(c).unwrap().str().unwrap().iter().flatten().map(String::from).collect();
        v.sort();
        v
    }

    /// Every order once, in slices of at most `per` that follow the files' clustering (a family
    /// of ids at a time, "999" before "1000"), each slice with exactly its orders' totals and lines.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_order_comes_once_in_slices_with_its_own_lines() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::local(dir.path());
        let batches: [Vec<String>; 3] = [
            (990..1010).map(|i| i.to_string()).collect(),
            (1..=6).map(|i| format!("C{i}")).collect(),
            (1010..1013).map(|i| i.to_string()).collect(),
        ];
        for ids in &batches {
            append(&lake, "gold/order_totals", &GOLD_ORDER_TOTALS, totals(ids)).await;
            append(&lake, "gold/order_lines", &GOLD_ORDER_LINES, lines(ids)).await;
        }
        let at = WholeAt::new("gold/order_totals", "g/gold/t", 0);
        let whole = WholeOrders::open(&lake, "gold", at).await.unwrap().expect("the tables exist");
        assert_eq!(whole.version(), 3, "created, then three appends");

        let slices = whole.slices(7).await.unwrap();
        let flat: Vec<String> = slices.concat();
        let mut want: Vec<String> = batches.concat();
        want.sort_by(|a, b| by_family(a, b));
        assert_eq!(flat, want, "every order once, by family");
        assert_eq!(flat[..2], ["990".to_string(), "991".to_string()]);
        assert_eq!(slices.iter().map(Vec::len).collect::<Vec<_>>(), [7, 7, 7, 7, 1]);
        for ids in &slices {
            let f = whole.frames(ids).await.unwrap();
            let mut ids = ids.clone();
            ids.sort();
            assert_eq!(column(&f.order_totals, "order_id"), ids);
            let mut items: Vec<String> = ids.iter().flat_map(|i| [format!("{i}-a"), format!("{i}-b")]).collect();
            items.sort();
            assert_eq!(column(&f.order_lines, "item_id"), items);
            assert_eq!((f.version, f.deleted_orders.len()), (3, 0));
        }
    }
}
