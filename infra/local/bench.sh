#!/usr/bin/env bash
# `make bench`: orderlake bench against the local stack (tansu, Azurite, SecantusDB) from a release
# build. Arguments are passed to `orderlake bench` (e.g. `make bench ARGS="--events 50000"`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=infra/local/env.sh
. "$here/env.sh"
BIN="${ORDERLAKE_BENCH_BIN:-${CARGO_TARGET_DIR:-$ORDERLAKE_CACHE/target}/release/orderlake}"

export ORDERLAKE_BROKERS="127.0.0.1:$KAFKA_PORT"
export ORDERLAKE_LAKE="${BENCH_LAKE:-az://orderlake-bench/runs}"
export ORDERLAKE_MONGODB_URI="mongodb://127.0.0.1:$MONGO_PORT"
export ORDERLAKE_MONGODB_DATABASE="bench"
export ORDERLAKE_BENCH_PYTHON="$ORDERLAKE_VENV/bin/python"
export AZURE_STORAGE_ACCOUNT_NAME=devstoreaccount1
export AZURE_STORAGE_ACCOUNT_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
export AZURE_STORAGE_USE_EMULATOR=true
export AZURE_ALLOW_HTTP=true
unset ORDERLAKE_CONFIG ORDERLAKE_GROUP ORDERLAKE_SALES_TOPIC ORDERLAKE_CDC_PREFIX

case "$ORDERLAKE_LAKE" in
  az://*) container="${ORDERLAKE_LAKE#az://}"; "$ORDERLAKE_VENV/bin/python" "$here/azure_container.py" "${container%%/*}" ;;
esac
cd "$root"
case " $* " in *" --out "*) exec "$BIN" bench "$@" ;; *) exec "$BIN" bench --out "$root/bench/results" "$@" ;; esac
