#!/usr/bin/env bash
# Starts the local stack on 127.0.0.1: tansu (Kafka protocol), Azurite (Blob), SecantusDB (MongoDB
# wire). Each server gets its own data dir, PID file and log under $ORDERLAKE_STACK_DIR. A server
# that is already up (its port answers) is reused, so tests and demos can run against a running
# stack. Prints, for each, where its log is; exits non-zero naming the log when one does not start.
#
# A server this script starts begins with an empty data dir: everything on the local stack (test
# topics, containers and databases, the demo) is disposable and re-created by the tests and
# `make demo`, while what piles up over many runs slows every server down (Azurite's metadata
# file grew to 15 MB after a few hundred test runs and halved its speed). ORDERLAKE_KEEP_DATA=1
# keeps the data of the previous start (and Azurite's blobs on disk; otherwise they live in
# memory). ORDERLAKE_AZURITE_ACCESS_LOG=1 makes Azurite log every request to its log (to count
# the storage requests a batch makes; it costs Azurite CPU).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=infra/local/env.sh
. "$here/env.sh"

log() { printf '[start] %s\n' "$*"; }
mkdir -p "$ORDERLAKE_STACK_DIR"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# fresh_dir DIR: DIR, emptied unless ORDERLAKE_KEEP_DATA=1.
fresh_dir() {
  if [ "${ORDERLAKE_KEEP_DATA:-0}" != 1 ] && [ -d "$1" ]; then
    log "clearing $1 (ORDERLAKE_KEEP_DATA=1 keeps it)"
    rm -rf "$1"
  fi
  mkdir -p "$1"
}

# wait_ready NAME PIDFILE LOG CHECK...: polls CHECK for up to 60 s.
wait_ready() {
  local name=$1 pidfile=$2 logf=$3; shift 3
  for _ in $(seq 1 120); do
    if "$@" >/dev/null 2>&1; then log "$name ready (log: $logf)"; return 0; fi
    if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then break; fi
    sleep 0.5
  done
  log "$name did not become ready; last lines of $logf:"
  tail -20 "$logf" >&2 || true
  exit 1
}

start_tansu() {
  local dir="$ORDERLAKE_STACK_DIR/tansu" logf="$ORDERLAKE_STACK_DIR/tansu.log" pidf="$ORDERLAKE_STACK_DIR/tansu.pid"
  if port_open "$KAFKA_PORT"; then log "kafka port $KAFKA_PORT already answers: reusing it"; return; fi
  [ -x "$TANSU_BIN" ] || { log "tansu is not installed: run infra/local/install.sh"; exit 1; }
  fresh_dir "$dir"
  # The sqlite path is relative: start from inside the data dir. memory:// would lose data.
  (cd "$dir" && exec setsid "$TANSU_BIN" broker \
      --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine "sqlite://tansu.db" >"$logf" 2>&1 < /dev/null) &
  echo $! >"$pidf"
  wait_ready tansu "$pidf" "$logf" "$TANSU_BIN" topic list --broker "tcp://127.0.0.1:$KAFKA_PORT"
}

start_azurite() {
  local dir="$ORDERLAKE_STACK_DIR/azurite" logf="$ORDERLAKE_STACK_DIR/azurite.log" pidf="$ORDERLAKE_STACK_DIR/azurite.pid"
  if port_open "$AZURITE_PORT"; then log "blob port $AZURITE_PORT already answers: reusing it"; return; fi
  [ -x "$AZURITE_BIN" ] || { log "azurite is not installed: run infra/local/install.sh"; exit 1; }
  fresh_dir "$dir"
  local quiet=--silent
  [ "${ORDERLAKE_AZURITE_ACCESS_LOG:-0}" = 1 ] && quiet=
  # --disableTelemetry: by default Azurite records every request for Application Insights and
  # tries to send it (there is no internet here): CPU spent on nothing, on a machine the
  # benchmarks keep busy. The blobs live in memory unless the data is to be kept: on disk,
  # Azurite rewrites its whole metadata file every 5 s, which grows with every blob written.
  local store=(--inMemoryPersistence)
  [ "${ORDERLAKE_KEEP_DATA:-0}" = 1 ] && store=(--location "$dir")
  # Deletes and garbage collection that do not stall every request for seconds at a time
  # (azurite-preload.js says why); ORDERLAKE_AZURITE_PRELOAD=0 runs Azurite as it comes.
  local node_options="${NODE_OPTIONS:-}"
  [ "${ORDERLAKE_AZURITE_PRELOAD:-1}" = 0 ] || node_options="${node_options:+$node_options }--require $here/azurite-preload.js"
  NODE_OPTIONS="$node_options" \
  setsid "$AZURITE_BIN" --blobHost 127.0.0.1 --blobPort "$AZURITE_PORT" "${store[@]}" \
    --skipApiVersionCheck --loose --disableTelemetry $quiet >"$logf" 2>&1 < /dev/null &
  echo $! >"$pidf"
  wait_ready azurite "$pidf" "$logf" port_open "$AZURITE_PORT"
}

# Standalone like a plain mongod (docker-compose.yml): a single-node replica set would write an oplog
# entry per document, a third of SecantusDB's time per write, for change streams nobody here opens.
start_secantus() {
  local dir="$ORDERLAKE_STACK_DIR/secantus" logf="$ORDERLAKE_STACK_DIR/secantus.log" pidf="$ORDERLAKE_STACK_DIR/secantus.pid"
  if port_open "$MONGO_PORT"; then log "mongodb port $MONGO_PORT already answers: reusing it"; return; fi
  [ -x "$SECANTUS_BIN" ] || { log "secantusdb is not installed: run infra/local/install.sh"; exit 1; }
  fresh_dir "$dir"
  (cd "$dir" && exec setsid "$SECANTUS_BIN" --host 127.0.0.1 --port "$MONGO_PORT" --storage-path "$dir/data" \
      --enable-test-commands --standalone >"$logf" 2>&1 < /dev/null) &
  echo $! >"$pidf"
  wait_ready secantusdb "$pidf" "$logf" "$ORDERLAKE_VENV/bin/python" -c \
    "import pymongo,sys; pymongo.MongoClient('mongodb://127.0.0.1:$MONGO_PORT', serverSelectionTimeoutMS=500).admin.command('ping')"
}

case "${1:-all}" in
  all) start_tansu; start_azurite; start_secantus ;;
  tansu) start_tansu ;;
  azurite) start_azurite ;;
  secantus|mongodb) start_secantus ;;
  *) echo "usage: $0 [all|tansu|azurite|secantus]" >&2; exit 2 ;;
esac
