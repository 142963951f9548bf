#!/usr/bin/env bash
# Benchmark the bookmarks app (gunicorn, shipped config) against a bare-Flask ceiling with wrk.
# Sets up what it needs (wrk from Debian, .venv-app via scripts/test-app.sh's locks, a throwaway
# PostgreSQL), prints one line per scenario and concurrency level, then a JSON summary.
# Loopback only; each measurement is bounded (--duration, default 5 s). Arguments go to
# bench/app-bench.py (e.g. --duration 10 --connections 1,8,32).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv-app"

if ! command -v wrk >/dev/null; then
    echo "==> installing wrk (Debian)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
if ! [[ -x "$VENV/bin/gunicorn" && -x "$VENV/bin/bookmarks" ]]; then
    echo "==> .venv-app missing: run scripts/test-app.sh once first" >&2
    exit 1
fi

# shellcheck source=../app/tools/pgcluster.sh
source "$ROOT/app/tools/pgcluster.sh"
PGTMP=$(mktemp -d /tmp/bookmarks-bench-pg.XXXXXX)
cleanup() {
    pgcluster_stop "$PGTMP"
    rm -rf "$PGTMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
pgcluster_start "$PGTMP"
export DATABASE_URL
"$VENV/bin/python" "$ROOT/bench/app-bench.py" "$@"
