"""Prints what `make demo` produced, read back with independent tools (Python deltalake, pymongo)."""
import os

import pymongo
from deltalake import DeltaTable

lake = os.environ["ORDERLAKE_LAKE"].rstrip("/")
opts = {
    "account_name": os.environ["AZURE_STORAGE_ACCOUNT_NAME"],
    "account_key": os.environ["AZURE_STORAGE_ACCOUNT_KEY"],
    "use_emulator": "true",
    "allow_http": "true",
} if lake.startswith("az://") else {}


def table(name):
    return DeltaTable(f"{lake}/{name}", storage_options=opts).to_pyarrow_table()


totals = table("gold/order_totals").sort_by([("total_amount", "descending")])
print(f"\nLargest orders (gold/order_totals, {totals.num_rows} orders):")
for r in totals.slice(0, 5).to_pylist():
    print(f"  {r['order_id']:>10}  {r['order_date']}  {r['country'] or '-':<16} {r['lines']:>3} lines  £{r['total_amount']:>10}")
daily = table("gold/daily_sales").to_pylist()
by_day = {}
for r in daily:
    by_day[r["order_date"]] = by_day.get(r["order_date"], 0) + r["revenue"]
print("\nRevenue per day (gold/daily_sales, net of cancellations):")
for d in sorted(by_day):
    print(f"  {d}  £{by_day[d]:>12}")

customers = table("silver/customers").to_pylist()
if customers:
    c = customers[0]
    print(f"\nCDC: {len(customers)} customers in silver/customers, e.g. {c['customer_id']}: {c['email']}, card {c.get('credit_card')} (masked before bronze)")
    deleted = table("silver/_deletes").num_rows
    print(f"     {deleted} rows deleted at the source (tombstones in silver/_deletes)")

db = pymongo.MongoClient(os.environ["ORDERLAKE_MONGODB_URI"])[os.environ["ORDERLAKE_MONGODB_DATABASE"]]
print("\nMongoDB documents:", {c: db[c].count_documents({}) for c in ["orders", "order_totals", "customer_totals", "daily_sales"]})
doc = db.orders.find_one(sort=[("total_amount", -1)])
if doc:
    print(f"  e.g. db.orders.find_one({{_id: '{doc['_id']}'}}) → {len(doc['items'])} items, total {doc['total_amount']}")

print(f"""
Tables live under {lake}/ (bronze/<topic>, silver/*, gold/*). Query them, for example:
  python -c "import polars as pl; print(pl.scan_delta('{lake}/gold/daily_sales', storage_options={opts!r}).collect())"
  duckdb:  SELECT * FROM delta_scan('{lake}/gold/order_totals') ORDER BY total_amount DESC LIMIT 10;
""")

# deltalake 1.6.6 (Python) sometimes aborts in its thread teardown at interpreter exit: leave first.
import sys  # noqa: E402

sys.stdout.flush()
os._exit(0)
