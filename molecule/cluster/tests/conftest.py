"""Helpers for the cluster checks: named hosts, load through the balancer, our playbooks."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import testinfra

# The load helper is shared with the other scenarios' tests (molecule/shared/hey_load.py).
sys.path.insert(0, str(Path(__file__).parents[2] / "shared"))
from hey_load import LoadGenerator as SharedLoadGenerator  # noqa: E402

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[3]))
DOMAIN = "bookmarks.test"
LB, WEB1, WEB2, DB = "bm-cluster-lb", "bm-cluster-web1", "bm-cluster-web2", "bm-cluster-db"
# The second balancer: the first asks the CA, this one serves a copy of its certificate.
LB2 = "bm-cluster-lb2"
LBS = (LB, LB2)
WEBS = (WEB1, WEB2)
CA_BUNDLE = "/var/tmp/pebble-root.pem"
# testinfra's ansible backend reads the inventory with `ansible-inventory --list`, which prints
# every variable decrypted (vault values too) and Ansible would copy that into ANSIBLE_LOG_PATH.
# Only our playbook runs below write to the scenario's Ansible log.
ANSIBLE_LOG_PATH = os.environ.pop("ANSIBLE_LOG_PATH", None)


def inventory() -> str:
    """Molecule's inventory directory (its hosts plus the scenario's group_vars link)."""
    return str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent)


def node(name: str):
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory())


def run_playbook(playbook: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run one of our playbooks against the whole cluster, as an operator would; return its time."""
    cmd = ["ansible-playbook", "-i", inventory(), str(PROJECT / "playbooks" / playbook), *extra]
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    if ANSIBLE_LOG_PATH:
        env["ANSIBLE_LOG_PATH"] = ANSIBLE_LOG_PATH
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=PROJECT, env=env)
    return done, time.monotonic() - start


def address(name: str, family: int = 4) -> str:
    """The host's address on the scenario's network: IPv4 (its private address), or IPv6."""
    facts = node(name).ansible("setup", "gather_subset=!all,network")["ansible_facts"]
    return facts[f"ansible_default_ipv{family}"]["address"]


class LoadGenerator(SharedLoadGenerator):
    """hey on the balancer (through nginx, then a web host's gunicorn, then PostgreSQL)."""

    def __init__(self, unit: str = "bm-load"):
        super().__init__(node(LB), unit)


@pytest.fixture(scope="session")
def lb():
    lb = node(LB)
    lb.run_expect(
        [0],
        "curl -sSf --cacert /etc/pebble/ca.pem -o %s https://127.0.0.1:15000/roots/0",
        CA_BUNDLE,
    )
    return lb


def curl(host, *args: str) -> str:
    return host.check_output(" ".join(shlex.quote(a) for a in ["curl", "-sS", *args]))
