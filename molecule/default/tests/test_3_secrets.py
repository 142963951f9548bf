"""No vault value appears in the molecule/Ansible output or in the host's logs.

The values are read without running Ansible (which would log them) and never printed on failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from ansible.constants import DEFAULT_VAULT_ID_MATCH
from ansible.parsing.vault import VaultLib, VaultSecret
from conftest import ANSIBLE_LOG_PATH

SCENARIO = Path(__file__).parents[1]


# Runs on the host: reads the secrets from the env file (root only) and counts where they occur in
# the journal and in log and release files; prints only counts and file names.
FIND_SECRETS = r"""
import pathlib, re, subprocess, urllib.parse
env = pathlib.Path("/etc/bookmarks/bookmarks.env").read_text()
found = dict(re.findall(r'^(SECRET_KEY|DATABASE_URL)="(.*)"$', env, re.M))
password = re.search(r"://[^:/@]+:([^@]+)@", found["DATABASE_URL"]).group(1)
values = [found["SECRET_KEY"], found["DATABASE_URL"], urllib.parse.unquote(password)]
journal = subprocess.run(
    ["journalctl", "--no-pager", "-o", "cat"], capture_output=True, text=True
).stdout
hits = [f"journal:{i}" for i, v in enumerate(values) if v in journal]
for root in ("/var/log", "/srv/bookmarks", "/tmp"):
    for path in pathlib.Path(root).rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits += [f"{path}:{i}" for i, v in enumerate(values) if v.encode() in data]
print(len(values), " ".join(hits))
"""


@pytest.fixture(scope="module")
def vault_values() -> list[str]:
    # The VM's run (tests/vm/run.sh) makes its own vault; molecule's is the scenario's.
    password_file = Path(
        os.environ.get("BM_VAULT_PASSWORD_FILE", SCENARIO / "vault-password.test-only")
    )
    vault_file = Path(os.environ.get("BM_VAULT_FILE", SCENARIO / "group_vars/all/vault.yml"))
    password = password_file.read_bytes().strip()
    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(password))])
    data = yaml.safe_load(vault.decrypt(vault_file.read_bytes()))
    values = [str(v) for k, v in data.items() if k.startswith("vault_")]
    assert len(values) == 2
    assert all(len(v) >= 16 for v in values)
    return values


def test_ansible_output_never_shows_a_secret(vault_values):
    # Covers the converge, the idempotence run and the playbooks the release tests ran.
    log = Path(ANSIBLE_LOG_PATH or Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ansible.log")
    text = log.read_text()
    assert "Write the environment file" in text, "the log should cover the converge that wrote it"
    leaked = [i for i, value in enumerate(vault_values) if value in text]
    assert leaked == [], f"vault values number {leaked} appear in {log}"


def test_host_logs_never_show_a_secret(host):
    out = host.check_output("python3 -c %s", FIND_SECRETS)
    count, _, hits = out.partition(" ")
    assert count == "3"
    assert hits.strip() == "", f"secrets found in: {hits}"
