#!/usr/bin/env python3
"""The Python peer of `orderlake bench`: the pipeline a data engineer would otherwise write with
the usual libraries — a confluent-kafka consumer, polars, delta-rs (`deltalake`) and pymongo — doing
the same work as orderlake's full pipeline on the same topic, in micro-batches:

  bronze:  append the raw messages with their partition and offset
  silver:  MERGE the decoded sales lines by line id (a replay updates instead of duplicating)
  gold:    recompute order, customer and daily totals for the keys the batch touched, from silver,
           and MERGE them into the gold tables
  MongoDB: bulk upserts of the data contract's documents for those keys: `orders` (each order with
           its lines), `order_totals`, `customer_totals`, `daily_sales`; money as Decimal128,
           dates as dates
  commit the consumer offsets

It is written the straightforward way, with the libraries' documented calls and no tricks either
way. Prints one JSON line: {"events": N, "seconds": S}.
"""

import argparse
import io
import json
import os
import sys
import time
from decimal import Decimal

import polars as pl
from bson.codec_options import TypeEncoder, TypeRegistry
from bson.decimal128 import Decimal128
from confluent_kafka import Consumer
from deltalake import DeltaTable, write_deltalake
from pymongo import MongoClient, UpdateOne


class DecimalEncoder(TypeEncoder):
    """pymongo does not encode Python decimals (what polars hands out for a Decimal column) by
    itself; the data contract stores money as Decimal128."""

    python_type = Decimal

    def transform_python(self, value):
        return Decimal128(value)


def money(cents):
    """An amount in cents as an exact decimal with two places."""
    return cents.cast(pl.Decimal(18, 2)) / 100


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--brokers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--lake", required=True, help="lake root (file:///… or az://container/path)")
    p.add_argument("--events", type=int, required=True, help="stop after this many events")
    p.add_argument("--mongodb-uri", required=True)
    p.add_argument("--database", required=True)
    p.add_argument("--batch", type=int, default=50_000)
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE")
    return p.parse_args()


def merge(uri, df, keys, opts):
    """Upserts `df` into the Delta table at `uri` by `keys`, creating the table on first use."""
    data = df.to_arrow()
    try:
        table = DeltaTable(uri, storage_options=opts)
    except Exception:
        write_deltalake(uri, data, mode="append", storage_options=opts)
        return
    predicate = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    (
        table.merge(source=data, predicate=predicate, source_alias="s", target_alias="t")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )


def decode(values, partitions, offsets):
    sales = pl.read_ndjson(io.BytesIO(b"\n".join(values)), infer_schema_length=None)
    return (
        sales.with_columns(
            pl.Series("partition", partitions, dtype=pl.Int32),
            pl.Series("offset", offsets, dtype=pl.Int64),
        )
        .select(
            (pl.col("partition").cast(pl.Utf8) + "-" + pl.col("offset").cast(pl.Utf8)).alias("item_id"),
            pl.col("TransactionNo").cast(pl.Utf8).alias("order_id"),
            pl.col("Date").str.strptime(pl.Date, "%m/%d/%Y", strict=False).alias("order_date"),
            pl.col("ProductNo").cast(pl.Utf8).alias("product_id"),
            pl.col("ProductName").cast(pl.Utf8).alias("product_name"),
            (pl.col("Price").cast(pl.Float64) * 100).round(0).cast(pl.Int64).alias("unit_price_cents"),
            pl.col("Quantity").cast(pl.Int64).alias("quantity"),
            pl.col("CustomerNo").cast(pl.Utf8).alias("customer_id"),
            pl.col("Country").cast(pl.Utf8).alias("country"),
        )
        .with_columns((pl.col("unit_price_cents") * pl.col("quantity")).alias("line_cents"))
    )


def main():
    a = parse_args()
    opts = dict(kv.split("=", 1) for kv in a.storage_option)
    lake = a.lake.rstrip("/")
    consumer = Consumer(
        {
            "bootstrap.servers": a.brokers,
            "group.id": a.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([a.topic])
    db = MongoClient(a.mongodb_uri, type_registry=TypeRegistry([DecimalEncoder()]))[a.database]
    started = time.monotonic()
    done = 0
    while done < a.events:
        msgs = [m for m in consumer.consume(num_messages=min(a.batch, a.events - done), timeout=1.0) if not m.error()]
        if not msgs:
            continue
        values = [m.value() for m in msgs]
        partitions = [m.partition() for m in msgs]
        offsets = [m.offset() for m in msgs]
        bronze = pl.DataFrame(
            {
                "topic": [a.topic] * len(msgs),
                "partition": pl.Series(partitions, dtype=pl.Int32),
                "offset": offsets,
                "key": [m.key().decode() if m.key() else None for m in msgs],
                "value": [v.decode() for v in values],
                "timestamp_ms": [m.timestamp()[1] for m in msgs],
            }
        )
        write_deltalake(f"{lake}/bronze", bronze.to_arrow(), mode="append", storage_options=opts)

        lines = decode(values, partitions, offsets)
        merge(f"{lake}/silver/order_items", lines, ["item_id"], opts)

        silver = pl.scan_delta(f"{lake}/silver/order_items", storage_options=opts)
        touched_orders = lines["order_id"].unique().to_list()
        touched_customers = lines["customer_id"].drop_nulls().unique().to_list()
        touched_days = lines["order_date"].drop_nulls().unique().to_list()
        order_lines = silver.filter(pl.col("order_id").is_in(touched_orders)).collect()
        order_totals = order_lines.group_by("order_id").agg(
            pl.col("customer_id").first(),
            pl.col("country").first(),
            pl.col("order_date").first(),
            pl.len().alias("lines"),
            pl.col("quantity").sum().alias("units"),
            pl.col("line_cents").sum().alias("total_cents"),
        )
        customer_totals = (
            silver.filter(pl.col("customer_id").is_in(touched_customers))
            .group_by("customer_id")
            .agg(
                pl.col("country").first(),
                pl.col("order_id").n_unique().alias("orders"),
                pl.col("quantity").sum().alias("units"),
                pl.col("line_cents").sum().alias("revenue_cents"),
            )
            .collect()
        )
        daily = (
            silver.filter(pl.col("order_date").is_in(touched_days))
            .group_by("order_date", "country")
            .agg(
                pl.col("order_id").n_unique().alias("orders"),
                pl.col("quantity").sum().alias("units"),
                pl.col("line_cents").sum().alias("revenue_cents"),
            )
            .collect()
        )
        merge(f"{lake}/gold/order_totals", order_totals, ["order_id"], opts)
        merge(f"{lake}/gold/customer_totals", customer_totals, ["customer_id"], opts)
        merge(f"{lake}/gold/daily_sales", daily, ["order_date", "country"], opts)

        orders = order_lines.sort("item_id").group_by("order_id").agg(
            pl.col("customer_id").first(),
            pl.col("country").first(),
            pl.col("order_date").first(),
            pl.struct(
                "item_id",
                "product_id",
                pl.col("product_name").alias("name"),
                "quantity",
                money(pl.col("unit_price_cents")).alias("unit_price"),
                money(pl.col("line_cents")).alias("amount"),
            ).alias("items"),
            money(pl.col("line_cents").sum()).alias("total_amount"),
        )
        documents = {
            "order_totals": order_totals.select(
                pl.col("order_id").alias("_id"),
                pl.exclude("order_id", "total_cents"),
                money(pl.col("total_cents")).alias("total_amount"),
            ),
            "orders": orders.rename({"order_id": "_id"}),
            "customer_totals": customer_totals.select(
                pl.col("customer_id").alias("_id"),
                pl.exclude("customer_id", "revenue_cents"),
                money(pl.col("revenue_cents")).alias("revenue"),
            ),
            "daily_sales": daily.select(
                pl.format("{}|{}", pl.col("order_date").dt.strftime("%Y-%m-%d"), "country").alias("_id"),
                pl.exclude("revenue_cents"),
                money(pl.col("revenue_cents")).alias("revenue"),
            ),
        }
        for name, frame in documents.items():
            rows = frame.with_columns(pl.col(pl.Date).cast(pl.Datetime("ms"))).to_dicts()
            if rows:
                db[name].bulk_write([UpdateOne({"_id": r["_id"]}, {"$set": r}, upsert=True) for r in rows], ordered=False)
        consumer.commit(asynchronous=False)
        done += len(msgs)
        print(f"peer: {done} events, {done / (time.monotonic() - started):.0f}/s", file=sys.stderr, flush=True)
    seconds = time.monotonic() - started
    consumer.close()
    print(json.dumps({"events": done, "seconds": seconds}), flush=True)
    # deltalake 1.6's runtime can abort while the interpreter shuts down; everything is written.
    os._exit(0)


if __name__ == "__main__":
    main()
