//! Column specifications of every table orderlake writes, declared once and turned into both the
//! Arrow schema (for writing batches) and the Delta schema (for creating the table), so the two
//! can never drift apart.

use std::sync::Arc;

use arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::{DataType, StructField};

/// Delta `decimal(18,2)`: exact money.
pub const MONEY_PRECISION: u8 = 18;
pub const MONEY_SCALE: i8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Str,
    Int,
    Long,
    Bool,
    Date,
    /// UTC, microseconds.
    Ts,
    /// decimal(18,2)
    Money,
}

#[derive(Debug, Clone, Copy)]
pub struct ColumnSpec {
    pub name: &'static str,
    pub kind: Col,
    pub nullable: bool,
}

pub const fn col(name: &'static str, kind: Col, nullable: bool) -> ColumnSpec {
    ColumnSpec { name, kind, nullable }
}

/// A table's shape: columns, partition columns and the key MERGE matches on.
#[derive(Debug, Clone, Copy)]
pub struct TableSpec {
    pub columns: &'static [ColumnSpec],
    pub partition_by: &'static [&'static str],
    pub key: &'static [&'static str],
    /// The columns whose min/max/null counts each file's `add` carries
    /// (`delta.dataSkippingStatsColumns`): those reads look rows up by (keys, the cluster
    /// column, the other columns orderlake reads by), the order dates and bronze's Kafka time.
    /// delta-rs parses every live file's statistics again at each commit and filtered scan, so
    /// statistics of columns no read can skip on (names, amounts, processing times: a file
    /// spans all of them) cost every batch and skip nothing; see [`super::stats`].
    pub stats: &'static [&'static str],
}

impl Col {
    pub fn arrow(self) -> ArrowType {
        match self {
            Col::Str => ArrowType::Utf8,
            Col::Int => ArrowType::Int32,
            Col::Long => ArrowType::Int64,
            Col::Bool => ArrowType::Boolean,
            Col::Date => ArrowType::Date32,
            Col::Ts => ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Col::Money => ArrowType::Decimal128(MONEY_PRECISION, MONEY_SCALE),
        }
    }

    fn delta(self) -> DataType {
        match self {
            Col::Str => DataType::STRING,
            Col::Int => DataType::INTEGER,
            Col::Long => DataType::LONG,
            Col::Bool => DataType::BOOLEAN,
            Col::Date => DataType::DATE,
            Col::Ts => DataType::TIMESTAMP,
            Col::Money => DataType::decimal(MONEY_PRECISION, MONEY_SCALE as u8).expect("18,2 is a valid decimal"),
        }
    }
}

impl TableSpec {
    pub fn arrow_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns.iter().map(|c| Field::new(c.name, c.kind.arrow(), c.nullable)).collect::<Vec<_>>(),
        ))
    }

    pub fn delta_fields(&self) -> Vec<StructField> {
        self.columns.iter().map(|c| StructField::new(c.name, c.kind.delta(), c.nullable)).collect()
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.columns.iter().map(|c| c.name)
    }

    /// The column a keyed write sorts and splits its files by, so that the reads a batch makes
    /// by it skip files on their statistics: `order_id` where a table has it (gold and the item
    /// tables are read per order), else the key.
    pub fn cluster_column(&self) -> &'static str {
        self.names().find(|&n| n == "order_id").unwrap_or(self.key[0])
    }
}

use Col::*;

pub const BRONZE: TableSpec = TableSpec {
    columns: &[
        col("topic", Str, false),
        col("partition", Int, false),
        col("offset", Long, false),
        col("key", Str, true),
        col("value", Str, true),
        col("kafka_timestamp", Ts, true),
        col("ingested_at", Ts, false),
        col("ingest_date", Date, false),
    ],
    partition_by: &["ingest_date"],
    key: &["topic", "partition", "offset"],
    stats: &["topic", "partition", "offset", "kafka_timestamp"],
};

pub const DEAD_LETTERS: TableSpec = TableSpec {
    columns: &[
        col("topic", Str, false),
        col("partition", Int, false),
        col("offset", Long, false),
        col("key", Str, true),
        col("value", Str, true),
        col("error", Str, false),
        col("failed_at", Ts, false),
    ],
    partition_by: &[],
    key: &["topic", "partition", "offset"],
    stats: &["topic", "partition", "offset", "failed_at"],
};

pub const SILVER_ORDERS: TableSpec = TableSpec {
    columns: &[
        col("order_id", Str, false),
        col("customer_id", Str, true),
        col("country", Str, true),
        col("order_date", Date, true),
        col("status", Str, true),
        col("updated_at", Ts, false),
        col("source_pos", Str, false),
    ],
    partition_by: &[],
    key: &["order_id"],
    stats: &["order_id", "order_date"],
};

pub const SILVER_ORDER_ITEMS: TableSpec = TableSpec {
    columns: &[
        col("item_id", Str, false),
        col("order_id", Str, false),
        col("product_id", Str, false),
        col("quantity", Long, false),
        col("unit_price", Money, true),
        col("updated_at", Ts, false),
        col("source_pos", Str, false),
    ],
    partition_by: &[],
    key: &["item_id"],
    stats: &["item_id", "order_id", "product_id"],
};

pub const SILVER_PRODUCTS: TableSpec = TableSpec {
    columns: &[
        col("product_id", Str, false),
        col("name", Str, true),
        col("category", Str, true),
        col("price", Money, true),
        col("updated_at", Ts, false),
        col("source_pos", Str, false),
    ],
    partition_by: &[],
    key: &["product_id"],
    stats: &["product_id"],
};

pub const SILVER_CUSTOMERS: TableSpec = TableSpec {
    columns: &[
        col("customer_id", Str, false),
        col("name", Str, true),
        col("email", Str, true),
        col("country", Str, true),
        col("updated_at", Ts, false),
        col("source_pos", Str, false),
    ],
    partition_by: &[],
    key: &["customer_id"],
    stats: &["customer_id"],
};

pub const GOLD_ORDER_TOTALS: TableSpec = TableSpec {
    columns: &[
        col("order_id", Str, false),
        col("customer_id", Str, true),
        col("country", Str, true),
        col("order_date", Date, true),
        col("status", Str, true),
        col("cancelled", Bool, false),
        col("lines", Long, false),
        col("units", Long, false),
        col("total_amount", Money, false),
        col("updated_at", Ts, false),
    ],
    partition_by: &[],
    key: &["order_id"],
    stats: &["order_id", "order_date"],
};

pub const GOLD_ORDER_LINES: TableSpec = TableSpec {
    columns: &[
        col("item_id", Str, false),
        col("order_id", Str, false),
        col("order_date", Date, true),
        col("customer_id", Str, true),
        col("country", Str, true),
        col("product_id", Str, false),
        col("product_name", Str, true),
        col("quantity", Long, false),
        col("unit_price", Money, true),
        col("line_amount", Money, true),
    ],
    partition_by: &[],
    key: &["item_id"],
    stats: &["item_id", "order_id", "order_date", "product_id"],
};

pub const GOLD_CUSTOMER_TOTALS: TableSpec = TableSpec {
    columns: &[
        col("customer_id", Str, false),
        col("country", Str, true),
        col("orders", Long, false),
        col("units", Long, false),
        col("revenue", Money, false),
        col("first_order_date", Date, true),
        col("last_order_date", Date, true),
        col("updated_at", Ts, false),
    ],
    partition_by: &[],
    key: &["customer_id"],
    stats: &["customer_id"],
};

pub const GOLD_DAILY_SALES: TableSpec = TableSpec {
    columns: &[
        col("order_date", Date, false),
        col("country", Str, false),
        col("orders", Long, false),
        col("units", Long, false),
        col("revenue", Money, false),
        col("cancelled_orders", Long, false),
        col("cancelled_amount", Money, false),
    ],
    partition_by: &[],
    key: &["order_date", "country"],
    stats: &["order_date", "country"],
};

pub const GOLD_PRODUCT_SALES: TableSpec = TableSpec {
    columns: &[
        col("product_id", Str, false),
        col("product_name", Str, true),
        col("orders", Long, false),
        col("units", Long, false),
        col("revenue", Money, false),
    ],
    partition_by: &[],
    key: &["product_id"],
    stats: &["product_id"],
};

/// `_orderlake/batches`: one row per batch fully applied to every lake layer. Its `txn` marks
/// the bronze version up to which all layers are complete, which bounds catch-up work on start.
pub const BATCH_LOG: TableSpec = TableSpec {
    columns: &[
        col("topic", Str, false),
        col("bronze_version", Long, false),
        col("events", Long, false),
        col("dead_letters", Long, false),
        col("committed_at", Ts, false),
    ],
    partition_by: &[],
    key: &["topic", "bronze_version"],
    stats: &["topic", "bronze_version"],
};

/// `silver/_deletes`: the newest delete per key, so a replayed or late older change cannot
/// resurrect a deleted row.
pub const SILVER_TOMBSTONES: TableSpec = TableSpec {
    columns: &[
        col("entity", Str, false),
        col("key", Str, false),
        col("source_pos", Str, false),
        col("deleted_at", Ts, false),
    ],
    partition_by: &[],
    key: &["entity", "key"],
    stats: &["entity", "key"],
};
