"""Helpers for the whole-stack checks: run our playbooks against one molecule host, call the API."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

# The load helper is shared with the other scenarios' tests (molecule/shared/hey_load.py).
sys.path.insert(0, str(Path(__file__).parents[2] / "shared"))
from hey_load import LoadGenerator  # noqa: E402, F401 (re-exported for the tests)

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[3]))
DOMAIN = "bookmarks.test"
# The root Pebble issues under, fetched from its management API (it changes when Pebble restarts).
CA_BUNDLE = "/var/tmp/pebble-root.pem"
# testinfra's ansible backend reads the inventory with `ansible-inventory --list`, which prints
# every variable decrypted, vault values included, and Ansible copies what it prints into
# ANSIBLE_LOG_PATH. So the test process drops the log path (before any `host` fixture exists), and
# only our playbook runs below write to the scenario's Ansible log, as an operator's runs would.
ANSIBLE_LOG_PATH = os.environ.pop("ANSIBLE_LOG_PATH", None)


# The same tests run against the real VM of tests/vm/run.sh, which names its inventory directory
# and vault id here (as an operator passes them: `-i inventories/mine --vault-id mine@...`).
VM_INVENTORY = os.environ.get("BM_INVENTORY", "")
VM_VAULT_ID = os.environ.get("BM_VAULT_ID", "")


def inventory() -> str:
    """The inventory directory: the VM's, or molecule's (its hosts plus the group_vars link)."""
    return VM_INVENTORY or str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent)


def playbook_command(
    playbook: str, host: str, *extra: str, env: dict[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one of our playbooks, limited to `host`."""
    cmd = [
        "ansible-playbook",
        "-i",
        inventory(),
        *(["--vault-id", VM_VAULT_ID] if VM_VAULT_ID else []),
        str(PROJECT / "playbooks" / playbook),
        "--limit",
        host,
        *extra,
    ]
    # Plain text: molecule forces colour, whose escape codes would split the messages we check.
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", **(env or {})}
    # The VM run names playbooks to run with Ansible's own strategy while the rest use Mitogen.
    if playbook in os.environ.get("BM_PLAIN_PLAYBOOKS", "").split():
        env["ANSIBLE_STRATEGY"] = "linear"
    if ANSIBLE_LOG_PATH:
        env["ANSIBLE_LOG_PATH"] = ANSIBLE_LOG_PATH
    return cmd, env


def run_playbook(
    playbook: str, host: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one of our playbooks, limited to `host`, as an operator would (`env` adds settings)."""
    cmd, env = playbook_command(playbook, host, *extra, env=env)
    return subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=PROJECT, env=env)


def start_playbook(playbook: str, host: str, *extra: str) -> subprocess.Popen[str]:
    """Start one of our playbooks in the background (communicate() gives its output)."""
    cmd, env = playbook_command(playbook, host, *extra)
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=PROJECT, env=env
    )


def api(host, method: str, path: str, token: str | None = None, body: dict | None = None):
    """Call the API through nginx over HTTPS inside the host; return (status, headers, json)."""
    args = ["curl", "-sS", "--max-time", "10", "--cacert", CA_BUNDLE, "-X", method, "-D", "-"]
    if token:
        args += ["-H", f"Authorization: Bearer {token}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data", json.dumps(body)]
    args.append(f"https://{DOMAIN}{path}")
    out = host.check_output(" ".join(shlex.quote(a) for a in args))
    head, _, payload = out.partition("\r\n\r\n")
    status = int(head.split()[1])
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (line.partition(":") for line in head.splitlines()[1:])
    }
    return status, headers, (json.loads(payload) if payload.strip() else None)


def status_of(host) -> dict:
    return api(host, "GET", "/_status")[2]


@pytest.fixture(autouse=True)
def pebble_root(host) -> str:
    host.run_expect(
        [0],
        "curl -sSf --cacert /etc/pebble/ca.pem -o %s https://127.0.0.1:15000/roots/0",
        CA_BUNDLE,
    )
    return CA_BUNDLE


@pytest.fixture
def hostname(host) -> str:
    return host.backend.get_hostname()
