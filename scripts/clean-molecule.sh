#!/usr/bin/env bash
# Remove what an interrupted molecule run of this project left: containers and networks carrying
# this project's label. Nothing without the label (another project's containers) is touched.
set -euo pipefail
label=org.bookmarks-stack.molecule=true
containers=$(docker ps -aq --filter "label=$label")
if [ -n "$containers" ]; then
  echo "[clean] removing leftover molecule containers: $(docker ps -a --filter "label=$label" --format '{{.Names}}' | tr '\n' ' ')"
  # shellcheck disable=SC2086
  docker rm -f $containers >/dev/null
fi
networks=$(docker network ls -q --filter "label=$label")
if [ -n "$networks" ]; then
  echo "[clean] removing leftover molecule networks"
  # shellcheck disable=SC2086
  docker network rm $networks >/dev/null
fi
# Molecule's own state of this project's scenarios would otherwise claim instances that are gone.
rm -rf "${XDG_CACHE_HOME:-$HOME/.cache}/molecule/$(basename "$PWD")"
