#!/usr/bin/env bash
# Remove what this project's molecule runs left, and say what went: containers and networks carrying
# this project's label, and molecule's state of this project's scenarios.
#   scripts/clean-molecule.sh                    every scenario under molecule/ (make clean, make molecule)
#   scripts/clean-molecule.sh default            one scenario (make demo-down)
#   scripts/clean-molecule.sh --stale default    only if its state and its containers disagree (make demo)
# Molecule believes its state file alone: when it says "created" and a container is gone or stopped
# (docker rm, a reboot, an engine restart), it skips create and every later step fails. A container
# started again since has lost its /run, and Pebble in it has a new root, so the certificates it
# issued no longer verify. So --stale asks Docker, and on any disagreement removes the scenario's
# containers and state: the next `molecule create` starts afresh. Nothing without the label and no
# other project's molecule state is touched.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

label=org.bookmarks-stack.molecule=true
stale_only=0
scenarios=()
for arg in "$@"; do
  case "$arg" in
    --stale) stale_only=1 ;;
    -*) echo "usage: $0 [--stale] [scenario ...]" >&2; exit 2 ;;
    *) scenarios+=("$arg") ;;
  esac
done
all=0
if [ ${#scenarios[@]} -eq 0 ]; then
  all=1
  for f in molecule/*/molecule.yml; do scenarios+=("$(basename "$(dirname "$f")")"); done
fi

say() { printf '[clean] %s\n' "$*"; }
words() { tr '\n' ' ' | sed 's/ $//'; }
removed=0

engine=1
if ! timeout 10 docker info >/dev/null 2>&1; then
  engine=0
  say "no Docker engine answers: containers and networks left as they are (stopped, if any);" \
    "run this again once it answers (make setup starts it)"
fi

state_dir() {
  # Where the pinned molecule (26.10, requirements.txt) keeps scenario $1's state, as its
  # Scenario.ephemeral_directory computes it: ${ANSIBLE_HOME:-~/.ansible}/tmp/
  # molecule.<4 characters of the hash of the project directory's name>.<scenario>.
  # scripts/test-demo-recovery.sh checks that molecule writes there.
  python3 - "$1" <<'PY'
import base64
import hashlib
import os
import sys
from pathlib import Path

if os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY"):
    print(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
else:
    project = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.getcwd())).name
    tag = base64.urlsafe_b64encode(hashlib.sha256(project.encode()).digest()).decode()[:4]
    home = Path(os.environ.get("ANSIBLE_HOME", "~/.ansible")).expanduser()
    print(home / "tmp" / f"molecule.{tag}.{sys.argv[1].replace('/', '--')}")
PY
}

containers_of() {
  # Platforms are named bm-<scenario>-<host> (.config/molecule/config.yml, molecule/cluster).
  [ $engine -eq 1 ] || return 0
  docker ps -a --filter "label=$label" --format '{{.Names}}' | grep "^bm-$1-" || true
}

networks_of() {
  [ $engine -eq 1 ] || return 0
  docker network ls --filter "label=$label" --format '{{.Name}}' | grep -E "^bm-$1(-|$)" || true
}

# Why the scenario's state and its containers disagree (nothing when they agree).
disagreement() {
  local scenario=$1 dir names instance name state running finished
  dir=$(state_dir "$scenario")
  names=$(containers_of "$scenario")
  if ! grep -qx 'created: true' "$dir/state.yml" 2>/dev/null; then
    # Not created as far as molecule knows: any container is left from an interrupted run.
    [ -z "$names" ] || echo "molecule has not created it, yet these exist: $(words <<<"$names")"
    return 0
  fi
  [ $engine -eq 1 ] || { echo "no Docker engine answers"; return 0; }
  # The scenario's config as molecule rendered it for the create step names its containers.
  instance=$(sed -n "s/^ *name: \(bm-$scenario-[^ ]*\)\$/\1/p" "$dir/molecule.yml" 2>/dev/null)
  [ -n "$instance" ] || { echo "molecule says created but names no container"; return 0; }
  # Every container's disagreement, so one pass names them all.
  for name in $instance; do
    if ! state=$(docker container inspect --format '{{.State.Running}} {{.State.FinishedAt}}' "$name" 2>/dev/null)
    then
      echo "molecule says created, but container $name is gone"
      continue
    fi
    read -r running finished <<<"$state"
    if [ "$running" != true ]; then
      echo "molecule says created, but container $name is stopped"
    elif [ "$finished" != 0001-01-01T00:00:00Z ]; then
      # Stopped once since it was made: /run is empty again, Pebble has a new root, and the
      # certificates it issued before no longer verify.
      echo "molecule says created, but container $name was stopped and started again since"
    fi
  done
}

remove_scenario() {
  local scenario=$1 dir names networks
  names=$(containers_of "$scenario")
  if [ -n "$names" ]; then
    say "$scenario: removing containers $(words <<<"$names")"
    # shellcheck disable=SC2086
    docker rm -f $names >/dev/null
    removed=1
  fi
  networks=$(networks_of "$scenario")
  if [ -n "$networks" ]; then
    say "$scenario: removing networks $(words <<<"$networks")"
    # shellcheck disable=SC2086
    docker network rm $networks >/dev/null
    removed=1
  fi
  dir=$(state_dir "$scenario")
  if [ -e "$dir" ]; then
    say "$scenario: removing molecule's state $dir"
    rm -rf "$dir"
    removed=1
  fi
}

for scenario in "${scenarios[@]}"; do
  if [ $stale_only -eq 1 ]; then
    why=$(disagreement "$scenario")
    [ -n "$why" ] || continue
    while read -r line; do say "$scenario: $line"; done <<<"$why"
    say "$scenario: starting it afresh"
  fi
  remove_scenario "$scenario"
done

if [ $all -eq 1 ] && [ $stale_only -eq 0 ] && [ $engine -eq 1 ]; then
  # Anything else with the label (a scenario since renamed or removed).
  names=$(docker ps -aq --filter "label=$label")
  if [ -n "$names" ]; then
    say "removing other labelled containers: $(docker ps -a --filter "label=$label" --format '{{.Names}}' | words)"
    # shellcheck disable=SC2086
    docker rm -f $names >/dev/null
    removed=1
  fi
  networks=$(docker network ls -q --filter "label=$label")
  if [ -n "$networks" ]; then
    say "removing other labelled networks: $(docker network ls --filter "label=$label" --format '{{.Name}}' | words)"
    # shellcheck disable=SC2086
    docker network rm $networks >/dev/null
    removed=1
  fi
fi
if [ $removed -eq 0 ] && [ $stale_only -eq 0 ]; then
  say "nothing left by molecule ($(words <<<"${scenarios[*]}"))"
fi
