#!/usr/bin/env bash
# `make bench`: orderlake bench against the local stack (tansu, Azurite, SecantusDB) from a release
# build. Arguments are passed to `orderlake bench` (e.g. `make bench ARGS="--events 50000"`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=infra/local/env.sh
. "$here/env.sh"
BIN="${ORDERLAKE_BENCH_BIN:-${CARGO_TARGET_DIR:-$ORDERLAKE_CACHE/target}/release/orderlake}"

use_local_stack
export ORDERLAKE_LAKE="${BENCH_LAKE:-az://orderlake-bench/runs}"
export ORDERLAKE_MONGODB_DATABASE="bench"
export ORDERLAKE_BENCH_PYTHON="$ORDERLAKE_VENV/bin/python"
unset ORDERLAKE_CONFIG ORDERLAKE_GROUP ORDERLAKE_SALES_TOPIC ORDERLAKE_CDC_PREFIX

case "$ORDERLAKE_LAKE" in
  az://*) container="${ORDERLAKE_LAKE#az://}"; "$ORDERLAKE_VENV/bin/python" "$here/azure_container.py" "${container%%/*}" ;;
esac
cd "$root"
case " $* " in *" --out "*) exec "$BIN" bench "$@" ;; *) exec "$BIN" bench --out "$root/bench/results" "$@" ;; esac
