"""Helpers for the cluster checks: named hosts, load through the balancer, our playbooks."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import testinfra

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[3]))
DOMAIN = "bookmarks.test"
LB, WEB1, WEB2, DB = "bm-cluster-lb", "bm-cluster-web1", "bm-cluster-web2", "bm-cluster-db"
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


def address(name: str) -> str:
    facts = node(name).ansible("setup", "gather_subset=!all,network")["ansible_facts"]
    return facts["ansible_default_ipv4"]["address"]


@dataclass
class Load:
    """What hey reported for a run through the balancer."""

    statuses: dict[int, int]
    errors: int
    p99: float
    slowest: float
    text: str

    @property
    def failed(self) -> int:
        return self.errors + sum(n for code, n in self.statuses.items() if code != 200)

    @property
    def total(self) -> int:
        return self.errors + sum(self.statuses.values())


class LoadGenerator:
    """hey on the balancer against https://bookmarks.test/health/ready (nginx, then a web host's
    gunicorn, then PostgreSQL), in a transient systemd unit so it runs while the test works."""

    def __init__(self, unit: str = "bm-load"):
        self.lb = node(LB)
        self.unit = unit
        self.out = f"/var/tmp/{unit}.txt"

    def start(self, concurrency: int = 4, rate_per_worker: int = 50, seconds: int = 900) -> None:
        self.lb.run(f"systemctl stop {self.unit}; systemctl reset-failed {self.unit}")
        self.lb.run_expect(
            [0],
            "systemd-run --unit=%s -p StandardOutput=truncate:%s -p StandardError=journal "
            "hey -z %ss -c %s -q %s -t 10 https://%s/health/ready",
            self.unit,
            self.out,
            str(seconds),
            str(concurrency),
            str(rate_per_worker),
            DOMAIN,
        )
        time.sleep(2)

    def stop(self) -> Load:
        # hey prints its report when interrupted.
        self.lb.run_expect([0], f"systemctl kill -s INT {self.unit}")
        for _ in range(60):
            if self.lb.run(f"systemctl is-active --quiet {self.unit}").rc != 0:
                break
            time.sleep(0.5)
        text = self.lb.file(self.out).content_string
        return parse_hey(text)


def parse_hey(text: str) -> Load:
    statuses = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    errors_part = text.split("Error distribution:")[1] if "Error distribution:" in text else ""
    errors = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", errors_part, re.M))
    p99 = re.search(r"99%+ in ([\d.]+) secs", text)
    slowest = re.search(r"Slowest:\s+([\d.]+) secs", text)
    assert statuses or errors, f"no report from hey:\n{text}"
    return Load(
        statuses,
        errors,
        float(p99.group(1)) if p99 else 0.0,
        float(slowest.group(1)) if slowest else 0.0,
        text,
    )


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
