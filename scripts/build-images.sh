#!/usr/bin/env bash
# Build the systemd-booting Debian base images that molecule and `make demo` run on. No registry is
# reachable, so each image is made with debootstrap and `docker import`.
#   scripts/build-images.sh [--rebuild] [suite ...]     (default suites: bookworm trixie)
# An image that exists is kept unless --rebuild is given. A flock keeps two runs from racing; a
# failed debootstrap tags nothing and leaves nothing behind (an interrupted one is removed by the
# next run), so a re-run starts clean.
set -euo pipefail

prefix=${IMAGE_PREFIX:-bookmarks-stack/debian-systemd}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
workdir=${IMAGE_WORKDIR:-/var/tmp/bookmarks-stack-images}
rebuild=0
suites=()
for arg in "$@"; do
  case "$arg" in
    --rebuild) rebuild=1 ;;
    bookworm|trixie) suites+=("$arg") ;;
    *) echo "usage: $0 [--rebuild] [bookworm] [trixie]" >&2; exit 2 ;;
  esac
done
[ ${#suites[@]} -gt 0 ] || suites=(bookworm trixie)

say() { printf '[images] %s\n' "$*"; }

if ! command -v debootstrap >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  else
    echo "[images] debootstrap is missing: install it (sudo apt-get install debootstrap) and run again" >&2
    exit 1
  fi
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "[images] debootstrap needs root to build a root filesystem; run as root or build the images once with sudo" >&2
  exit 1
fi

mkdir -p "$workdir"
exec 9>"$workdir/.lock"
if ! flock -n 9; then
  say "another build holds $workdir/.lock; waiting for it"
  flock 9
fi

remove_root() {
  # Unmount what debootstrap mounted inside (proc, sys) first; never cross into a mount.
  local root=$1
  awk -v r="$root/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r |
    while read -r mnt; do umount -l "$mnt" || true; done
  rm -rf --one-file-system "$root" "$root.log"
}

# What a build interrupted with Ctrl-C (or a reboot) left; the lock says no build runs now.
for stale in "$workdir"/bookworm.?????? "$workdir"/trixie.??????; do
  [ -d "$stale" ] || continue
  say "removing $stale, left by an interrupted build"
  remove_root "$stale"
done

build_one() {
  # Called as `build_one x || status=1`, where set -e does not apply: every step checks itself.
  local suite=$1 tag="$prefix:$1" root
  if [ $rebuild -eq 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
    say "$tag exists, kept (use --rebuild to make it again)"
    return 0
  fi
  local started=$SECONDS
  root=$(mktemp -d "$workdir/$suite.XXXXXX")
  # Whatever happens below, the half-made root filesystem goes away.
  trap 'remove_root "$root"' RETURN
  say "debootstrap $suite into $root"
  if ! debootstrap --variant=minbase \
      --include=systemd,systemd-sysv,dbus,python3,python3-apt,sudo,ca-certificates,iproute2,procps \
      "$suite" "$root" "$mirror" >"$root.log" 2>&1; then
    say "debootstrap of $suite failed; nothing was tagged. Last lines of its log:" >&2
    tail -n 15 "$root.log" >&2
    rm -f "$root.log"
    return 1
  fi
  rm -f "$root.log"
  cat >"$root/etc/apt/sources.list" <<SRC
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://security.debian.org/debian-security $suite-security main
SRC
  # A container has no console to log in on and no udev to wait for.
  chroot "$root" systemctl mask getty@tty1.service console-getty.service \
    systemd-udevd.service systemd-udev-trigger.service systemd-firstboot.service \
    systemd-remount-fs.service sys-kernel-config.mount >/dev/null 2>&1 || true
  : >"$root/etc/machine-id"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  say "importing $tag"
  # (STOPSIGNAL cannot be set by import on every engine: containers get stop_signal when they run.)
  if ! tar -C "$root" -c . | docker import \
      -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' - "$tag" >/dev/null; then
    say "docker import of $suite failed; nothing was tagged" >&2
    return 1
  fi
  say "$tag built in $((SECONDS - started)) s"
}

status=0
for s in "${suites[@]}"; do build_one "$s" || status=1; done
exit $status
