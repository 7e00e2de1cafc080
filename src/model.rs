//! The canonical row model every decoder produces and every later layer consumes, so silver, gold
//! and the sinks never care whether a row came from a flat sales event or a CDC change.

use chrono::NaiveDate;

/// One Kafka message as received (and as bronze keeps it): the input of every decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    pub timestamp_ms: Option<i64>,
}

impl RawEvent {
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, String::len) + self.value.as_ref().map_or(0, String::len) + 32
    }
}

/// Money as integer hundredths (exact; becomes `decimal(18,2)` in Delta and `Decimal128` in MongoDB).
pub type Cents = i64;

/// Where a change came from, comparable across messages: a newer change has a greater position.
/// Rendered as a fixed-width string (`source_pos` column) so the Delta MERGE guard is a plain `>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourcePos {
    /// Primary ordering: the Kafka timestamp (ms) for flat events, the log position for CDC.
    pub primary: i64,
    pub partition: i32,
    pub offset: i64,
}

impl SourcePos {
    pub fn render(&self) -> String {
        format!("{:020}-{:06}-{:020}", self.primary.max(0), self.partition.max(0), self.offset.max(0))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderRow {
    pub order_id: String,
    pub customer_id: Option<String>,
    pub country: Option<String>,
    pub order_date: Option<NaiveDate>,
    pub status: String,
    pub updated_at_us: i64,
    pub pos: SourcePos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ItemRow {
    pub item_id: String,
    pub order_id: String,
    pub product_id: String,
    pub quantity: i64,
    pub unit_price: Option<Cents>,
    pub updated_at_us: i64,
    pub pos: SourcePos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProductRow {
    pub product_id: String,
    pub name: Option<String>,
    pub category: Option<String>,
    pub price: Option<Cents>,
    pub updated_at_us: i64,
    pub pos: SourcePos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CustomerRow {
    pub customer_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub country: Option<String>,
    pub updated_at_us: i64,
    pub pos: SourcePos,
}

/// Everything one batch changes in silver. Upserts only for now; deletes join with CDC.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    pub orders: Vec<OrderRow>,
    pub items: Vec<ItemRow>,
    pub products: Vec<ProductRow>,
    pub customers: Vec<CustomerRow>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty() && self.items.is_empty() && self.products.is_empty() && self.customers.is_empty()
    }
}

/// A message that could not be decoded; lands in `bronze/_dead_letters`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    pub error: String,
}
