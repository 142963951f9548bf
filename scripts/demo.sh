#!/usr/bin/env bash
# `make demo`: the whole stack (site.yml) in a systemd container that stands in for a Debian 12 VM,
# with a certificate from Pebble, a real ACME server running beside it. Prints the URL and a
# working curl example. The container keeps running until `make demo-down`.
set -euo pipefail
host=bm-default-bookworm
domain=bookmarks.test

molecule create -s default
molecule converge -s default -- --limit "$host"

port=$(docker port "$host" 443/tcp | sed -n 's/^127\.0\.0\.1:\([0-9]*\)$/\1/p' | head -n 1)
mkdir -p .cache/demo
# Pebble issues under a root it makes at start; fetch it so curl on this machine can verify.
docker exec "$host" curl -sSf --cacert /etc/pebble/ca.pem https://127.0.0.1:15000/roots/0 >.cache/demo/pebble-root.pem
token=$(docker exec "$host" bookmarks-manage create-user demo 2>/dev/null)

cat <<MSG

The stack is up: nginx + Certbot (Pebble) TLS, gunicorn under systemd, PostgreSQL, in $host.
  URL:     https://$domain:$port/  (published on 127.0.0.1 only)
  Ready:   curl --cacert .cache/demo/pebble-root.pem --resolve $domain:$port:127.0.0.1 https://$domain:$port/health/ready
  Status:  docker exec $host curl -s --unix-socket /run/bookmarks/gunicorn.sock http://localhost/_status   (nginx serves /_status to loopback only)
  API:     TOKEN=$token
           curl --cacert .cache/demo/pebble-root.pem --resolve $domain:$port:127.0.0.1 \\
             -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
             -d '{"url": "https://example.org", "title": "Example", "tags": ["demo"]}' \\
             https://$domain:$port/api/bookmarks
  Inside:  docker exec -it $host bash   (releases in /srv/bookmarks, env in /etc/bookmarks)
  Deploy / roll back / list releases: see README.md; tear down with: make demo-down
MSG
