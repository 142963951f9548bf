"""Helpers of the postgresql scenario: SQL on a target, the app's login, and ansible-playbook runs.

Molecule runs these tests with the environment it gives Ansible (ANSIBLE_CONFIG, the TEST-ONLY
vault password file, MOLECULE_INVENTORY_FILE), so a test can run the project's playbooks against
the same inventory the way an operator would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from testinfra.utils.ansible_runner import AnsibleRunner

PROJECT_DIR = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
SCENARIO_DIR = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
# The inventory directory, not only the generated file: hosts.yml adds the `db` group there.
INVENTORY_DIR = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
GROUP_VARS_DIR = SCENARIO_DIR / "inventory" / "group_vars"
APP_DB = "bookmarks"
APP_USER = "bookmarks"
BACKUP_DIR = "/var/backups/postgresql"


def group_vars(group: str) -> dict:
    """Plain (non-vault) variables the scenario's inventory gives a group."""
    return yaml.safe_load((GROUP_VARS_DIR / group / "vars.yml").read_text())


def run_playbook(
    playbook: Path,
    *args: str,
    extra_vars: dict | None = None,
    inventory: Path = INVENTORY_DIR,
    env: dict | None = None,
):
    """Run ansible-playbook against the scenario's inventory; return the finished process."""
    command = ["ansible-playbook", "-i", str(inventory), str(playbook), *args]
    if extra_vars is not None:
        command += ["-e", json.dumps(extra_vars)]
    env = {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PY_COLORS": "0",
        **(env or {}),
    }
    return subprocess.run(command, capture_output=True, text=True, check=False, env=env)


def said(run) -> str:
    """What a run printed, on stdout or stderr (failures go to stderr under molecule's settings),
    as one line: YAML's line folding and quote doubling ('app''s') undone."""
    return " ".join((run.stdout + run.stderr).replace("''", "'").split())


def recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP counters of an ansible-playbook run, per host."""
    counters: dict[str, dict[str, int]] = {}
    for line in output.split("PLAY RECAP", 1)[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(ok=.*)$", line.strip())
        if match:
            pairs = (item.split("=") for item in match.group(2).split())
            counters[match.group(1)] = {key: int(value) for key, value in pairs}
    return counters


def sql(host, query: str, db: str = APP_DB) -> str:
    """Run a query as the postgres superuser over the local socket; return its plain output."""
    result = host.run("runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d %s -c %s", db, query)
    assert result.rc == 0, f"{query}: {result.stderr}"
    return result.stdout.strip()


@dataclass(frozen=True)
class Login:
    """Outcome of a login; it leaves out the command line, which carries the password."""

    rc: int
    stdout: str
    stderr: str


def app_login(host, password: str, address: str = "127.0.0.1") -> Login:
    """Log in as the app's role over TCP (as the app does) and ask who we are."""
    result = host.run(
        "PGPASSWORD=%s PGCONNECT_TIMEOUT=5 psql -XAtq -h %s -U %s -d %s -c 'SELECT current_user'",
        password,
        address,
        APP_USER,
        APP_DB,
    )
    return Login(result.rc, result.stdout.strip(), result.stderr)


def cluster_unit(host) -> str:
    """The cluster's systemd unit, from the version the host runs."""
    major = sql(host, "SHOW server_version_num", db="postgres")[:-4]
    return f"postgresql@{major}-main.service"


@pytest.fixture(scope="session")
def app_password() -> str:
    """The app role's TEST-ONLY password, decrypted from the scenario's vault file."""

    class VaultLoader(yaml.SafeLoader):
        pass

    VaultLoader.add_constructor("!vault", lambda loader, node: loader.construct_scalar(node))
    vault = yaml.load(  # noqa: S506 - SafeLoader plus a constructor that returns the raw text
        (GROUP_VARS_DIR / "db" / "vault.yml").read_text(), Loader=VaultLoader
    )
    decrypted = subprocess.run(
        ["ansible-vault", "decrypt", "--output", "-"],  # password file from the environment
        input=vault["vault_postgresql_app_password"],
        capture_output=True,
        text=True,
        check=True,
    )
    return decrypted.stdout


@pytest.fixture(scope="session")
def db_hosts() -> dict:
    """Every host of the `db` group by name, for tests that act on all of them at once."""
    runner = AnsibleRunner(str(INVENTORY_DIR))
    return {name: runner.get_host(name) for name in runner.get_hosts("db")}


def own_address(host) -> str:
    """The host's IPv4 address on its default route: a non-loopback address of its own."""
    return host.interface.default("inet").addresses[0]
