#!/usr/bin/env bash
# Build the Debian VM images that scripts/vm.sh boots, so the playbooks can be run the way users run
# them: over SSH as the sudo user `debian` (what a Debian cloud image gives), against a real kernel
# that reboots. No image registry is reachable, so each image is a debootstrapped root filesystem
# turned into a qcow2 disk, with the kernel and initramfs beside it for qemu's -kernel/-initrd.
#   scripts/build-vm-image.sh [--rebuild] [suite ...]     (default suite: bookworm; also trixie)
# Writes into ${IMAGE_WORKDIR:-/var/tmp/bookmarks-stack-images}/vm/: <suite>.qcow2, <suite>.vmlinuz,
# <suite>.initrd, and the SSH key pair id_ed25519(.pub) made on this machine, kept beside the images
# so every clone of the repository logs in with it. An image is kept unless --rebuild is given or it
# trusts another key than id_ed25519.pub (<suite>.authorized_key records the key it was built with).
# A flock keeps two builds from racing; a failed build leaves nothing behind, so a re-run starts clean.
set -euo pipefail

mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://security.debian.org/debian-security}
workdir=${IMAGE_WORKDIR:-/var/tmp/bookmarks-stack-images}/vm
disk_size=${VM_IMAGE_SIZE:-4G}
rebuild=0
suites=()
for arg in "$@"; do
  case "$arg" in
    --rebuild) rebuild=1 ;;
    bookworm|trixie) suites+=("$arg") ;;
    *) echo "usage: $0 [--rebuild] [bookworm] [trixie]" >&2; exit 2 ;;
  esac
done
[ ${#suites[@]} -gt 0 ] || suites=(bookworm)

say() { printf '[vm-image] %s\n' "$*"; }
die() { say "$*" >&2; exit 1; }

# What the roles and tests install in a VM. Their .deb files are downloaded into the image's apt
# cache (not installed), because apt inside a TCG guest is 12-15x slower than in a chroot, most of it
# the download over qemu's user-mode network: a converge then only unpacks.
cached_packages=(acl ca-certificates curl tzdata unattended-upgrades apt-listchanges python3
  python3-venv postgresql python3-psycopg2 nginx certbot logrotate pebble openssl hey
  python3-cryptography nftables pgbackrest openssh-client fail2ban python3-systemd)
# The roles install these without recommends; that set is normally inside the one above.
cached_packages_no_recommends=(postgresql python3-psycopg2 prometheus prometheus-alertmanager
  prometheus-node-exporter prometheus-postgres-exporter prometheus-nginx-exporter)
# An image made with other lists is made again (<suite>.packages records the lists it was made with).
package_lists="${cached_packages[*]} / ${cached_packages_no_recommends[*]}"

image_current() {
  local s=$1
  [ -f "$workdir/$s.qcow2" ] && [ -f "$workdir/$s.vmlinuz" ] && [ -f "$workdir/$s.initrd" ] \
    && [ -f "$workdir/id_ed25519" ] && [ -f "$workdir/id_ed25519.pub" ] \
    && cmp -s "$workdir/$s.authorized_key" "$workdir/id_ed25519.pub" \
    && [ "$(cat "$workdir/$s.packages" 2>/dev/null)" = "$package_lists" ]
}

# Tools: qemu to run the images (vm.sh), qemu-img, debootstrap and mkfs.ext4 to make them, ssh.
declare -A tool_package=([qemu-system-x86_64]=qemu-system-x86 [qemu-img]=qemu-utils
  [debootstrap]=debootstrap [ssh]=openssh-client [ssh-keygen]=openssh-client [mkfs.ext4]=e2fsprogs)
missing=()
for tool in "${!tool_package[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${tool_package[$tool]}")
done
if [ ${#missing[@]} -eq 0 ] && [ $rebuild -eq 0 ]; then
  all_current=1
  for s in "${suites[@]}"; do image_current "$s" || all_current=0; done
  # Nothing to do, so nothing that needs root: a user who can read the images may boot them.
  if [ $all_current -eq 1 ]; then
    for s in "${suites[@]}"; do say "$workdir/$s.qcow2 exists, kept (use --rebuild to make it again)"; done
    exit 0
  fi
fi

if [ "$(id -u)" -ne 0 ]; then
  die "building a VM image needs root (debootstrap, apt); run this once as root, e.g. sudo $0 ${*}"
fi
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "missing packages (${missing[*]}) and no apt-get to install them"
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt_install=(apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300)
  "${apt_install[@]}" "${missing[@]}" >/dev/null \
    || { apt-get update -qq -o DPkg::Lock::Timeout=300 && "${apt_install[@]}" "${missing[@]}" >/dev/null; }
fi

mkdir -p "$workdir"
exec 9>"$workdir/.lock"
if ! flock -n 9; then
  say "another build holds $workdir/.lock; waiting for it"
  flock 9
fi

if [ ! -f "$workdir/id_ed25519" ] || [ ! -f "$workdir/id_ed25519.pub" ]; then
  say "making the SSH key pair the images trust: $workdir/id_ed25519"
  rm -f "$workdir/id_ed25519" "$workdir/id_ed25519.pub"
  ssh-keygen -q -t ed25519 -N '' -C "bookmarks-stack-vm@$(hostname)" -f "$workdir/id_ed25519"
fi

# The build in progress; the EXIT trap unmounts and removes it whatever happens.
tmp=
cleanup() {
  [ -n "$tmp" ] || return 0
  local m
  awk -v p="$tmp/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" || true
  done
  rm -rf --one-file-system "$tmp"
  tmp=
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }

build_one() {
  local suite=$1 started=$SECONDS log
  if [ $rebuild -eq 0 ] && image_current "$suite"; then
    say "$workdir/$suite.qcow2 exists, kept (use --rebuild to make it again)"
    return 0
  fi
  tmp=$(mktemp -d "$workdir/$suite.XXXXXX")
  root=$tmp/root
  log=$tmp/build.log
  # mktemp's 0700 would become the mode of the guest's / and lock `debian` out of everything.
  mkdir -m 0755 "$root"

  say "debootstrap $suite (log: $log)"
  if ! debootstrap --variant=minbase \
      --include=systemd,systemd-sysv,dbus,udev,linux-image-cloud-amd64,initramfs-tools,openssh-server,python3,python3-apt,sudo,ca-certificates,iproute2,netbase,procps,iputils-ping,libnss-myhostname \
      "$suite" "$root" "$mirror" >>"$log" 2>&1; then
    say "debootstrap of $suite failed; nothing was written. Last lines of its log:" >&2
    tail -n 15 "$log" >&2
    exit 1
  fi

  say "configuring the guest"
  cat >"$root/etc/apt/sources.list" <<SRC
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
SRC
  # Each VM is named by vm.sh on the kernel command line (systemd.hostname=); libnss-myhostname
  # resolves that name, so sudo does not complain about it.
  echo debian >"$root/etc/hostname"
  printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
  printf '/dev/vda\t/\text4\tdefaults,errors=remount-ro\t0\t1\n' >"$root/etc/fstab"

  # qemu's user-mode network: DHCP on the virtio NIC, slirp's DNS forwarder at 10.0.2.3.
  cat >"$root/etc/systemd/network/20-wired.network" <<'NET'
[Match]
Name=en*

[Network]
DHCP=ipv4
NET
  in_root systemctl enable systemd-networkd.service >>"$log" 2>&1

  # The cloud kernel has the virtio and ext4 drivers as modules: load exactly those at boot.
  printf 'MODULES=list\n' >"$root/etc/initramfs-tools/conf.d/vm.conf"
  printf '%s\n' virtio_pci virtio_blk virtio_net ext4 >>"$root/etc/initramfs-tools/modules"

  # The sudo user a Debian cloud image gives, with the key made on this machine. Its password
  # is `*` (none, but not locked), so key logins pass PAM's account check.
  in_root useradd --create-home --shell /bin/bash debian
  in_root usermod --password '*' debian
  install -d -m 0700 "$root/home/debian/.ssh"
  install -m 0600 "$workdir/id_ed25519.pub" "$root/home/debian/.ssh/authorized_keys"
  in_root chown -R debian:debian /home/debian/.ssh
  install -m 0440 /dev/stdin "$root/etc/sudoers.d/90-debian" <<<'debian ALL=(ALL) NOPASSWD:ALL'
  in_root visudo -cqf /etc/sudoers.d/90-debian
  # No RSA host key: making one takes an emulated CPU a minute or two on a busy host.
  cat >"$root/etc/ssh/sshd_config.d/50-vm.conf" <<'SSHD'
# Keys only, and no root: the way a cloud server is reached.
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
SSHD

  # Clones of one image must differ: host keys are made at first boot, and an empty machine-id
  # (with dbus's copy linked to it) is generated at first boot too.
  rm -f "$root"/etc/ssh/ssh_host_*
  cat >"$root/etc/systemd/system/ssh-host-keys.service" <<'UNIT'
[Unit]
Description=Generate this machine's SSH host keys (the image ships none)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
ExecStart=/usr/bin/ssh-keygen -q -t ecdsa -N '' -f /etc/ssh/ssh_host_ecdsa_key

[Install]
WantedBy=ssh.service
UNIT
  in_root systemctl enable ssh-host-keys.service >>"$log" 2>&1
  : >"$root/etc/machine-id"
  mkdir -p "$root/var/lib/dbus"
  ln -sf /etc/machine-id "$root/var/lib/dbus/machine-id"

  # The daily apt runs take the dpkg lock right when a test (or a first converge) wants it.
  # systemd-firstboot would stop a first boot to ask for a locale and a root password. e2scrub
  # checks LVM volumes, which the VM has none of, for most of a minute of emulated CPU at boot.
  in_root systemctl mask apt-daily.timer apt-daily-upgrade.timer systemd-firstboot.service \
    e2scrub_reap.service e2scrub_all.timer >>"$log" 2>&1

  say "regenerating the initramfs and downloading the packages the roles install"
  mount -t proc proc "$root/proc"
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
  in_root update-initramfs -u -k all >>"$log" 2>&1
  local apt_get=(apt-get -q -o DPkg::Lock::Timeout=300)
  # debootstrap leaves the .debs it installed in the cache: only what the roles need stays there.
  if ! { in_root "${apt_get[@]}" clean && in_root "${apt_get[@]}" update \
      && in_root "${apt_get[@]}" install -y --download-only "${cached_packages[@]}" \
      && in_root "${apt_get[@]}" install -y --download-only --no-install-recommends \
        "${cached_packages_no_recommends[@]}"; } >>"$log" 2>&1; then
    say "apt in the $suite root failed; nothing was written. Last lines of the log:" >&2
    tail -n 15 "$log" >&2
    exit 1
  fi
  umount "$root/proc"
  printf 'nameserver 10.0.2.3\n' >"$root/etc/resolv.conf"
  rm -f "$root"/var/cache/apt/archives/partial/* "$root"/var/log/apt/* "$root/var/log/dpkg.log"
  local debs
  debs="$(find "$root/var/cache/apt/archives" -maxdepth 1 -name '*.deb' | wc -l) .debs, $(du -sh "$root/var/cache/apt/archives" | cut -f1)"

  local kernel initrd
  kernel=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
  initrd=$(find "$root/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n 1)
  if [ -z "$kernel" ] || [ -z "$initrd" ]; then die "no kernel or initramfs in $root/boot"; fi

  say "writing the disk image ($disk_size, ext4)"
  truncate -s "$disk_size" "$tmp/disk.raw"
  mkfs.ext4 -q -F -L root -d "$root" "$tmp/disk.raw" >>"$log" 2>&1
  qemu-img convert -O qcow2 "$tmp/disk.raw" "$tmp/disk.qcow2"
  cp "$kernel" "$tmp/vmlinuz"
  cp "$initrd" "$tmp/initrd"

  # Into place: the kernel files first, the image, and last the key it trusts, which marks it done.
  rm -f "$workdir/$suite.authorized_key" "$workdir/$suite.packages"
  mv "$tmp/vmlinuz" "$workdir/$suite.vmlinuz"
  mv "$tmp/initrd" "$workdir/$suite.initrd"
  mv "$tmp/disk.qcow2" "$workdir/$suite.qcow2"
  printf '%s\n' "$package_lists" >"$workdir/$suite.packages"
  cp "$workdir/id_ed25519.pub" "$workdir/$suite.authorized_key"
  cleanup
  say "$workdir/$suite.qcow2 built in $((SECONDS - started)) s: $(du -h "$workdir/$suite.qcow2" | cut -f1)," \
    "with $debs in its apt cache"
}

for s in "${suites[@]}"; do build_one "$s"; done
