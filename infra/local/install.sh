#!/usr/bin/env bash
# Installs the local stack orderlake's demo and tests run against, from the package registries only
# (no Docker here). Everything lands under $ORDERLAKE_CACHE (default ~/.cache/orderlake), outside the
# clone, so a second run (or the next CI run on this machine) costs seconds, not the 25-minute tansu build.
#
#   tansu 0.6.0     Kafka-protocol broker      (crates.io, cargo install)
#   azurite 3.35.0  Azure Blob emulator        (npm)
#   secantusdb      MongoDB-wire server        (PyPI), plus the Python readers tests use
#   notebooks venv  jupyter, polars, DuckDB + delta extension (PyPI, notebooks/requirements.txt)
#   cmake & headers needed by rdkafka's bundled librdkafka build (Debian)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=infra/local/env.sh
. "$here/env.sh"

log() { printf '[install] %s\n' "$*"; }
mkdir -p "$ORDERLAKE_CACHE/logs"

# Build tools and headers for rdkafka's bundled librdkafka (cmake, curl, ssl, sasl, zlib).
DEB_PACKAGES="cmake pkg-config libcurl4-openssl-dev libssl-dev libsasl2-dev zlib1g-dev"
install_cmake() {
  local missing=()
  for p in $DEB_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -eq 0 ]; then log "build packages: present"; return; fi
  log "build packages: installing ${missing[*]} from Debian"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

install_tansu() {
  if [ -x "$TANSU_BIN" ] && "$TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    log "tansu $TANSU_VERSION: cached at $TANSU_BIN"; return
  fi
  log "tansu $TANSU_VERSION: building from crates.io (20-25 min on 2 cores, once; log: $ORDERLAKE_CACHE/logs/tansu-install.log)"
  CARGO_TARGET_DIR="$ORDERLAKE_CACHE/tansu-target" cargo install tansu --version "$TANSU_VERSION" --locked \
    --features libsql --root "$ORDERLAKE_CACHE/tansu" >"$ORDERLAKE_CACHE/logs/tansu-install.log" 2>&1 \
    || { log "tansu build failed; see $ORDERLAKE_CACHE/logs/tansu-install.log"; tail -20 "$ORDERLAKE_CACHE/logs/tansu-install.log"; exit 1; }
  rm -rf "$ORDERLAKE_CACHE/tansu-target"
}

install_azurite() {
  if [ -x "$AZURITE_BIN" ]; then log "azurite $AZURITE_VERSION: cached"; return; fi
  log "azurite $AZURITE_VERSION: installing from npm"
  mkdir -p "$ORDERLAKE_CACHE/node"
  npm install --silent --no-audit --no-fund --prefix "$ORDERLAKE_CACHE/node" "azurite@$AZURITE_VERSION" >/dev/null
}

install_python() {
  local req="$here/requirements.txt" stamp="$ORDERLAKE_VENV/.requirements"
  if [ -x "$ORDERLAKE_VENV/bin/python" ] && cmp -s "$req" "$stamp"; then log "python venv: cached"; return; fi
  log "python venv: installing $(tr '\n' ' ' <"$req")"
  python3 -m venv "$ORDERLAKE_VENV"
  "$ORDERLAKE_VENV/bin/pip" install -q --disable-pip-version-check -r "$req"
  cp "$req" "$stamp"
}

# The analysts' notebooks get their own venv: jupyter and DuckDB stay out of the tests' readers.
install_notebooks() {
  local req="$here/../../notebooks/requirements.txt" stamp="$ORDERLAKE_NB_VENV/.requirements"
  if [ -x "$ORDERLAKE_NB_VENV/bin/jupyter" ] && cmp -s "$req" "$stamp"; then log "notebooks venv: cached"; return; fi
  log "notebooks venv: installing notebooks/requirements.txt into $ORDERLAKE_NB_VENV"
  python3 -m venv "$ORDERLAKE_NB_VENV"
  "$ORDERLAKE_NB_VENV/bin/pip" install -q --disable-pip-version-check -r "$req"
  cp "$req" "$stamp"
}

case "${1:-all}" in
  all) install_cmake; install_python; install_notebooks; install_azurite; install_tansu ;;
  notebooks) install_notebooks ;;
  tansu) install_tansu ;;
  azurite) install_azurite ;;
  python) install_python ;;
  cmake) install_cmake ;;
  *) echo "usage: $0 [all|tansu|azurite|python|notebooks|cmake]" >&2; exit 2 ;;
esac
