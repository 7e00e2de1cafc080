//! The difference must land exactly where a recompute from all orders lands.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::gold::totals;

/// Silver-like orders and items; `None` dates and countries appear now and then.
/// id, customer, country, date, status
type Order = (String, Option<String>, Option<&'static str>, Option<i32>, &'static str);

#[derive(Clone)]
struct Shop {
    orders: Vec<Order>,
    items: Vec<(String, String, String, i64, Option<i64>)>,
}

const COUNTRIES: [&str; 3] = ["UK", "FR", "DE"];

fn customer(rng: &mut SmallRng) -> (Option<String>, Option<&'static str>) {
    let c = rng.gen_range(0..6usize);
    if c == 5 {
        return (None, Some("NL"));
    }
    // A customer keeps its country, but some orders carry none.
    let country = if rng.gen_bool(0.1) { None } else { Some(COUNTRIES[c % 3]) };
    (Some(format!("c{c}")), country)
}

impl Shop {
    fn add_order(&mut self, rng: &mut SmallRng, id: &str, day: i32) {
        let (cust, country) = customer(rng);
        let status = if rng.gen_bool(0.1) { "cancelled" } else { "completed" };
        let date = if rng.gen_bool(0.05) { None } else { Some(day) };
        self.orders.push((id.to_string(), cust, country, date, status));
        for j in 0..rng.gen_range(1..4) {
            self.add_item(rng, id, j);
        }
    }

    fn add_item(&mut self, rng: &mut SmallRng, order: &str, j: usize) {
        let qty = if order.starts_with('C') { -rng.gen_range(1..5i64) } else { rng.gen_range(1..5i64) };
        let price = if rng.gen_bool(0.2) { None } else { Some(rng.gen_range(50..500i64)) };
        self.items.push((format!("{order}-{j}"), order.to_string(), format!("p{}", rng.gen_range(0..6)), qty, price));
    }

    fn frames(&self) -> (DataFrame, DataFrame) {
        let o = &self.orders;
        let orders = df!(
            "order_id" => o.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
            "customer_id" => o.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
            "country" => o.iter().map(|r| r.2).collect::<Vec<_>>(),
            "order_date" => o.iter().map(|r| r.3).collect::<Vec<_>>(),
            "status" => o.iter().map(|r| r.4).collect::<Vec<_>>(),
        )
        .unwrap()
        .lazy()
        .with_columns([col("order_date").cast(DataType::Date)])
        .collect()
        .unwrap();
        let i = &self.items;
        let items = df!(
            "item_id" => i.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
            "order_id" => i.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
            "product_id" => i.iter().map(|r| r.2.clone()).collect::<Vec<_>>(),
            "quantity" => i.iter().map(|r| r.3).collect::<Vec<_>>(),
            "unit_price" => i.iter().map(|r| r.4).collect::<Vec<_>>(),
        )
        .unwrap();
        (orders, items)
    }
}

fn catalog() -> DataFrame {
    df!(
        "product_id" => (0..6).map(|p| format!("p{p}")).collect::<Vec<_>>(),
        "name" => (0..6).map(|p| format!("Product {p}")).collect::<Vec<_>>(),
        "price" => (0..6).map(|p| 100 + p as i64).collect::<Vec<_>>(),
    )
    .unwrap()
}

/// Gold as a recompute from everything would hold it.
struct Gold {
    lines: DataFrame,
    totals: DataFrame,
}

fn gold(shop: &Shop) -> Gold {
    let (orders, items) = shop.frames();
    let lines = totals::order_lines(&items, &orders, &catalog()).unwrap();
    let totals = totals::order_totals(&orders, &lines, 1).unwrap();
    Gold { lines, totals }
}

fn only(df: &DataFrame, c: &str, keys: &[String]) -> DataFrame {
    let mask: BooleanChunked =
        df.column(c).unwrap().str().unwrap().iter().map(|v| v.is_some_and(|v| keys.iter().any(|k| k == v))).collect();
    df.filter(&mask).unwrap()
}

fn sorted(df: &DataFrame, by: &[&str], cols_: &[&str]) -> DataFrame {
    df.clone()
        .lazy()
        .select(cols_.iter().map(|c| col(*c)).collect::<Vec<_>>())
        .sort(by.to_vec(), SortMultipleOptions::default())
        .collect()
        .unwrap()
}

fn keys(df: &DataFrame, c: &str) -> Vec<String> {
    let mut v: Vec<String> = df.column(c).unwrap().str().unwrap().iter().flatten().map(String::from).collect();
    v.sort();
    v.dedup();
    v
}

/// A batch: new orders (some cancelling), items added to or changed in earlier orders, and
/// status changes; never an order leaving a customer or a line leaving a product.
fn additive_batch(rng: &mut SmallRng, shop: &Shop, next: &mut usize, day: i32) -> (Shop, Vec<String>) {
    let mut after = shop.clone();
    let mut touched = Vec::new();
    for _ in 0..rng.gen_range(1..8) {
        *next += 1;
        let id = if rng.gen_bool(0.15) { format!("C{next}") } else { format!("{next}") };
        after.add_order(rng, &id, day);
        touched.push(id);
    }
    for _ in 0..rng.gen_range(0..4) {
        let k = rng.gen_range(0..after.orders.len());
        let id = after.orders[k].0.clone();
        match rng.gen_range(0..3) {
            0 => after.orders[k].4 = if after.orders[k].4 == "cancelled" { "completed" } else { "cancelled" },
            1 => {
                let j = 10 + rng.gen_range(0..50);
                after.add_item(rng, &id, j)
            }
            _ => {
                if let Some(it) = after.items.iter_mut().find(|i| i.1 == id) {
                    it.3 += 1;
                }
            }
        }
        touched.push(id);
    }
    after.items.sort_by(|a, b| a.0.cmp(&b.0));
    after.items.dedup_by(|a, b| a.0 == b.0);
    touched.sort();
    touched.dedup();
    (after, touched)
}

#[test]
fn differences_land_where_a_recompute_lands() {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut shop = Shop { orders: Vec::new(), items: Vec::new() };
    let mut next = 1000;
    for day in 0..3 {
        for _ in 0..10 {
            next += 1;
            shop.add_order(&mut rng, &format!("{next}"), day);
        }
    }
    let (mut decided, mut undecided) = (0, 0);
    for round in 0..40 {
        let before = gold(&shop);
        let (after_shop, touched) = additive_batch(&mut rng, &shop, &mut next, 3 + round / 4);
        let after = gold(&after_shop);
        let (old_t, new_t) = (only(&before.totals, "order_id", &touched), only(&after.totals, "order_id", &touched));
        let (old_l, new_l) = (only(&before.lines, "order_id", &touched), only(&after.lines, "order_id", &touched));

        let mut cust = keys(&old_t, "customer_id");
        cust.extend(keys(&new_t, "customer_id"));
        cust.push("c-none".into()); // a touched customer without orders has no row
        let want = only(&totals::customer_totals(&after.totals, 1).unwrap(), "customer_id", &cust);
        let old_rows = only(&totals::customer_totals(&before.totals, 1).unwrap(), "customer_id", &cust);
        match customers(&old_rows, &old_t, &new_t, 1).unwrap() {
            Some(got) => {
                decided += 1;
                let c = ["customer_id", "country", "orders", "units", "revenue", "first_order_date", "last_order_date"];
                assert_eq!(sorted(&got, &["customer_id"], &c), sorted(&want, &["customer_id"], &c), "round {round}");
            }
            None => undecided += 1,
        }

        let day_keys = ["order_date", "country"];
        let all_before = totals::daily_sales(&before.totals).unwrap();
        let all_after = totals::daily_sales(&after.totals).unwrap();
        let (got, gone) = days(&all_before, &old_t, &new_t).unwrap();
        assert_eq!(gone.height(), 0, "orders never leave in this batch");
        let c = ["order_date", "country", "orders", "units", "revenue", "cancelled_orders", "cancelled_amount"];
        assert_eq!(sorted(&got, &day_keys, &c), sorted(&all_after, &day_keys, &c), "round {round}");

        let mut prods = keys(&old_l, "product_id");
        prods.extend(keys(&new_l, "product_id"));
        let ps = |g: &Gold| totals::product_sales(&g.lines, &catalog(), &g.totals).unwrap();
        let old_rows = only(&ps(&before), "product_id", &prods);
        let got = products(&old_rows, (&old_l, &old_t), (&new_l, &new_t), &catalog()).unwrap().unwrap();
        let c = ["product_id", "product_name", "orders", "units", "revenue"];
        assert_eq!(
            sorted(&got, &["product_id"], &c),
            sorted(&only(&ps(&after), "product_id", &prods), &["product_id"], &c),
            "round {round}"
        );
        shop = after_shop;
    }
    assert!(decided > 30, "customers were mostly moved by the difference ({decided} vs {undecided})");
}

#[test]
fn what_a_difference_cannot_move_asks_for_a_recompute() {
    let mut rng = SmallRng::seed_from_u64(3);
    let mut shop = Shop { orders: Vec::new(), items: Vec::new() };
    for i in 0..6 {
        shop.add_order(&mut rng, &format!("o{i}"), i);
    }
    shop.orders[0].1 = Some("c1".into());
    let before = gold(&shop);
    let ids = vec!["o0".to_string()];
    let (old_t, old_l) = (only(&before.totals, "order_id", &ids), only(&before.lines, "order_id", &ids));
    let rows = totals::customer_totals(&before.totals, 1).unwrap();
    let ps = totals::product_sales(&before.lines, &catalog(), &before.totals).unwrap();

    // The order leaves (deleted): its customer's first/last date cannot be moved back.
    let mut gone = shop.clone();
    gone.orders.remove(0);
    gone.items.retain(|i| i.1 != "o0");
    let g = gold(&gone);
    let (new_t, new_l) = (only(&g.totals, "order_id", &ids), only(&g.lines, "order_id", &ids));
    assert!(customers(&rows, &old_t, &new_t, 1).unwrap().is_none());
    assert!(products(&ps, (&old_l, &old_t), (&new_l, &new_t), &catalog()).unwrap().is_none());
    let (_, gone_days) = days(&totals::daily_sales(&before.totals).unwrap(), &old_t, &new_t).unwrap();
    let left = totals::daily_sales(&g.totals).unwrap();
    assert_eq!(gone_days.height() + left.height(), totals::daily_sales(&before.totals).unwrap().height());

    // A new order in another country, dated before the customer's last order: which country is
    // the latest depends on orders the difference does not see.
    let mut moved = shop.clone();
    moved.orders.push(("late".into(), Some("c1".into()), Some("JP"), Some(-5), "completed"));
    moved.add_item(&mut rng, "late", 0);
    let g = gold(&moved);
    let ids = vec!["late".to_string()];
    let new_t = only(&g.totals, "order_id", &ids);
    let empty = new_t.clear();
    assert!(customers(&rows, &empty, &new_t, 1).unwrap().is_none());
    // Dated after every order: it is the latest, so its country wins.
    let idx = moved.orders.len() - 1;
    moved.orders[idx].3 = Some(100);
    let g = gold(&moved);
    let new_t = only(&g.totals, "order_id", &ids);
    let got = customers(&rows, &empty, &new_t, 1).unwrap().expect("decidable");
    let want = only(&totals::customer_totals(&g.totals, 1).unwrap(), "customer_id", &["c1".to_string()]);
    let c = ["customer_id", "country", "orders", "units", "revenue", "first_order_date", "last_order_date"];
    assert_eq!(
        sorted(&only(&got, "customer_id", &["c1".into()]), &["customer_id"], &c),
        sorted(&want, &["customer_id"], &c)
    );
}
