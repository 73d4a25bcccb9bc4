#!/usr/bin/env bash
# A virtualenv with a real Label Studio server, for the tests in tests/annotation. Label Studio
# pins redis<5.3 (and Django and friends), which the project venv cannot share, so it lives in its
# own venv, outside the repository:
#
#   scripts/label_studio_venv.sh        create or update it; prints its path on the last line
#
# ACTIVEKD_LS_VENV     where (default ~/.cache/activekd/label-studio-venv)
# ACTIVEKD_LS_VERSION  the label-studio release (default below)
#
# Idempotent: the venv counts as complete only once its marker file (.label-studio-version) holds
# the pinned version, written after a successful install and import check; a missing marker (an
# interrupted install) or another version rebuilds the venv from scratch. The full pip output goes
# to $VENV.log; progress lines go to stderr, the venv path alone to stdout.
set -euo pipefail

VERSION=${ACTIVEKD_LS_VERSION:-1.23.2}
VENV=${ACTIVEKD_LS_VENV:-$HOME/.cache/activekd/label-studio-venv}
MARKER=$VENV/.label-studio-version
LOG=$VENV.log
PYTHON=${PYTHON:-python3}  # the interpreter the Makefile (scripts/setup.sh) builds .venv with
START=$(date +%s)

say() { echo "label-studio-venv: $*" >&2; }

if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$VERSION" ] && [ -x "$VENV/bin/label-studio" ]; then
  say "label-studio $VERSION ready"
  echo "$VENV"
  exit 0
fi

run() {
  echo "== $(date '+%F %T') $*" >>"$LOG"
  local rc=0
  "$@" >>"$LOG" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    say "FAILED (exit $rc) after $(($(date +%s) - START)) s: $*"
    echo "---- last 30 lines of $LOG ----" >&2
    grep -v "^WARNING: Location '.*' is ignored" "$LOG" | tail -n 30 >&2
    exit "$rc"
  fi
}

mkdir -p "$(dirname "$VENV")"
: >"$LOG"
if [ -e "$VENV" ]; then
  say "rebuilding $VENV (marker: $(cat "$MARKER" 2>/dev/null || echo none), want $VERSION)"
  rm -rf "$VENV"
fi
say "creating $VENV ($("$PYTHON" --version 2>&1)); log: $LOG"
run "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --no-input --progress-bar off --disable-pip-version-check)
say "upgrading pip"
run "${PIP[@]}" --upgrade pip
say "installing label-studio==$VERSION (a few minutes: ~200 MB of wheels)"
# PIP_CONSTRAINT= : the machine-wide pip constraints (e.g. torch caps) have nothing to do with it
PIP_CONSTRAINT= run "${PIP[@]}" "label-studio==$VERSION"
say "checking the install"
run "$VENV/bin/python" -m pip check
# (not `label-studio --version`: it prints the version and then starts a server on :8080)
run "$VENV/bin/python" -c "import label_studio, sys; v = label_studio.__version__; print(v); sys.exit(v != '$VERSION')"
echo "$VERSION" >"$MARKER"
say "label-studio $VERSION installed in $(($(date +%s) - START)) s, $(du -sh "$VENV" | cut -f1)"
echo "$VENV"
