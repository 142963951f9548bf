#!/usr/bin/env bash
# Make sure a Docker engine answers. Uses a running engine when there is one; otherwise, as root on
# Debian/Ubuntu, installs docker.io and starts dockerd in the background; otherwise explains what to do.
set -euo pipefail

log=${DOCKERD_LOG:-/var/log/bookmarks-stack-dockerd.log}

say() { printf '[docker] %s\n' "$*"; }

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && engine_answers; then
  say "engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  cat >&2 <<MSG
[docker] No Docker engine answers, and this is not root, so nothing was installed.
[docker] Do one of these, then run the command again:
[docker]   - start your engine (for example: sudo systemctl start docker), and make sure your user
[docker]     can use it (sudo usermod -aG docker \$USER, then log in again);
[docker]   - or run this command as root on Debian/Ubuntu, which installs docker.io and starts dockerd.
MSG
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    say "no Docker engine and no apt-get: install Docker for your system, start it, and run again" >&2
    exit 1
  fi
  say "installing docker.io from the distribution"
  export DEBIAN_FRONTEND=noninteractive
  # An install interrupted earlier (Ctrl-C) leaves dpkg half-way, and apt refuses until it is finished.
  dpkg --configure -a
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io iptables ca-certificates >/dev/null
fi

# A systemd-managed host starts the packaged unit; a container or a host without systemd as PID 1
# (like CI sandboxes) runs dockerd directly in the background.
if [ -d /run/systemd/system ] && systemctl start docker 2>/dev/null && engine_answers; then
  say "engine started by systemd"
  exit 0
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
  say "starting dockerd in the background (log: $log)"
  mkdir -p "$(dirname "$log")"
  # In a session of its own: dockerd handles SIGINT, so in make's process group a Ctrl-C of this
  # make run would stop the engine and every container with it.
  nohup setsid dockerd >>"$log" 2>&1 </dev/null &
fi
for _ in $(seq 1 60); do
  if engine_answers; then
    say "engine answers ($(docker version --format '{{.Server.Version}}'))"
    exit 0
  fi
  sleep 1
done
say "dockerd did not answer within 60 s; its log ($log) ends with:" >&2
tail -n 20 "$log" >&2 || true
exit 1
