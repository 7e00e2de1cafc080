# Shared settings of the local stack; sourced by install.sh, start.sh, stop.sh and the Makefile's targets.
# Every value can be overridden from the environment.
export ORDERLAKE_CACHE="${ORDERLAKE_CACHE:-$HOME/.cache/orderlake}"
export ORDERLAKE_STACK_DIR="${ORDERLAKE_STACK_DIR:-$ORDERLAKE_CACHE/stack}"
export ORDERLAKE_VENV="${ORDERLAKE_VENV:-$ORDERLAKE_CACHE/venv}"
export ORDERLAKE_NB_VENV="${ORDERLAKE_NB_VENV:-$ORDERLAKE_CACHE/notebooks-venv}"

export TANSU_VERSION=0.6.0
export TANSU_BIN="${TANSU_BIN:-$ORDERLAKE_CACHE/tansu/bin/tansu}"
export AZURITE_VERSION=3.35.0
export AZURITE_BIN="${AZURITE_BIN:-$ORDERLAKE_CACHE/node/node_modules/.bin/azurite-blob}"
export SECANTUS_BIN="${SECANTUS_BIN:-$ORDERLAKE_VENV/bin/secantusd-py}"

export KAFKA_PORT="${KAFKA_PORT:-9092}"
export AZURITE_PORT="${AZURITE_PORT:-10000}"
export MONGO_PORT="${MONGO_PORT:-27017}"

# Points orderlake (brokers, MongoDB, Azure credentials) at the local stack; `demo.sh` and
# `bench.sh` call it before setting their own lake, group and topic.
use_local_stack() {
  export ORDERLAKE_BROKERS="127.0.0.1:$KAFKA_PORT"
  export ORDERLAKE_MONGODB_URI="mongodb://127.0.0.1:$MONGO_PORT"
  # Azurite: the well-known development account, over http.
  export AZURE_STORAGE_ACCOUNT_NAME=devstoreaccount1
  export AZURE_STORAGE_ACCOUNT_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
  export AZURE_STORAGE_USE_EMULATOR=true
  export AZURE_ALLOW_HTTP=true
}
