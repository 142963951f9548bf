#!/usr/bin/env bash
# `make demo`: the whole stack (site.yml) in a systemd container that stands in for a Debian 13 VM,
# with a certificate from Pebble, a real ACME server running beside it. Prints the URL and a
# working curl example. The container keeps running until `make demo-down`.
# Works from whatever an earlier run left: an existing demo is converged again; one whose container
# was removed, stopped or restarted (docker rm, a reboot, an engine restart) is created afresh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
host=bm-default-trixie
domain=bookmarks.test
root_ca=.cache/demo/pebble-root.pem

say() { printf '[demo] %s\n' "$*"; }

up() {
  # Molecule trusts its state file; the containers may have gone or stopped since.
  scripts/clean-molecule.sh --stale default
  molecule create -s default
  molecule converge -s default -- --limit "$host"
  port=$(docker port "$host" 443/tcp | sed -n 's/^127\.0\.0\.1:\([0-9]*\)$/\1/p' | head -n 1)
  mkdir -p "$(dirname "$root_ca")"
  # Pebble issues under a root it makes at start; fetch it so curl on this machine can verify.
  docker exec "$host" curl -sSf --cacert /etc/pebble/ca.pem https://127.0.0.1:15000/roots/0 >"$root_ca"
}

# The printed commands' check, from this machine (curl's exit status; 0 when curl is missing).
answers() {
  command -v curl >/dev/null 2>&1 || return 0
  curl -sSf -o /dev/null --max-time 20 --cacert "$root_ca" --resolve "$domain:$port:127.0.0.1" \
    "https://$domain:$port/health/ready"
}

up
status=0
answers || status=$?
if [ $status -eq 60 ]; then
  # The certificate is not from the Pebble running now: the container was started again since it
  # was made (Pebble makes a new root at every start). A new container gets a new certificate.
  say "the demo's certificate is not from the running Pebble (was its container restarted?): creating it afresh"
  scripts/clean-molecule.sh default
  up
  status=0
  answers || status=$?
fi
if [ $status -ne 0 ]; then
  say "the stack does not answer https://$domain:$port/health/ready from this machine (curl exit $status)" >&2
  exit 1
fi
token=$(docker exec "$host" bookmarks-manage create-user demo 2>/dev/null) ||
  { say "bookmarks-manage create-user demo failed in $host" >&2; exit 1; }
curl_demo="curl --cacert $root_ca --resolve $domain:$port:127.0.0.1"

cat <<MSG

The stack is up: nginx + Certbot (Pebble) TLS, gunicorn under systemd, PostgreSQL, in $host.
  URL:     https://$domain:$port/  (published on 127.0.0.1 only; $domain is resolved by --resolve)
  Index:   $curl_demo https://$domain:$port/
  Ready:   $curl_demo https://$domain:$port/health/ready
  Status:  docker exec $host curl -s --unix-socket /run/bookmarks/gunicorn.sock http://localhost/_status   (nginx serves /_status to loopback only)
  API:     TOKEN=$token
           $curl_demo \\
             -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
             -d '{"url": "https://example.org", "title": "Example", "tags": ["demo"]}' \\
             https://$domain:$port/api/bookmarks
  Inside:  docker exec -it $host bash   (releases in /srv/bookmarks, env in /etc/bookmarks)
  Deploy / roll back / list releases: see README.md; tear down with: make demo-down
  Run make demo again at any time (after a reboot too): it converges or recreates what is needed.
MSG
