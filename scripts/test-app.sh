#!/usr/bin/env bash
# App tests against a real PostgreSQL: lint (ruff check, ruff format --check) and pytest for app/,
# twice: with the fast path on and off.
#
# Sets up what it needs, idempotently, so it works on a fresh Debian 12/13 with python3 and git:
#   - Debian's PostgreSQL server and python3-venv, via apt, only when missing (root needed then);
#   - .venv-app/ at the repository root from app/requirements.lock + app/requirements-dev.lock
#     (hash-checked) and the app itself (editable), redone only when those files change;
#   - a throwaway PostgreSQL cluster in a temporary directory on a free loopback port, removed on
#     exit whatever happens; DATABASE_URL points the tests at it.
# Arguments are passed to pytest (e.g. scripts/test-app.sh -k cache -x).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
APP="$ROOT/app"
VENV="$ROOT/.venv-app"
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.bookmarks-installed"

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    say "installing Debian packages: $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_system_packages() {
    local missing=()
    if ! find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null | grep -q .; then
        missing+=(postgresql)
    fi
    # Debian splits venv/ensurepip out of python3.
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        missing+=(python3-venv)
    fi
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
    fi
}

ensure_venv() {
    local want
    want=$(cat "$APP/requirements.lock" "$APP/requirements-dev.lock" "$APP/pyproject.toml" | sha256sum | cut -d' ' -f1)
    if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys' 2>/dev/null &&
        [[ -f "$STAMP" && $(cat "$STAMP") == "$want" ]]; then
        return 0
    fi
    say "setting up $VENV (app/requirements.lock + app/requirements-dev.lock + app)"
    if ! [[ -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    local pip=("$VENV/bin/python" -m pip --disable-pip-version-check --quiet)
    "${pip[@]}" install --require-hashes -r "$APP/requirements.lock" -r "$APP/requirements-dev.lock"
    # hatchling and editables come from the dev lock: no build isolation, no unpinned downloads.
    "${pip[@]}" install --no-deps --no-build-isolation --editable "$APP"
    echo "$want" >"$STAMP"
}

ensure_system_packages
ensure_venv

# shellcheck source=../app/tools/pgcluster.sh
source "$APP/tools/pgcluster.sh"
PGTMP=$(mktemp -d /tmp/bookmarks-test-pg.XXXXXX)
cleanup() {
    pgcluster_stop "$PGTMP"
    rm -rf "$PGTMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
say "starting a throwaway PostgreSQL ($(basename "$(dirname "$(pgcluster_bindir)")")) in $PGTMP"
pgcluster_start "$PGTMP"
export DATABASE_URL

cd "$APP"
say "ruff check + ruff format --check (app/)"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .

# The whole suite runs twice: with the fast path (the default) and on the plain Flask path it must
# answer exactly like (FASTPATH=off, the reference). Tests of the fast path itself set it on.
say "pytest (app/tests), fast path on (FASTPATH=on)"
FASTPATH=on "$VENV/bin/pytest" "$@"
say "pytest (app/tests), plain Flask path (FASTPATH=off)"
FASTPATH=off "$VENV/bin/pytest" "$@"
