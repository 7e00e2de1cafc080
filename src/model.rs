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

/// Prefix of a bronze `value` that holds bytes which were not UTF-8, base64-encoded, so bronze keeps
/// them exactly (a NUL cannot start a JSON text, so no real value looks like this).
pub const NOT_UTF8_PREFIX: &str = "\u{0}orderlake:not-utf8:base64:";

/// A message value as bronze stores it: the text, or the marked base64 of bytes that are not UTF-8.
pub fn value_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => {
            use base64::Engine;
            format!("{NOT_UTF8_PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}

/// The reason a stored value cannot be decoded before even looking at it, if any.
pub fn undecodable(value: Option<&str>) -> Option<String> {
    let v = value?;
    v.strip_prefix(NOT_UTF8_PREFIX).map(|b64| {
        let n = b64.len() / 4 * 3;
        format!("value is not valid UTF-8 (about {n} bytes; bronze keeps them base64-encoded)")
    })
}

impl RawEvent {
    /// The memory the event holds: the struct and its strings' heap blocks, each with glibc's
    /// per-block overhead (8 bytes, 16-byte granularity, 32 bytes at least). Counting the payload
    /// alone undercounted small events about twofold, so a byte budget let twice its size in.
    pub fn size(&self) -> usize {
        fn block(capacity: usize) -> usize {
            if capacity == 0 { 0 } else { ((capacity + 8 + 15) & !15).max(32) }
        }
        let text = |s: &Option<String>| s.as_ref().map_or(0, |s| block(s.capacity()));
        std::mem::size_of::<Self>() + block(self.topic.capacity()) + text(&self.key) + text(&self.value)
    }
}

/// Money as integer hundredths (exact; becomes `decimal(18,2)` in Delta and `Decimal128` in MongoDB).
pub type Cents = i64;

/// Where a change came from, comparable across messages: a newer change has a greater position.
/// Rendered as a fixed-width string (`source_pos` column) so the Delta MERGE guard is a plain `>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourcePos {
    /// Primary ordering: the Kafka timestamp (ms) for flat events; the Postgres LSN, the MySQL
    /// binlog (file, pos), or the source timestamp for CDC.
    pub primary: i64,
    /// Tie-break within the primary position (the MySQL row within a binlog event).
    pub secondary: i64,
    pub partition: i32,
    pub offset: i64,
}

impl SourcePos {
    /// The length of [`SourcePos::render`]'s text while every part fits its width.
    pub const WIDTH: usize = 20 + 1 + 10 + 1 + 6 + 1 + 20;

    pub fn render(&self) -> String {
        let mut buf = [0u8; Self::WIDTH];
        match self.render_into(&mut buf) {
            Some(text) => text.to_string(),
            None => self.render_wide(),
        }
    }

    /// Appends the rendered position to a string column: every silver row carries one, so this
    /// avoids a `String` and the formatting machinery per row (≈ 3 % of a full run's CPU).
    pub fn append_to(&self, col: &mut arrow::array::StringBuilder) {
        let mut buf = [0u8; Self::WIDTH];
        match self.render_into(&mut buf) {
            Some(text) => col.append_value(text),
            None => col.append_value(self.render_wide()),
        }
    }

    /// The zero-padded digits of each part, or `None` if a part is wider than its field (a
    /// partition past 999,999, say), which [`SourcePos::render_wide`] then handles as `format!` does.
    fn render_into<'b>(&self, buf: &'b mut [u8; Self::WIDTH]) -> Option<&'b str> {
        fn digits(out: &mut [u8], mut v: u64) -> Option<()> {
            for d in out.iter_mut().rev() {
                *d = b'0' + (v % 10) as u8;
                v /= 10;
            }
            (v == 0).then_some(())
        }
        let parts = [
            (0, 20, self.primary.max(0) as u64),
            (21, 31, self.secondary.max(0) as u64),
            (32, 38, self.partition.max(0) as u64),
            (39, 59, self.offset.max(0) as u64),
        ];
        for (start, end, v) in parts {
            digits(&mut buf[start..end], v)?;
            if end < Self::WIDTH {
                buf[end] = b'-';
            }
        }
        std::str::from_utf8(buf).ok()
    }

    fn render_wide(&self) -> String {
        format!(
            "{:020}-{:010}-{:06}-{:020}",
            self.primary.max(0),
            self.secondary.max(0),
            self.partition.max(0),
            self.offset.max(0)
        )
    }
}

/// The canonical tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entity {
    Orders,
    OrderItems,
    Products,
    Customers,
}

impl Entity {
    pub const ALL: [Entity; 4] = [Entity::Orders, Entity::OrderItems, Entity::Products, Entity::Customers];

    /// The silver table name (also the name used in config).
    pub fn table(self) -> &'static str {
        match self {
            Entity::Orders => "orders",
            Entity::OrderItems => "order_items",
            Entity::Products => "products",
            Entity::Customers => "customers",
        }
    }

    pub fn key_column(self) -> &'static str {
        match self {
            Entity::Orders => "order_id",
            Entity::OrderItems => "item_id",
            Entity::Products => "product_id",
            Entity::Customers => "customer_id",
        }
    }

    pub fn from_table(name: &str) -> Option<Entity> {
        Entity::ALL.into_iter().find(|e| e.table() == name)
    }
}

/// Source columns orderlake does not map, kept in silver as text columns.
pub type Extra = Vec<(String, Option<String>)>;

/// A deleted key (CDC `d`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteRow {
    pub entity: Entity,
    pub key: String,
    pub pos: SourcePos,
}

/// A truncated table (CDC `t`, when configured to delete): rows older than `pos` go.
#[derive(Debug, Clone, PartialEq)]
pub struct Truncate {
    pub entity: Entity,
    pub pos: SourcePos,
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
    pub extra: Extra,
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
    pub extra: Extra,
    /// Keyed by its own Kafka position (a flat sales line): written once and never changed, so
    /// silver adds it without looking for an existing row.
    pub once: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProductRow {
    pub product_id: String,
    pub name: Option<String>,
    pub category: Option<String>,
    pub price: Option<Cents>,
    pub updated_at_us: i64,
    pub pos: SourcePos,
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CustomerRow {
    pub customer_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub country: Option<String>,
    pub updated_at_us: i64,
    pub pos: SourcePos,
    pub extra: Extra,
}

/// Everything one batch changes in silver.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    pub orders: Vec<OrderRow>,
    pub items: Vec<ItemRow>,
    pub products: Vec<ProductRow>,
    pub customers: Vec<CustomerRow>,
    pub deletes: Vec<DeleteRow>,
    pub truncates: Vec<Truncate>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
            && self.items.is_empty()
            && self.products.is_empty()
            && self.customers.is_empty()
            && self.deletes.is_empty()
            && self.truncates.is_empty()
    }

    pub fn extend(&mut self, o: &Changes) {
        self.orders.extend(o.orders.iter().cloned());
        self.items.extend(o.items.iter().cloned());
        self.products.extend(o.products.iter().cloned());
        self.customers.extend(o.customers.iter().cloned());
        self.deletes.extend(o.deletes.iter().cloned());
        self.truncates.extend(o.truncates.iter().cloned());
    }

    pub fn deletes_of(&self, e: Entity) -> impl Iterator<Item = &DeleteRow> {
        self.deletes.iter().filter(move |d| d.entity == e)
    }

    /// How many rows each kind holds now, to take back what a failed step added after it.
    pub fn mark(&self) -> [usize; 6] {
        [
            self.orders.len(),
            self.items.len(),
            self.products.len(),
            self.customers.len(),
            self.deletes.len(),
            self.truncates.len(),
        ]
    }

    /// Drops every row added since `mark`.
    pub fn truncate(&mut self, mark: [usize; 6]) {
        let [o, i, p, c, d, t] = mark;
        self.orders.truncate(o);
        self.items.truncate(i);
        self.products.truncate(p);
        self.customers.truncate(c);
        self.deletes.truncate(d);
        self.truncates.truncate(t);
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::SourcePos;

    fn pos(primary: i64, secondary: i64, partition: i32, offset: i64) -> SourcePos {
        SourcePos { primary, secondary, partition, offset }
    }

    #[test]
    fn positions_render_fixed_width_and_overflow_like_format() {
        assert_eq!(pos(17, 0, 2, 41).render(), "00000000000000000017-0000000000-000002-00000000000000000041");
        assert_eq!(pos(-5, -1, -3, -9).render(), "00000000000000000000-0000000000-000000-00000000000000000000");
        assert_eq!(
            pos(i64::MAX, 0, 0, i64::MAX).render(),
            "09223372036854775807-0000000000-000000-09223372036854775807"
        );
        // Wider than their fields: the text grows, as `format!` pads but never truncates.
        assert_eq!(
            pos(1, 12_345_678_901, 1_000_000, 1).render(),
            "00000000000000000001-12345678901-1000000-00000000000000000001"
        );
    }

    proptest! {
        #[test]
        fn the_fast_render_is_the_formatted_one(
            p in any::<i64>(),
            s in prop_oneof![-10i64..20_000_000_000, any::<i64>()],
            part in prop_oneof![-10i32..2_000_000, any::<i32>()],
            o in any::<i64>(),
        ) {
            let v = pos(p, s, part, o);
            prop_assert_eq!(v.render(), v.render_wide());
            let mut col = arrow::array::StringBuilder::new();
            v.append_to(&mut col);
            let rendered = col.finish();
            prop_assert_eq!(rendered.value(0), v.render_wide());
        }
    }
}
