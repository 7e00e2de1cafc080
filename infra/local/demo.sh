#!/usr/bin/env bash
# `make demo`: the bundled sample → Kafka → orderlake run --once → Delta on Azurite + MongoDB, then
# a summary. Safe to re-run: the sample is published only into an empty topic, and the pipeline
# is exactly once, so a second run adds nothing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=infra/local/env.sh
. "$here/env.sh"
BIN="${CARGO_TARGET_DIR:-$ORDERLAKE_CACHE/target}/debug/orderlake"

use_local_stack
export ORDERLAKE_LAKE="${DEMO_LAKE:-az://orderlake-demo/lake}"
export ORDERLAKE_MONGODB_DATABASE="${DEMO_DATABASE:-orderlake}"
export ORDERLAKE_SALES_TOPIC="shop.sales"
export ORDERLAKE_GROUP="orderlake-demo"
# CDC topics shop.public.{orders,order_items,products,customers} and the card-number mask.
export ORDERLAKE_CONFIG="$root/infra/docker/orderlake.toml"

echo "== 1/4 container orderlake-demo on Azurite"
"$ORDERLAKE_VENV/bin/python" "$here/azure_container.py" orderlake-demo
echo "== 2/4 publishing data/sales_sample.csv to shop.sales and a Debezium history to shop.public.* (skipped if already there)"
"$BIN" produce --csv "$root/data/sales_sample.csv" --skip-if-not-empty
"$BIN" produce --cdc --synthetic 400 --seed 7 --schema-envelope --skip-if-not-empty
echo "== 3/4 orderlake run --once"
"$BIN" run --once
echo "== 4/4 summary"
"$BIN" status
"$ORDERLAKE_VENV/bin/python" "$here/demo_summary.py"
