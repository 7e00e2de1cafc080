#!/usr/bin/env bash
# Stops the servers start.sh started (by the PIDs it recorded; servers it reused are left alone).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=infra/local/env.sh
. "$here/env.sh"

stop_one() {
  local name=$1 pidf="$ORDERLAKE_STACK_DIR/$1.pid"
  [ -f "$pidf" ] || return 0
  local pid; pid=$(cat "$pidf")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    printf '[stop] %s stopped (pid %s)\n' "$name" "$pid"
  fi
  rm -f "$pidf"
}

case "${1:-all}" in
  all) stop_one secantus; stop_one azurite; stop_one tansu ;;
  *) stop_one "$1" ;;
esac
