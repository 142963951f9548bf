#!/usr/bin/env bash
# promtool for `make lint`, from Debian's own prometheus package, without installing it: the
# package would start a Prometheus server on this machine. `apt-get download` + `dpkg-deb -x` into
# .cache/tools once per pinned version; later calls reuse it.
#   scripts/promtool.sh check rules FILE...   (any promtool arguments)
set -euo pipefail
# Debian 12's version, the one roles/monitor installs on bookworm hosts.
version=${PROMTOOL_DEB_VERSION:-2.42.0+ds-5+deb12u1}
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$root/.cache/tools/prometheus-$version
bin=$dir/usr/bin/promtool
if [ ! -x "$bin" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "[promtool] fetching Debian's prometheus $version (apt-get download, not installed)" >&2
  # _apt cannot write to a private temporary directory; the download is still checked by apt.
  chmod 0755 "$work"
  (cd "$work" && apt-get download -q "prometheus=$version" >/dev/null 2>&1 || apt-get download "prometheus=$version")
  mkdir -p "$dir.tmp"
  dpkg-deb -x "$work"/prometheus_*.deb "$dir.tmp"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
fi
exec "$bin" "$@"
