#!/usr/bin/env bash
# Run one named step of `make`, printing when it starts and how long it took, so slow steps show.
#   scripts/step.sh "name of the step" command [args...]
set -uo pipefail
name=$1; shift
printf '\n==> %s\n' "$name"
start=$(date +%s)
"$@"
rc=$?
secs=$(( $(date +%s) - start ))
if [ $rc -eq 0 ]; then
  printf '==> %s: done in %dm%02ds\n' "$name" $((secs / 60)) $((secs % 60))
else
  printf '==> %s: FAILED (exit %d) after %dm%02ds\n' "$name" $rc $((secs / 60)) $((secs % 60)) >&2
fi
exit $rc
