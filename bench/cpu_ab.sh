#!/usr/bin/env bash
# CPU per batch, binary against binary: the measure behind docs/performance.md "Session 9".
# Freshness latency on a 2-core machine swings by a factor of two from run to run; the CPU that a
# fixed job costs every process (orderlake, Azurite, SecantusDB, tansu) moves much less.
#
#   bench/cpu_ab.sh [--events N] [--batch N] [--rounds N] BINARY...
#
# For each round and each binary: restarts the local stack (fresh data), publishes N synthetic
# events (default 30,000, same seed every time) and runs `BINARY run --once` over them in batches of
# --batch events (default 2,500; small batches, as in the freshness phase) into Azurite and
# MongoDB. Prints wall seconds, CPU seconds of each process and orderlake's peak RSS.
# The local stack's data is cleared by each restart, and the stack is left stopped.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=infra/local/env.sh
. "$root/infra/local/env.sh"

events=30000 batch=2500 rounds=1 bins=()
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    -h|--help) sed -n 2,11p "$0"; exit 0 ;;
    *) [ -x "$1" ] || { echo "cpu_ab: $1 is not an executable orderlake binary" >&2; exit 2; }; bins+=("$1"); shift ;;
  esac
done
[ ${#bins[@]} -gt 0 ] || { echo "usage: bench/cpu_ab.sh [--events N] [--batch N] [--rounds N] BINARY..." >&2; exit 2; }

use_local_stack
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '[batch]\nmax_records = %s\nmax_latency_ms = 500\n' "$batch" > "$work/orderlake.toml"
cpu_of() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$(cat "$ORDERLAKE_STACK_DIR/$1.pid")/stat"; }
delta() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }

cd "$root"
for round in $(seq 1 "$rounds"); do
  for bin in "${bins[@]}"; do
    bash infra/local/stop.sh >/dev/null 2>&1 || true
    bash infra/local/start.sh >/dev/null
    "$ORDERLAKE_VENV/bin/python" infra/local/azure_container.py cpuab >/dev/null
    name="cpuab-$(date +%H%M%S)-$round"
    "$bin" produce --topic "$name" --synthetic "$events" --seed 7 >/dev/null 2>&1
    before=("$(cpu_of azurite)" "$(cpu_of secantus)" "$(cpu_of tansu)")
    ORDERLAKE_LAKE="az://cpuab/$name" ORDERLAKE_GROUP="$name" ORDERLAKE_SALES_TOPIC="$name" \
      ORDERLAKE_MONGODB_DATABASE="${name//-/_}" ORDERLAKE_LOG=warn \
      /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$bin" run --once --config "$work/orderlake.toml" \
      >"$work/run.log" 2>&1 || { echo "cpu_ab: $bin failed; last lines:" >&2; tail -5 "$work/run.log" >&2; exit 1; }
    read -r wall user sys rss < "$work/time"
    printf '%s round %s: wall %ss  orderlake %ss  azurite %ss  secantus %ss  tansu %ss  peak RSS %s MiB\n' \
      "$(basename "$bin")" "$round" "$wall" "$(delta 0 "$(awk -v u="$user" -v s="$sys" 'BEGIN {print u + s}')")" \
      "$(delta "${before[0]}" "$(cpu_of azurite)")" "$(delta "${before[1]}" "$(cpu_of secantus)")" \
      "$(delta "${before[2]}" "$(cpu_of tansu)")" "$((rss / 1024))"
  done
done
bash infra/local/stop.sh >/dev/null 2>&1 || true
