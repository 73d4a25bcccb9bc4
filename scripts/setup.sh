#!/usr/bin/env bash
# The quiet half of `make setup` and `make lock`. Each step prints one short line; the full apt and
# pip output is appended to $LOG. A failing step prints the last lines of $LOG, its path, and exits
# non-zero (so `make setup`, and CI's .ci/run, stop there).
#
#   scripts/setup.sh system-deps   Debian packages the tests and the demo use (only the missing ones)
#   scripts/setup.sh venv          $VENV with activekd[$EXTRAS] (editable), pinned by $CONSTRAINTS
#   scripts/setup.sh lock          rewrite constraints.txt from what $VENV has installed
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-all,dev,bench}
CONSTRAINTS=${CONSTRAINTS-constraints.txt}  # empty: resolve pyproject's ranges afresh (before make lock)
LOG=${LOG:-$VENV/setup.log}
TAIL_LINES=${TAIL_LINES:-30}
PY=$VENV/bin/python
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
START=$(date +%s)

say() { echo "setup: $*"; }

# Run a command with all its output appended to $LOG; on failure show the end of the log and stop.
# pip warns once per package about each index location that does not exist on this machine
# ("WARNING: Location 'file:///...' is ignored"): that noise stays in the log, not in the tail.
logged() {
  echo "== $(date '+%F %T') $*" >>"$LOG"
  local rc=0
  "$@" >>"$LOG" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    say "FAILED (exit $rc) after $(($(date +%s) - START)) s: $*"
    echo "---- last $TAIL_LINES lines of $LOG ----"
    grep -v "^WARNING: Location '.*' is ignored" "$LOG" | tail -n "$TAIL_LINES"
    echo "---- full log: $(realpath "$LOG")"
    exit "$rc"
  fi
}

open_log() {
  mkdir -p "$(dirname "$LOG")"
  echo "== $(date '+%F %T') scripts/setup.sh $1 (VENV=$VENV EXTRAS=$EXTRAS)" >>"$LOG"
}

system_deps() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  [ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
  command -v prometheus >/dev/null || missing+=(prometheus)
  [ -f /usr/share/games/fortunes/computers ] || missing+=(fortunes)  # the text set (activekd.data.fortunes)
  [ -f "/usr/lib/$(uname -m)-linux-gnu/libjemalloc.so.2" ] || missing+=(libjemalloc2)  # the services' allocator
  command -v chromium >/dev/null || missing+=(chromium)  # the Label Studio screenshot test (Playwright)
  [ ${#missing[@]} -eq 0 ] && return 0
  open_log system-deps
  say "installing Debian packages: ${missing[*]} (log: $LOG)"
  logged $SUDO apt-get update
  logged $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends --no-upgrade "${missing[@]}"
  say "Debian packages installed in $(($(date +%s) - START)) s"
}

venv() {
  open_log venv
  if [ ! -x "$PY" ]; then
    local version
    version=$(python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
      { say "activekd needs Python >= 3.11; python3 is $version"; exit 1; }
    say "creating $VENV (python $version)"
    logged python3 -m venv "$VENV"
  fi
  local pip=("$PY" -m pip install --no-input --progress-bar off) pinned="pinned by $CONSTRAINTS"
  if [ -n "$CONSTRAINTS" ]; then
    pip+=(-c "$CONSTRAINTS")
  else
    pinned="UNPINNED (CONSTRAINTS is empty)"
  fi
  say "installing activekd[$EXTRAS] (editable), $pinned (log: $LOG)"
  # pip and setuptools first, at their pinned versions: the venv's setuptools builds the wheel in
  # tests/test_packaging.py, and the bundled pip predates the lock.
  logged "${pip[@]}" --upgrade pip setuptools
  logged "${pip[@]}" -e ".[$EXTRAS]"
  logged "$PY" -m pip check
  say "done in $(($(date +%s) - START)) s: $("$PY" -m pip list --format=freeze | wc -l) packages in $VENV"
}

lock() {
  [ -x "$PY" ] || { say "no $VENV: run make setup first"; exit 1; }
  local tmp
  tmp=$(mktemp)
  {
    echo "# Exact versions CI, \`make setup\` and the images install (pip install -c constraints.txt ...)."
    echo "# pyproject.toml declares ranges; this file pins the full resolved set. Regenerate: make lock"
    "$PY" -m pip freeze --all --exclude-editable | LC_ALL=C sort -f
  } >"$tmp"
  : "${CONSTRAINTS:=constraints.txt}"
  if grep -n ' @ ' "$tmp"; then
    rm -f "$tmp"
    say "lock: the lines above are direct references, not versions; install them from an index"
    exit 1
  fi
  mv "$tmp" "$CONSTRAINTS"
  say "wrote $CONSTRAINTS: $(grep -vc '^#' "$CONSTRAINTS") pins from $VENV"
}

case "${1:-}" in
  system-deps) system_deps ;;
  venv) venv ;;
  lock) lock ;;
  *)
    echo "usage: $0 system-deps|venv|lock" >&2
    exit 2
    ;;
esac
