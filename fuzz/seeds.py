"""Writes the fuzz targets' starting corpora from the repository's own samples.

decode: one byte choosing the topic (0 sales, 1 orders, 2 order_items, 3 products, 4 customers),
then the key, a 0xff byte and the value. redact: a Debezium value as it arrives.
"""
import csv
import json
import pathlib

root = pathlib.Path(__file__).resolve().parent
repo = root.parent
out = {name: root / "corpus" / name for name in ("decode", "redact")}
for d in out.values():
    d.mkdir(parents=True, exist_ok=True)

TOPIC = {"orders": 1, "items": 2, "products": 3, "customers": 4}


def compact(v):
    return json.dumps(v, separators=(",", ":")).encode()


n = 0
with open(repo / "data" / "sales_sample.csv", newline="") as f:
    for i, row in enumerate(csv.DictReader(f)):
        if i % 97:
            continue
        row["Price"] = float(row["Price"])
        row["Quantity"] = int(row["Quantity"])
        (out["decode"] / f"sales-{i}").write_bytes(b"\x00" + row["TransactionNo"].encode() + b"\xff" + compact(row))
        n += 1

for p in sorted((repo / "data" / "fixtures" / "debezium").glob("*.json")):
    msg = json.loads(p.read_text())
    key, value = msg.get("key"), msg.get("value")
    sel = next((v for k, v in TOPIC.items() if f"_{k}_" in p.name), 1)
    body = (compact(key) + b"\xff" if key is not None else b"") + (compact(value) if value is not None else b"null")
    (out["decode"] / p.stem).write_bytes(bytes([sel]) + body)
    (out["redact"] / p.stem).write_bytes(compact(value))
    n += 2

# A customer with every PII column the targets rule (email masked, name dropped, phone hashed),
# as an envelope and flattened.
after = {"customer_id": 7, "name": "Ann Example", "email": "ann@example.org", "phone": "+44 20 7946 0000", "country": "UK"}
env = {"before": None, "after": after, "source": {"lsn": 99, "ts_ms": 1}, "op": "c", "ts_ms": 2}
for name, v in {"pii-envelope": env, "pii-flat": {**after, "__op": "u", "__lsn": 100, "__deleted": "false"}}.items():
    (out["redact"] / name).write_bytes(compact(v))
    (out["decode"] / name).write_bytes(b"\x04" + compact({"customer_id": 7}) + b"\xff" + compact(v))
    n += 2
print(f"{n} seed inputs under {root / 'corpus'}")
