# Shared settings of the local stack; sourced by install.sh, start.sh, stop.sh and the Makefile's targets.
# Every value can be overridden from the environment.
export ORDERLAKE_CACHE="${ORDERLAKE_CACHE:-$HOME/.cache/orderlake}"
export ORDERLAKE_STACK_DIR="${ORDERLAKE_STACK_DIR:-$ORDERLAKE_CACHE/stack}"
export ORDERLAKE_VENV="${ORDERLAKE_VENV:-$ORDERLAKE_CACHE/venv}"

export TANSU_VERSION=0.6.0
export TANSU_BIN="${TANSU_BIN:-$ORDERLAKE_CACHE/tansu/bin/tansu}"
export AZURITE_VERSION=3.35.0
export AZURITE_BIN="${AZURITE_BIN:-$ORDERLAKE_CACHE/node/node_modules/.bin/azurite-blob}"
export SECANTUS_BIN="${SECANTUS_BIN:-$ORDERLAKE_VENV/bin/secantusd-py}"

export KAFKA_PORT="${KAFKA_PORT:-9092}"
export AZURITE_PORT="${AZURITE_PORT:-10000}"
export MONGO_PORT="${MONGO_PORT:-27017}"
