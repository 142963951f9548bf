#!/usr/bin/env bash
# Throwaway Debian VMs under qemu, reached the way servers are: SSH as the sudo user `debian` on a
# port forwarded from 127.0.0.1, with a real kernel, resolver and reboots. Each VM boots from a
# copy-on-write overlay of the image scripts/build-vm-image.sh makes (built here when missing).
#   scripts/vm.sh up NAME [--suite bookworm|trixie] [--mem MiB]   boot NAME, write its inventory
#   scripts/vm.sh down NAME|--all                                 power off and remove
#   scripts/vm.sh ssh NAME [command ...]                          a shell or a command as `debian`
#   scripts/vm.sh reboot NAME                                     reboot the guest, wait for boot
#   scripts/vm.sh status [NAME]                                   what is up, on which ports
#   scripts/vm.sh guide NAME                                      the README's commands for NAME
# State lives in ${VM_STATE_DIR:-.cache/vm}/NAME/: disk.qcow2 (the overlay), console.log (serial),
# ports.env (VM_SSH_PORT, VM_HTTP_PORT, VM_HTTPS_PORT, VM_PID, ...) and inventory.yml (NAME in the
# groups web and db, as an all-in-one host). Guest ports 22, 80 and 443 are forwarded from free
# ports on 127.0.0.1 only. `down --all` also stops a qemu whose directory was deleted (make clean).
# KVM guests hang on some machines where /dev/kvm exists, so KVM is used only after a timed trial
# boot passed; its verdict is cached in the image directory (delete `accel` there to try again).
# BM_VM_ACCEL=tcg|kvm forces one. VM_BOOT_TIMEOUT (s, default 600) bounds a boot, VM_STOP_TIMEOUT
# (s, default 60) a graceful power-off before qemu is killed (0: kill at once).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=${VM_STATE_DIR:-$repo/.cache/vm}
case "$state" in /*) ;; *) state=$repo/$state ;; esac
images=${IMAGE_WORKDIR:-/var/tmp/bookmarks-stack-images}/vm
key=$images/id_ed25519
boot_timeout=${VM_BOOT_TIMEOUT:-600}
stop_timeout=${VM_STOP_TIMEOUT:-60}
kvm_trial_timeout=60

say() { printf '[vm] %s\n' "$*"; }
die() { say "$*" >&2; exit 1; }
usage() { sed -n '/^#   scripts/s/^#   //p' "${BASH_SOURCE[0]}" | sed 's/^/usage: /' >&2; exit 2; }

valid_name() { [[ $1 =~ ^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$ ]] || die "bad VM name '$1' (a-z, 0-9, -: it becomes the hostname)"; }

ssh_opts() {
  # $1: SSH port. Each VM makes its own host keys, so there is nothing to pin them to.
  printf '%s\n' -i "$key" -p "$1" -o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=10 \
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
}

guest_ssh() {
  # guest_ssh PORT command...: run a command in the guest as debian.
  local port=$1 opts
  shift
  mapfile -t opts < <(ssh_opts "$port")
  # shellcheck disable=SC2029 # the command is the caller's, for the guest's shell
  ssh "${opts[@]}" debian@127.0.0.1 "$@"
}

guest_ssh_within() {
  # guest_ssh_within SECONDS PORT command...: the same, given up after SECONDS (a guest that
  # accepts the connection but is too slow to answer must not stall a wait loop).
  local seconds=$1 port=$2 opts
  shift 2
  mapfile -t opts < <(ssh_opts "$port")
  timeout "$seconds" ssh "${opts[@]}" debian@127.0.0.1 "$@" </dev/null
}

qemu_alive() {
  # qemu_alive DIR: the qemu that DIR's ports.env names still runs (and is that qemu, not a reused pid).
  local dir=$1 pid
  pid=$(sed -n 's/^VM_PID=//p' "$dir/ports.env" 2>/dev/null) || return 1
  [ -n "$pid" ] && grep -qsaF -- "$dir/qemu.pid" "/proc/$pid/cmdline"
}

vm_pid() { sed -n 's/^VM_PID=//p' "$1/ports.env"; }

load_env() {
  # load_env NAME: NAME's ports.env into VM_* variables, or a clear error when NAME is not up.
  local dir=$state/$1
  [ -f "$dir/ports.env" ] || die "$1 is not up (no $dir/ports.env); start it with: scripts/vm.sh up $1"
  # shellcheck source=/dev/null
  . "$dir/ports.env"
  qemu_alive "$dir" || die "$1's qemu (pid $VM_PID) is gone; scripts/vm.sh down $1 clears it"
}

qmp() {
  # qmp DIR COMMAND: one QMP command on DIR's monitor socket.
  python3 - "$1/qmp.sock" "$2" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
f = s.makefile("rw")
f.readline()  # the greeting
for command in ("qmp_capabilities", sys.argv[2]):
    f.write(json.dumps({"execute": command}) + "\n")
    f.flush()
    while not {"return", "error"} & json.loads(f.readline()).keys():
        pass
PY
}

free_ports() {
  # Three ports free on 127.0.0.1 right now; qemu binds them next (a clash makes it fail, and
  # launch tries again with new ones).
  python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))'
}

launch() {
  # launch DIR NAME SUITE ACCEL MEM: a fresh overlay in DIR and qemu daemonized on it; writes
  # DIR/ports.env. Fails (leaving DIR to the caller) when qemu does not start.
  local dir=$1 name=$2 suite=$3 accel=$4 mem=$5 attempt ssh_port http_port https_port accel_args
  [ ${#dir} -le 90 ] || die "state directory path too long for qemu's monitor socket: $dir (set VM_STATE_DIR shorter)"
  rm -f "$dir/disk.qcow2" "$dir/console.log" "$dir/qmp.sock" "$dir/qemu.pid"
  qemu-img create -q -f qcow2 -b "$images/$suite.qcow2" -F qcow2 "$dir/disk.qcow2"
  case "$accel" in
    # qemu's default CPU model under KVM too: -cpu host aborts on some hosts (an MSR it cannot set).
    kvm) accel_args=(-accel kvm) ;;
    *) accel_args=(-accel tcg) ;;
  esac
  for attempt in 1 2 3; do
    read -r ssh_port http_port https_port < <(free_ports)
    # cache=unsafe: the overlay is thrown away, so the guest's many fsyncs (dpkg's) need not
    # reach the host's disk. No -no-reboot: a guest reboot keeps this qemu process.
    if qemu-system-x86_64 -name "$name" "${accel_args[@]}" -m "$mem" -smp 2 \
        -kernel "$images/$suite.vmlinuz" -initrd "$images/$suite.initrd" \
        -append "root=/dev/vda rw console=ttyS0 systemd.hostname=$name" \
        -drive "file=$dir/disk.qcow2,if=virtio,format=qcow2,cache=unsafe,discard=unmap" \
        -netdev "user,id=net0,ipv6=off,hostfwd=tcp:127.0.0.1:$ssh_port-:22,hostfwd=tcp:127.0.0.1:$http_port-:80,hostfwd=tcp:127.0.0.1:$https_port-:443" \
        -device virtio-net-pci,netdev=net0 -device virtio-rng-pci \
        -display none -serial "file:$dir/console.log" \
        -qmp "unix:$dir/qmp.sock,server=on,wait=off" \
        -pidfile "$dir/qemu.pid" -daemonize 2>"$dir/qemu.log"; then
      cat >"$dir/ports.env" <<ENV
VM_NAME=$name
VM_SUITE=$suite
VM_ACCEL=$accel
VM_MEM=$mem
VM_SSH_PORT=$ssh_port
VM_HTTP_PORT=$http_port
VM_HTTPS_PORT=$https_port
VM_PID=$(cat "$dir/qemu.pid")
ENV
      return 0
    fi
    grep -q 'host forwarding' "$dir/qemu.log" || break
    say "a port was taken before qemu bound it (attempt $attempt); trying other ports"
  done
  say "qemu did not start:" >&2
  cat "$dir/qemu.log" >&2
  return 1
}

wait_ssh() {
  # wait_ssh DIR SECONDS: until SSH as debian works; fails when qemu dies or time runs out.
  local dir=$1 deadline=$((SECONDS + $2)) port
  port=$(sed -n 's/^VM_SSH_PORT=//p' "$dir/ports.env")
  until guest_ssh_within 20 "$port" true 2>/dev/null; do
    qemu_alive "$dir" || { say "qemu exited during boot" >&2; return 1; }
    [ $SECONDS -lt "$deadline" ] || return 1
    sleep 1
  done
}

wait_booted() {
  # wait_booted DIR SECONDS: until systemd says the boot finished; `degraded` (a failed unit) is
  # a finished boot too, and the failed units are shown.
  local dir=$1 port verdict
  port=$(sed -n 's/^VM_SSH_PORT=//p' "$dir/ports.env")
  verdict=$(guest_ssh_within "$2" "$port" sudo -n systemctl is-system-running --wait || true)
  case "$verdict" in
    running) ;;
    degraded)
      say "boot finished degraded; failed units:"
      guest_ssh_within 30 "$port" systemctl --failed --no-legend | sed 's/^/[vm]   /' ;;
    *) say "boot did not finish (systemctl is-system-running: '${verdict:-no answer}')" >&2; return 1 ;;
  esac
}

stop_dirs() {
  # stop_dirs DIR...: ask every guest to power off (ACPI), wait for them together, kill what is
  # left after VM_STOP_TIMEOUT, and remove the directories.
  local dir pid deadline=$((SECONDS + stop_timeout))
  for dir in "$@"; do
    if qemu_alive "$dir" && [ "$stop_timeout" -gt 0 ]; then
      qmp "$dir" system_powerdown 2>/dev/null || say "no answer on $dir/qmp.sock; it will be killed"
    fi
  done
  for dir in "$@"; do
    while qemu_alive "$dir" && [ $SECONDS -lt $deadline ]; do sleep 1; done
    if qemu_alive "$dir"; then
      pid=$(vm_pid "$dir")
      [ "$stop_timeout" -eq 0 ] || say "$(basename "$dir") did not power off within $stop_timeout s; killing qemu (pid $pid)"
      kill "$pid" 2>/dev/null || true
      for _ in 1 2 3 4 5; do qemu_alive "$dir" || break; sleep 1; done
      if qemu_alive "$dir"; then kill -9 "$pid" 2>/dev/null || true; sleep 1; fi
    fi
    rm -rf --one-file-system "$dir"
    say "$(basename "$dir") is down"
  done
}

choose_accel() {
  # Sets $accel: BM_VM_ACCEL if given, else the cached verdict of a KVM trial boot, else the trial.
  case "${BM_VM_ACCEL:-}" in
    tcg|kvm) accel=$BM_VM_ACCEL; return 0 ;;
    '') ;;
    *) die "BM_VM_ACCEL must be tcg or kvm (is '$BM_VM_ACCEL')" ;;
  esac
  if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then accel=tcg; return 0; fi
  local verdict=$images/accel suite=$1 dir started outcome
  exec 8>"$images/.accel.lock"
  flock 8
  if [ -s "$verdict" ]; then
    accel=$(head -n 1 "$verdict")
    exec 8>&-
    return 0
  fi
  # /dev/kvm being there is not enough: boot the image with KVM and see it answer SSH in time.
  dir=$state/kvm-trial
  say "trying KVM: a trial boot, at most $kvm_trial_timeout s (the verdict is kept in $verdict)"
  mkdir -p "$dir"
  started=$SECONDS
  accel=tcg
  if ! launch "$dir" kvm-trial "$suite" kvm 1024 >/dev/null 2>&1; then
    outcome="qemu did not start: $(grep -v '^qemu-system-x86_64: warning' "$dir/qemu.log" | head -n 1)"
  elif wait_ssh "$dir" "$kvm_trial_timeout" 2>/dev/null; then
    accel=kvm
    outcome="SSH login after $((SECONDS - started)) s"
  else
    outcome="no SSH login within $kvm_trial_timeout s ($(wc -l <"$dir/console.log") console lines)"
  fi
  stop_timeout=0 stop_dirs "$dir" >/dev/null
  printf '%s\n# KVM trial boot, %s on %s: %s\n' "$accel" "$(date -u +%FT%TZ)" "$(hostname)" "$outcome" >"$verdict"
  say "KVM trial: $outcome; using $accel"
  exec 8>&-
}

cmd_up() {
  local name='' suite=bookworm mem=2048
  while [ $# -gt 0 ]; do
    case "$1" in
      --suite) suite=${2:?--suite needs a value}; shift 2 ;;
      --mem) mem=${2:?--mem needs a value}; shift 2 ;;
      -*) usage ;;
      *) [ -z "$name" ] || usage; name=$1; shift ;;
    esac
  done
  [ -n "$name" ] || usage
  valid_name "$name"
  case "$suite" in bookworm|trixie) ;; *) die "--suite is bookworm or trixie" ;; esac
  [[ $mem =~ ^[0-9]+$ ]] || die "--mem is in MiB"
  local dir=$state/$name started accel to_ssh
  mkdir -p "$state"
  exec 7>"$state/.$name.lock"
  flock -n 7 || die "another command is working on $name"
  if [ -f "$dir/ports.env" ] && qemu_alive "$dir"; then
    say "$name is already up"
    print_up "$name"
    return 0
  fi
  rm -rf --one-file-system "$dir"

  "$repo/scripts/build-vm-image.sh" "$suite" || die "no $suite image to boot"
  choose_accel "$suite"

  mkdir -p "$dir"
  # A failed boot leaves nothing: no qemu, no directory (its console log is shown first).
  # shellcheck disable=SC2064 # $dir is fixed now; the function's locals are gone at exit
  trap "stop_failed '$dir'" EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  started=$SECONDS
  launch "$dir" "$name" "$suite" "$accel" "$mem"
  say "booting $name ($suite, $accel, $mem MiB); console: $dir/console.log"
  if ! wait_ssh "$dir" "$boot_timeout"; then
    say "no SSH login on $name after $((SECONDS - started)) s" >&2
    exit 1
  fi
  to_ssh=$((SECONDS - started))
  wait_booted "$dir" "$((boot_timeout - to_ssh))"
  printf 'VM_SSH_SECONDS=%s\nVM_BOOT_SECONDS=%s\n' "$to_ssh" "$((SECONDS - started))" >>"$dir/ports.env"
  write_inventory "$name"
  trap - EXIT INT TERM
  say "$name is up: SSH after $to_ssh s, boot finished after $((SECONDS - started)) s ($accel; load average $(cut -d' ' -f1-3 /proc/loadavg))"
  print_up "$name"
}

stop_failed() {
  local dir=$1
  [ -d "$dir" ] || return 0
  if [ -s "$dir/console.log" ]; then
    say "last lines of $(basename "$dir")'s console:" >&2
    tail -n 25 "$dir/console.log" | tr -d '\r' | sed 's/^/[vm]   /' >&2
  fi
  stop_timeout=0 stop_dirs "$dir" >/dev/null
}

write_inventory() {
  local name=$1
  # shellcheck source=/dev/null
  . "$state/$name/ports.env"
  cat >"$state/$name/inventory.yml" <<INV
---
# The VM $name (scripts/vm.sh up $name), an all-in-one host like molecule/default/hosts.yml, reached
# as a cloud server is: SSH as the sudo user debian. The playbooks set become themselves.
all:
  hosts:
    $name:
      ansible_host: 127.0.0.1
      ansible_port: $VM_SSH_PORT
      ansible_user: debian
      ansible_ssh_private_key_file: $key
      # Its host keys are made at its first boot: nothing to pin them to (Mitogen reads this one).
      ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
      ansible_host_key_checking: false
  children:
    web:
      hosts:
        $name:
    db:
      hosts:
        $name:
INV
}

print_up() {
  local name=$1
  # shellcheck source=/dev/null
  . "$state/$name/ports.env"
  say "  inventory: $state/$name/inventory.yml"
  say "  ports:     ssh 127.0.0.1:$VM_SSH_PORT, http 127.0.0.1:$VM_HTTP_PORT, https 127.0.0.1:$VM_HTTPS_PORT (qemu pid $VM_PID)"
  say "  ssh in:    scripts/vm.sh ssh $name"
  say "             (or: ssh -i $key -p $VM_SSH_PORT -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null debian@127.0.0.1)"
}

orphans() {
  # qemu processes started from this state directory whose directory is gone (removed by hand or
  # by `make clean`): nothing else can stop them.
  local pid pidfile
  for pid in $(pgrep -x qemu-system-x86 || true); do
    pidfile=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -A1 -x -- -pidfile | tail -n 1) || continue
    case "$pidfile" in "$state"/*/qemu.pid) [ -d "${pidfile%/qemu.pid}" ] || echo "$pid" ;; esac
  done
}

cmd_down() {
  [ $# -eq 1 ] || usage
  local dirs=() dir pid
  if [ "$1" = --all ]; then
    for pid in $(orphans); do
      say "killing qemu $pid, whose directory under $state is gone"
      kill "$pid" 2>/dev/null || true
    done
    for dir in "$state"/*/; do
      [ -d "$dir" ] && dirs+=("${dir%/}")
    done
    [ ${#dirs[@]} -gt 0 ] || { say "no VM is up"; return 0; }
  else
    valid_name "$1"
    [ -d "$state/$1" ] || { say "$1 is not up"; return 0; }
    dirs=("$state/$1")
  fi
  stop_dirs "${dirs[@]}"
}

cmd_ssh() {
  [ $# -ge 1 ] || usage
  valid_name "$1"
  load_env "$1"
  shift
  guest_ssh "$VM_SSH_PORT" "$@"
}

cmd_reboot() {
  [ $# -eq 1 ] || usage
  valid_name "$1"
  load_env "$1"
  local name=$1 dir=$state/$1 old_boot started
  old_boot=$(guest_ssh_within 60 "$VM_SSH_PORT" cat /proc/sys/kernel/random/boot_id)
  started=$SECONDS
  say "rebooting $name"
  guest_ssh_within 30 "$VM_SSH_PORT" sudo -n systemctl reboot || true
  # Back means a login into a new boot: the old sshd may answer for a moment after the request.
  local deadline=$((SECONDS + boot_timeout)) boot=''
  while :; do
    boot=$(guest_ssh_within 20 "$VM_SSH_PORT" cat /proc/sys/kernel/random/boot_id 2>/dev/null || true)
    [ -z "$boot" ] || [ "$boot" = "$old_boot" ] || break
    qemu_alive "$dir" || die "qemu exited during the reboot (console: $dir/console.log)"
    [ $SECONDS -lt $deadline ] || die "no SSH login into a new boot of $name after $boot_timeout s"
    sleep 1
  done
  local to_ssh=$((SECONDS - started))
  wait_booted "$dir" "$((boot_timeout - to_ssh))"
  say "$name rebooted: SSH after $to_ssh s, boot finished after $((SECONDS - started)) s (load average $(cut -d' ' -f1-3 /proc/loadavg))"
}

cmd_status() {
  local names=() dir n pid
  if [ $# -eq 1 ]; then
    valid_name "$1"
    names=("$1")
  else
    for dir in "$state"/*/; do [ -d "$dir" ] && names+=("$(basename "$dir")"); done
  fi
  for pid in $(orphans); do say "qemu $pid runs without its directory under $state; scripts/vm.sh down --all stops it"; done
  [ ${#names[@]} -gt 0 ] || { say "no VM is up"; return 0; }
  printf '%-16s %-8s %-9s %-5s %-6s %-6s %-6s %s\n' NAME STATE SUITE ACCEL SSH HTTP HTTPS PID
  for n in "${names[@]}"; do
    dir=$state/$n
    if [ ! -f "$dir/ports.env" ]; then
      printf '%-16s %s\n' "$n" "$([ -d "$dir" ] && echo starting || echo down)"
      continue
    fi
    (
      # shellcheck source=/dev/null
      . "$dir/ports.env"
      printf '%-16s %-8s %-9s %-5s %-6s %-6s %-6s %s\n' "$n" "$(qemu_alive "$dir" && echo up || echo dead)" \
        "$VM_SUITE" "$VM_ACCEL" "$VM_SSH_PORT" "$VM_HTTP_PORT" "$VM_HTTPS_PORT" "$VM_PID"
    )
  done
  [ $# -eq 0 ] || [ -f "$state/$1/ports.env" ]
}

cmd_guide() {
  [ $# -eq 1 ] || usage
  valid_name "$1"
  load_env "$1"
  local inv=inventories/vm rel_state=${state#"$repo"/}
  cat <<GUIDE

Practise the README's "Using it on your servers" on $1 (run from $repo). The VM has no
public name, so Certbot stays off and nginx keeps its self-signed certificate:
  python3 -m venv .venv && .venv/bin/pip install -r requirements.txt
  .venv/bin/ansible-galaxy collection install -r requirements.yml
  . .venv/bin/activate                 # ansible-vault and ansible-playbook from the venv
  mkdir -p $inv && cp -r inventories/production/group_vars $inv/ && cp $rel_state/$1/inventory.yml $inv/hosts.yml
  printf -- '---\\ncertbot_enabled: false\\n' >$inv/group_vars/all/vm.yml
  ansible-vault create --vault-id vm@prompt $inv/group_vars/all/vault.yml   # once; it stays
  #   vault_app_secret_key: <python3 -c 'import secrets; print(secrets.token_urlsafe(48))'>
  #   vault_app_database_password: <another random value>
  ansible-playbook -i $inv --vault-id vm@prompt playbooks/site.yml
(The VM is emulated when KVM is not there: about 20 min. ANSIBLE_STRATEGY=mitogen_linear in front,
the README's speed switch, halves it.)
Then the README's other commands with -i $inv --vault-id vm@prompt (deploy.yml, rollback.yml, ...), and:
  curl -k --resolve bookmarks.example.com:$VM_HTTPS_PORT:127.0.0.1 https://bookmarks.example.com:$VM_HTTPS_PORT/health/ready
GUIDE
  printf '  %-30s # %s\n' "scripts/vm.sh ssh $1" "a shell as debian (sudo without a password)" \
    "scripts/vm.sh reboot $1" "reboot it and wait until the boot finished" \
    "scripts/vm.sh down $1" "power it off and remove it ($inv stays)"
}

[ $# -ge 1 ] || usage
command=$1
shift
case "$command" in
  up) cmd_up "$@" ;;
  down) cmd_down "$@" ;;
  ssh) cmd_ssh "$@" ;;
  reboot) cmd_reboot "$@" ;;
  status) cmd_status "$@" ;;
  guide) cmd_guide "$@" ;;
  *) usage ;;
esac
