#!/usr/bin/env bash
# Sets up everything shadowflow needs on a fresh machine, then runs one job:
#   bash infra/run.sh demo [ARGS...]    the main job (shadowflow demo)
#   bash infra/run.sh test [ARGS...]    the test suite (pytest)
#   bash infra/run.sh bench [NAME...]   the benchmarks in bench/
# Set-up (each step skipped when already done): Debian's ClickHouse server, a virtual
# environment in .venv, and the Python packages of pyproject.toml. The demo and the tests start
# and stop the broker and ClickHouse themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_clickhouse() {
  if command -v clickhouse-server >/dev/null || [ -x /usr/sbin/clickhouse-server ] \
      || command -v clickhouse >/dev/null; then
    return
  fi
  log "installing Debian's clickhouse-server (apt-get)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
}

ensure_venv() {
  local python=${PYTHON:-python3}
  if [ ! -x .venv/bin/python ]; then
    log "creating .venv with $($python --version)"
    "$python" -m venv .venv
  fi
  local stamp=.venv/.shadowflow-installed
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    log "installing shadowflow and its dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[dev,temporal]'
    touch "$stamp"
  fi
}

job=${1:-}
[ $# -gt 0 ] && shift
case "$job" in
  demo)  ensure_clickhouse; ensure_venv; exec .venv/bin/shadowflow demo "$@" ;;
  test)  ensure_clickhouse; ensure_venv; exec .venv/bin/python -m pytest "$@" ;;
  bench)
    ensure_clickhouse; ensure_venv
    names=("$@"); [ ${#names[@]} -gt 0 ] || names=(codec sink first_path load mirror forecast prediction_route reservation_latency memory)
    for name in "${names[@]}"; do .venv/bin/python "bench/bench_${name}.py"; done ;;
  *) echo "usage: bash infra/run.sh demo|test|bench [ARGS...]" >&2; exit 2 ;;
esac
