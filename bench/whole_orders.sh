#!/bin/bash
# Measures a whole republish of every order document (docs/performance.md, "Session 30"): N events
# land with MongoDB, M more without it, gold/order_totals' log is cut at a new checkpoint (as log
# cleanup would after an outage past its retention), then a run with MongoDB catches up. Needs the
# local stack (infra/local/start.sh) and a release build; usage: bench/whole_orders.sh [N] [M]
set -euo pipefail
N=${1:-1000000}; M=${2:-20000}
cd "$(dirname "$0")/.."
. infra/local/env.sh; use_local_stack
B=${ORDERLAKE_BIN:-${CARGO_TARGET_DIR:-target}/release/orderlake}
ID=whole$(date +%s); L=/tmp/$ID; T=$ID.sales
export ORDERLAKE_LAKE=$L ORDERLAKE_SALES_TOPIC=$T ORDERLAKE_GROUP=$ID ORDERLAKE_MONGODB_DATABASE=$ID
PY=$ORDERLAKE_VENV/bin/python
echo "== $ID: $N events with MongoDB"
$B produce --synthetic $N --seed 42 >/dev/null
/usr/bin/time -f "first run: %e s, max RSS %M KiB" $B run --once > /tmp/$ID.first.log 2>&1 || { tail -5 /tmp/$ID.first.log; exit 1; }
tail -1 /tmp/$ID.first.log
echo "== $M more without MongoDB"
$B produce --synthetic $M --seed 7 >/dev/null
env -u ORDERLAKE_MONGODB_URI $B run --once > /tmp/$ID.second.log 2>&1
echo "== cutting gold/order_totals' log"
$PY - "$L/gold/order_totals" <<'PY'
import sys, os, glob
from deltalake import DeltaTable
p = sys.argv[1]
t = DeltaTable(p); t.create_checkpoint(); v = t.version()
n = 0
for f in glob.glob(os.path.join(p, "_delta_log", "*.json")):
    b = os.path.basename(f)[:-5]
    if b.isdigit() and int(b) < v:
        os.remove(f); n += 1
print(f"checkpoint at {v}, {n} commits removed")
PY
echo "== catch-up with MongoDB"
/usr/bin/time -f "catch-up: %e s, max RSS %M KiB" $B run --once > /tmp/$ID.third.log 2>&1 || { tail -5 /tmp/$ID.third.log; exit 1; }
grep -E "republish|no longer shows" /tmp/$ID.third.log | sed -E 's/\x1b\[[0-9;]*m//g' | cut -c1-260 | tail -4
tail -1 /tmp/$ID.third.log
$PY - "$L/gold/order_totals" "$ORDERLAKE_MONGODB_URI" "$ID" <<'PY'
import sys, pymongo
from deltalake import DeltaTable
lake = DeltaTable(sys.argv[1]).to_pyarrow_table(columns=["order_id"]).num_rows
db = pymongo.MongoClient(sys.argv[2])[sys.argv[3]]
docs = {c: db[c].count_documents({}) for c in ("order_totals", "orders")}
print(f"lake orders {lake}, MongoDB {docs}")
sys.exit(0 if all(n == lake for n in docs.values()) else 1)
PY
rm -rf "$L"
$PY -c "import pymongo, sys; pymongo.MongoClient(sys.argv[1]).drop_database(sys.argv[2])" "$ORDERLAKE_MONGODB_URI" "$ID"
echo "logs: /tmp/$ID.{first,second,third}.log"
