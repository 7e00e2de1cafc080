//! A simulated shop database that emits what Debezium's Postgres connector would: snapshot `r`
//! events first, then creates, updates and deletes (each delete followed by a tombstone), with
//! increasing LSNs. It keeps the database's final state, so tests can compare the lake with the
//! source row for row. Used by `orderlake produce --cdc --synthetic N`.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::decode::decimal::format_cents;
use crate::model::Entity;

#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub country: String,
    pub credit_card: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub category: String,
    pub price: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub id: i64,
    pub customer_id: Option<i64>,
    pub country: String,
    pub order_date: NaiveDate,
    pub status: String,
    /// Appears mid-stream (schema evolution): `None` until the column exists.
    pub channel: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: i64,
    pub order_id: i64,
    pub product_id: String,
    pub quantity: i64,
    pub unit_price: Option<i64>,
}

/// The source database's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShopDb {
    pub customers: BTreeMap<i64, Customer>,
    pub products: BTreeMap<String, Product>,
    pub orders: BTreeMap<i64, Order>,
    pub items: BTreeMap<i64, Item>,
}

/// One Kafka record for a CDC topic (`value: None` is a tombstone).
#[derive(Debug, Clone, PartialEq)]
pub struct CdcRecord {
    pub entity: Entity,
    pub key: String,
    pub value: Option<String>,
}

pub struct CdcHistory {
    pub records: Vec<CdcRecord>,
    pub db: ShopDb,
}

const COUNTRIES: [&str; 5] = ["United Kingdom", "France", "Germany", "Spain", "Norway"];
const CATEGORIES: [&str; 4] = ["Kitchen", "Garden", "Decor", "Gifts"];

struct Emitter {
    lsn: i64,
    ts_ms: i64,
    tx: i64,
    envelope: bool,
    channel_exists: bool,
    out: Vec<CdcRecord>,
}

fn customer_json(c: &Customer) -> Value {
    json!({"customer_id": c.id, "name": c.name, "email": c.email, "country": c.country, "credit_card": c.credit_card})
}
fn product_json(p: &Product) -> Value {
    json!({"product_id": p.id, "name": p.name, "category": p.category, "price": format_cents(p.price)})
}
fn item_json(i: &Item) -> Value {
    json!({"item_id": i.id, "order_id": i.order_id, "product_id": i.product_id, "quantity": i.quantity,
           "unit_price": i.unit_price.map(format_cents)})
}

fn field(t: &str, name: &str) -> Value {
    json!({"type": t, "optional": true, "field": name})
}

impl Emitter {
    fn order_json(&self, o: &Order) -> Value {
        let days = crate::lake::rows::days_since_epoch(o.order_date);
        let mut v = json!({"order_id": o.id, "customer_id": o.customer_id, "country": o.country, "order_date": days, "status": o.status});
        if self.channel_exists {
            v["channel"] = json!(o.channel);
        }
        v
    }

    /// Connect schema of a row, as the JSON converter with schemas enabled sends it
    /// (decimals as `decimal.handling.mode=string`, dates as `io.debezium.time.Date`).
    fn row_schema(&self, e: Entity) -> Vec<Value> {
        let date = json!({"type": "int32", "optional": true, "name": "io.debezium.time.Date", "field": "order_date"});
        match e {
            Entity::Customers => ["customer_id", "name", "email", "country", "credit_card"]
                .iter()
                .map(|n| field(if *n == "customer_id" { "int64" } else { "string" }, n))
                .collect(),
            Entity::Products => {
                ["product_id", "name", "category", "price"].iter().map(|n| field("string", n)).collect()
            }
            Entity::Orders => {
                let mut f = vec![
                    field("int64", "order_id"),
                    field("int64", "customer_id"),
                    field("string", "country"),
                    date,
                    field("string", "status"),
                ];
                if self.channel_exists {
                    f.push(field("string", "channel"));
                }
                f
            }
            Entity::OrderItems => vec![
                field("int64", "item_id"),
                field("int64", "order_id"),
                field("string", "product_id"),
                field("int32", "quantity"),
                field("string", "unit_price"),
            ],
        }
    }

    fn emit(&mut self, e: Entity, key: Value, op: &str, before: Option<Value>, after: Option<Value>) {
        self.lsn += 1000 + (self.lsn % 7) * 8;
        self.ts_ms += 137;
        self.tx += 1;
        let source = json!({"version": "2.7.3.Final", "connector": "postgresql", "name": "shop", "ts_ms": self.ts_ms,
            "snapshot": if op == "r" { "true" } else { "false" }, "db": "shop", "schema": "public", "table": e.table(),
            "txId": self.tx, "lsn": self.lsn, "xmin": null});
        let payload = json!({"before": before, "after": after, "source": source, "op": op, "ts_ms": self.ts_ms + 5});
        let key_col = e.key_column();
        let (key, value) = if self.envelope {
            let row = json!({"type": "struct", "optional": true, "fields": self.row_schema(e)});
            let mut before_s = row.clone();
            before_s["field"] = json!("before");
            let mut after_s = row;
            after_s["field"] = json!("after");
            let schema = json!({"type": "struct", "name": format!("shop.public.{}.Envelope", e.table()), "optional": false,
                "fields": [before_s, after_s, {"type": "struct", "field": "source", "fields": [field("int64", "lsn")]},
                           {"type": "string", "optional": false, "field": "op"}, field("int64", "ts_ms")]});
            let kt = if e == Entity::Products { "string" } else { "int64" };
            (
                json!({"schema": {"type": "struct", "optional": false, "fields": [field(kt, key_col)]}, "payload": key}),
                json!({"schema": schema, "payload": payload}),
            )
        } else {
            (key, payload)
        };
        self.out.push(CdcRecord { entity: e, key: key.to_string(), value: Some(value.to_string()) });
        if op == "d" {
            self.out.push(CdcRecord { entity: e, key: self.out.last().expect("just pushed").key.clone(), value: None });
        }
    }
}

struct Ids {
    order: i64,
    item: i64,
}

fn new_order(db: &mut ShopDb, em: &mut Emitter, rng: &mut SmallRng, ids: &mut Ids, op: &str, date: NaiveDate) {
    ids.order += 1;
    let customer_id = if rng.gen_bool(0.9) { Some(rng.gen_range(1..=20)) } else { None };
    let country =
        customer_id.map_or_else(|| COUNTRIES[rng.gen_range(0..5)].to_string(), |c| db.customers[&c].country.clone());
    let o = Order {
        id: ids.order,
        customer_id,
        country,
        order_date: date,
        status: "placed".into(),
        channel: em.channel_exists.then(|| ["web", "store"][rng.gen_range(0..2)].to_string()),
    };
    let v = em.order_json(&o);
    em.emit(Entity::Orders, json!({"order_id": o.id}), op, None, Some(v));
    for _ in 0..rng.gen_range(1..=4) {
        ids.item += 1;
        let p = &db.products[&format!("P{:03}", rng.gen_range(1..=30))];
        let it = Item {
            id: ids.item,
            order_id: o.id,
            product_id: p.id.clone(),
            quantity: rng.gen_range(1..=6),
            unit_price: rng.gen_bool(0.85).then_some(p.price),
        };
        em.emit(Entity::OrderItems, json!({"item_id": it.id}), op, None, Some(item_json(&it)));
        db.items.insert(it.id, it);
    }
    db.orders.insert(o.id, o);
}

/// Generates a history of about `n` changes. `envelope` adds the Connect schema to keys and values.
pub fn synthetic(n: usize, seed: u64, envelope: bool) -> CdcHistory {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut db = ShopDb::default();
    let mut em = Emitter {
        lsn: 24_000_000,
        ts_ms: 1_733_011_200_000,
        tx: 700,
        envelope,
        channel_exists: false,
        out: Vec::new(),
    };
    let day0 = NaiveDate::from_ymd_opt(2024, 12, 1).expect("date");

    // Snapshot.
    for id in 1..=20 {
        let c = Customer {
            id,
            name: format!("Customer {id}"),
            email: format!("customer{id}@example.com"),
            country: COUNTRIES[id as usize % COUNTRIES.len()].to_string(),
            credit_card: format!("4{:015}", 100_000_000_000 + id * 7_919),
        };
        em.emit(Entity::Customers, json!({"customer_id": id}), "r", None, Some(customer_json(&c)));
        db.customers.insert(id, c);
    }
    for i in 1..=30 {
        let p = Product {
            id: format!("P{i:03}"),
            name: format!("Product {i}"),
            category: CATEGORIES[i % 4].to_string(),
            price: rng.gen_range(150..5000),
        };
        em.emit(Entity::Products, json!({"product_id": p.id}), "r", None, Some(product_json(&p)));
        db.products.insert(p.id.clone(), p);
    }
    let mut ids = Ids { order: 1000, item: 5000 };
    for _ in 0..10 {
        let day = rng.gen_range(0..3);
        new_order(&mut db, &mut em, &mut rng, &mut ids, "r", day0 + chrono::Duration::days(day));
    }

    // Changes. The live keys are kept sorted beside the maps (ids only grow, so a new one goes at
    // the end) rather than collected per change, which made a 200k history quadratic.
    let mut order_ids: Vec<i64> = db.orders.keys().copied().collect();
    let mut item_ids: Vec<i64> = db.items.keys().copied().collect();
    let start = em.out.len();
    while em.out.len() - start < n {
        let day = ((em.out.len() - start) * 7 / n.max(1)) as i64;
        if !em.channel_exists && em.out.len() - start >= n / 2 {
            em.channel_exists = true; // ALTER TABLE orders ADD COLUMN channel text
        }
        let roll = rng.gen_range(0..100);
        match roll {
            0..=34 => {
                let first_item = ids.item + 1;
                new_order(&mut db, &mut em, &mut rng, &mut ids, "c", day0 + chrono::Duration::days(day));
                order_ids.push(ids.order);
                item_ids.extend(first_item..=ids.item);
            }
            35..=49 if !order_ids.is_empty() => {
                let id = order_ids[rng.gen_range(0..order_ids.len())];
                let before = em.order_json(&db.orders[&id]);
                let o = db.orders.get_mut(&id).expect("order");
                o.status = ["paid", "shipped", "cancelled", "delivered"][rng.gen_range(0..4)].into();
                if rng.gen_bool(0.2) {
                    // A corrected order date, weeks back: gold must find the order where it was.
                    o.order_date = day0 - chrono::Duration::days(rng.gen_range(5..40));
                }
                if em.channel_exists && o.channel.is_none() {
                    o.channel = Some("web".into());
                }
                let o = o.clone();
                let after = em.order_json(&o);
                em.emit(Entity::Orders, json!({"order_id": id}), "u", Some(before), Some(after));
            }
            50..=59 => {
                let pid = format!("P{:03}", rng.gen_range(1..=30));
                let p = db.products.get_mut(&pid).expect("product");
                let before = product_json(p);
                if rng.gen_bool(0.5) {
                    p.name = format!("{} v{}", p.name.split(" v").next().unwrap_or(&p.name), rng.gen_range(2..99));
                } else {
                    p.price = (p.price * rng.gen_range(80..125) / 100).max(10);
                }
                let after = product_json(p);
                em.emit(Entity::Products, json!({"product_id": pid}), "u", Some(before), Some(after));
            }
            60..=67 => {
                let id = rng.gen_range(1..=20);
                let c = db.customers.get_mut(&id).expect("customer");
                let before = customer_json(c);
                c.email = format!("c{id}.{}@example.org", rng.gen_range(1..1000));
                let after = customer_json(c);
                em.emit(Entity::Customers, json!({"customer_id": id}), "u", Some(before), Some(after));
            }
            68..=77 if !order_ids.is_empty() => {
                ids.item += 1;
                let p = &db.products[&format!("P{:03}", rng.gen_range(1..=30))];
                let it = Item {
                    id: ids.item,
                    order_id: order_ids[rng.gen_range(0..order_ids.len())],
                    product_id: p.id.clone(),
                    quantity: rng.gen_range(1..=6),
                    unit_price: rng.gen_bool(0.8).then_some(p.price),
                };
                em.emit(Entity::OrderItems, json!({"item_id": it.id}), "c", None, Some(item_json(&it)));
                item_ids.push(it.id);
                db.items.insert(it.id, it);
            }
            78..=85 if !item_ids.is_empty() => {
                let id = item_ids[rng.gen_range(0..item_ids.len())];
                let it = db.items.get_mut(&id).expect("item");
                let before = item_json(it);
                it.quantity = rng.gen_range(1..=9);
                let after = item_json(it);
                em.emit(Entity::OrderItems, json!({"item_id": id}), "u", Some(before), Some(after));
            }
            86..=93 if !item_ids.is_empty() => {
                let id = item_ids[rng.gen_range(0..item_ids.len())];
                let it = db.items.remove(&id).expect("item");
                forget(&mut item_ids, id);
                em.emit(Entity::OrderItems, json!({"item_id": id}), "d", Some(item_json(&it)), None);
            }
            94..=99 if !order_ids.is_empty() => {
                // Deleting an order deletes its items first (foreign key).
                let id = order_ids[rng.gen_range(0..order_ids.len())];
                let doomed: Vec<i64> = db.items.values().filter(|i| i.order_id == id).map(|i| i.id).collect();
                for iid in doomed {
                    let it = db.items.remove(&iid).expect("item");
                    forget(&mut item_ids, iid);
                    em.emit(Entity::OrderItems, json!({"item_id": iid}), "d", Some(item_json(&it)), None);
                }
                let o = db.orders.remove(&id).expect("order");
                forget(&mut order_ids, id);
                let before = em.order_json(&o);
                em.emit(Entity::Orders, json!({"order_id": id}), "d", Some(before), None);
            }
            _ => {}
        }
    }
    CdcHistory { records: em.out, db }
}

/// Removes `id` from the sorted live keys.
fn forget(keys: &mut Vec<i64>, id: i64) {
    if let Ok(i) = keys.binary_search(&id) {
        keys.remove(i);
    }
}
