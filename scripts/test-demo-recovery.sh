#!/usr/bin/env bash
# `make test`'s check that `make demo` recovers when molecule's state and the demo's containers
# disagree: a container removed behind molecule's back (docker rm -f), one stopped (a reboot, an
# engine restart) or started again since (docker restart), and containers without molecule's state
# (a create interrupted before molecule wrote it).
# Each case runs what scripts/demo.sh runs before it converges: `scripts/clean-molecule.sh --stale
# default`, then `molecule create -s default`, here without the prepare step (a base config that
# leaves it out) and without a converge. Molecule creates three times: from nothing, after the
# reconciliation of a removed container, and after that of a stopped one; the other cases end where
# the first began (no containers, no state). Leaves nothing behind.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scenario=default
host=bm-default-trixie
tmp=$(mktemp -d /tmp/bm-demo-recovery.XXXXXX)
trap 'scripts/clean-molecule.sh "$scenario" >/dev/null; rm -rf "$tmp"' EXIT

say() { printf '[recovery] %s\n' "$*"; }
fail() { printf '[recovery] FAILED: %s\n' "$*" >&2; exit 1; }

printf -- '---\nscenario:\n  create_sequence: [create]\n' >"$tmp/create-only.yml"

reconcile() { scripts/clean-molecule.sh --stale "$scenario" | tee "$tmp/reconcile.log"; }

create() {
  # -c replaces molecule's discovery of the shared config, so both are named.
  if ! molecule -c .config/molecule/config.yml -c "$tmp/create-only.yml" \
      create -s "$scenario" >"$tmp/create.log" 2>&1; then
    tail -n 30 "$tmp/create.log" >&2
    fail "molecule create -s $scenario"
  fi
}

running() { [ "$(docker container inspect --format '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }
id_of() { docker container inspect --format '{{.Id}}' "$1"; }
# A container named $1 runs, and it is not the one whose id was $2.
replaced() { running "$1" && [ "$(id_of "$1")" != "$2" ]; }
# The reconciliation left neither containers nor state (molecule create then starts from nothing).
gone() {
  [ -z "$(docker ps -aq --filter "label=org.bookmarks-stack.molecule=true" --filter "name=^bm-$scenario-")" ] ||
    fail "containers of $scenario are left after the reconciliation"
  [ ! -e "$state" ] || fail "molecule's state $state is left after the reconciliation"
}

say "from nothing: molecule creates $host"
scripts/clean-molecule.sh "$scenario" >/dev/null
create
running "$host" || fail "$host is not running after molecule create"
reconcile
[ ! -s "$tmp/reconcile.log" ] || fail "state and containers agree, yet the reconciliation removed something"
running "$host" || fail "$host is not running after a reconciliation that had nothing to do"

say "$host removed behind molecule's back (docker rm -f)"
docker rm -f "$host" >/dev/null
reconcile
grep -q "container $host is gone" "$tmp/reconcile.log" || fail "the missing container went unnoticed"
state=$(sed -n "s/^\[clean\] $scenario: removing molecule's state //p" "$tmp/reconcile.log")
[ -n "$state" ] || fail "the reconciliation removed no molecule state"
create
running "$host" || fail "molecule create did not bring back $host (its state still said created)"
# What make clean and the reconciliation remove is where the pinned molecule keeps its state.
grep -qx 'created: true' "$state/state.yml" || fail "molecule keeps its state elsewhere than $state"

say "$host stopped (a reboot, an engine restart)"
stopped=$(id_of "$host")
docker stop --time 1 "$host" >/dev/null
reconcile
grep -q "container $host is stopped" "$tmp/reconcile.log" || fail "the stopped container went unnoticed"
create
replaced "$host" "$stopped" || fail "$host is not a new, running container"

say "$host stopped and started again (docker restart): removed with molecule's state"
docker restart --time 1 "$host" >/dev/null
reconcile
grep -q "container $host was stopped and started again" "$tmp/reconcile.log" ||
  fail "the restarted container went unnoticed"
gone

say "a container without molecule's state (a create interrupted with Ctrl-C): removed"
docker container create --label "org.bookmarks-stack.molecule=true" --name "$host" \
  "${BM_IMAGE_PREFIX:-bookmarks-stack/debian-systemd}:trixie" >/dev/null
reconcile
grep -q "molecule has not created it, yet these exist: $host" "$tmp/reconcile.log" ||
  fail "the unclaimed container went unnoticed"
gone

say "make demo-down with nothing up: succeeds and says so"
scripts/clean-molecule.sh "$scenario" | grep -q "nothing left" || fail "demo-down did not say nothing was left"
say "all cases recovered"
