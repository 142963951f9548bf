#!/usr/bin/env bash
# The real-VM run (tests/vm/README.md): a Debian 12 VM reached over SSH as the sudo user `debian`,
# converged with the README's commands and the repository's ansible.cfg, then checked: idempotence,
# check mode, PrivateUsers=, the whole-stack tests, a reboot. The VM is removed at the end unless
# BM_VM_KEEP=1. Arguments go to every pytest run (e.g. -x).
#
# Ansible runs with the speed switch on (README.md, "Faster runs"): Mitogen, which keeps one Python
# in the VM instead of starting one and compiling Ansible's module code for every task. Under
# emulation that costs 2.5-3 s a task (0.1-0.2 s with Mitogen), which is why: site.yml takes about
# 10 min with it and 21 min without. The switch's plain side, Ansible's own strategy, runs here too:
# every rollback of the whole-stack tests below runs without it (BM_VM_STRATEGY=linear runs
# everything without it). The molecule scenarios run all of it without it.
#
# BM_VM_BENCH=1 (`make vm-bench`) runs bench/ops_bench.py against the converged VM instead of the
# checks (BM_VM_BENCH_RUNS runs each, default 3).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
export PATH=$repo/.venv/bin:$PATH
name=${BM_VM_NAME:-vmtest}
host=vm-bookworm
here=tests/vm
state=.cache/vm/$name
inv=.cache/vm-inventories/$name
password_file=$here/vault-password.test-only
vault_id=vm@$password_file
step=scripts/step.sh

cleanup() {
  if [ "${BM_VM_KEEP:-0}" = 1 ]; then
    echo "[vm-test] the VM stays up (BM_VM_KEEP=1): scripts/vm.sh ssh $name; remove it with scripts/vm.sh down $name"
  else
    scripts/vm.sh down "$name" || true
  fi
}
trap cleanup EXIT

# A VM of an interrupted run would hold the name.
scripts/vm.sh down "$name" >/dev/null 2>&1 || true
$step "boot the VM" scripts/vm.sh up "$name" --suite bookworm
# shellcheck source=/dev/null
. "$state/ports.env"

# README: cp -r inventories/production inventories/mine, then edit hosts.yml and vars.yml.
rm -rf "$inv"
mkdir -p "$(dirname "$inv")"
cp -r inventories/production "$inv"
key=$(sed -n 's/^ *ansible_ssh_private_key_file: *//p' "$state/inventory.yml" | head -n 1 | tr -d "\"'")
cat >"$inv/hosts.yml" <<YAML
---
# The VM of tests/vm/run.sh: all-in-one, reached over SSH on 127.0.0.1 as the sudo user debian.
all:
  children:
    web:
      hosts:
        $host:
          ansible_host: 127.0.0.1
          ansible_port: $VM_SSH_PORT
          ansible_user: debian
          ansible_ssh_private_key_file: $key
          # Every VM makes its own host keys at first boot; there is nothing to pin them to.
          ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
          ansible_host_key_checking: false
    db:
      hosts:
        $host:
YAML
# As in inventories/production, the all-in-one host watches itself, with BM_VM_FULL=1: the monitor
# group's converge costs about 5 min more under emulation, and the default scenario runs it.
if [ "${BM_VM_FULL:-0}" = 1 ]; then
  printf '    monitor:\n      hosts:\n        %s:\n' "$host" >>"$inv/hosts.yml"
fi
cp "$here/vm-test-only.yml" "$inv/group_vars/all/"
# README: ansible-vault create --vault-id mine@prompt .../vault.yml, with fresh random values.
umask 077
python3 - >"$inv/group_vars/all/vault.yml" <<'PY'
import secrets
print("---")
print(f"vault_app_secret_key: {secrets.token_urlsafe(48)}")
print(f"vault_app_database_password: {secrets.token_urlsafe(24)}")
PY
ansible-vault encrypt --vault-id "$vault_id" "$inv/group_vars/all/vault.yml" >/dev/null
umask 022

export ANSIBLE_STRATEGY=${BM_VM_STRATEGY:-mitogen_linear}
# Everything Ansible prints in this run goes to one log, which the secrets test reads.
export ANSIBLE_LOG_PATH=$repo/$state/ansible.log
rm -f "$ANSIBLE_LOG_PATH"
# The fact cache is the repository's (ansible.cfg); a VM of an earlier run had other facts.
rm -f ".cache/facts/$host"

$step "test fixtures in the VM (Pebble)" \
  ansible-playbook -i "$inv" --vault-id "$vault_id" "$here/prepare.yml"
$step "site.yml over SSH as debian (the README's command)" \
  ansible-playbook -i "$inv" --vault-id "$vault_id" playbooks/site.yml

# `make vm-bench`: issue 20's operations benchmark against the converged VM instead of the tests.
if [ "${BM_VM_BENCH:-0}" = 1 ]; then
  $step "bench/ops_bench.py against the VM" \
    python bench/ops_bench.py --inventory "$inv" --host "$host" \
    --vault-password-file "$password_file" --strategy "$ANSIBLE_STRATEGY" --runs "${BM_VM_BENCH_RUNS:-3}"
  exit 0
fi

export BM_INVENTORY=$repo/$inv BM_VAULT_ID=$vault_id BM_VM_NAME=$name
export BM_VAULT_FILE=$repo/$inv/group_vars/all/vault.yml BM_VAULT_PASSWORD_FILE=$repo/$password_file
# testinfra reads the inventory (ansible-inventory decrypts it) and then talks SSH itself, with sudo.
export ANSIBLE_VAULT_PASSWORD_FILE=$repo/$password_file
pytest_args=(-p no:cacheprovider -v --hosts="ansible://$host" --ansible-inventory="$inv" --sudo "$@")
# `make vm-test` (a step of `make test`) runs on this Debian 12 server what the default scenario runs
# on Debian 13 in a container, and what only a real server can fail: become over SSH, check mode
# and a second converge, the unit's user namespace and score, the stack, the API with a CLI token,
# a deploy and a rollback, a broken release rolled back, kill -9, no secret in any log, and a
# reboot. BM_VM_FULL=1 (`make vm-test-full`) adds the monitor group and its tests, the rest of the
# release tests and the platform checks.
stack=(test_1_stack.py)
if [ "${BM_VM_FULL:-0}" = 1 ]; then
  stack=(test_0_monitoring.py test_1_stack.py test_2_releases.py test_platform.py)
else
  releases=molecule/default/tests/test_2_releases.py
  stack+=("$releases::test_deploy_then_rollback_switch_the_live_release"
    "$releases::test_broken_release_is_rolled_back_and_the_site_keeps_answering"
    "$releases::test_killed_master_is_restarted_by_systemd")
fi
stack+=(test_3_secrets.py)
$step "VM checks: a second converge, check mode, the unit's sandbox" \
  pytest "${pytest_args[@]}" "$here/test_1_converged.py"
# Left to the default scenario, where a run costs seconds instead of minutes: the load test (hey
# under emulation measures the emulator), pruning, release ordering, the cached-plan and
# unknown-host refusals, and a check run with a switch turned off (check mode runs above).
deselect="not under_load and not prunes and not ordered and not replays and not refuses and not switch_off"
# The plain side of the speed switch over SSH: every rollback runs without Mitogen (a deploy with
# it costs a minute less here).
$step "whole-stack tests over SSH (rollbacks without Mitogen)" \
  env BM_PLAIN_PLAYBOOKS="${BM_PLAIN_PLAYBOOKS-rollback.yml}" \
  pytest "${pytest_args[@]}" -k "$deselect" "${stack[@]/#test_/molecule/default/tests/test_}"
$step "reboot: every service comes back with its data" \
  pytest "${pytest_args[@]}" "$here/test_9_reboot.py"
