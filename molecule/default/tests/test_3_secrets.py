"""No vault value appears in the molecule/Ansible output or in the host's logs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def vault_values(host) -> list[str]:
    variables = host.ansible.get_variables()
    values = [
        str(variables[name]) for name in ("vault_app_secret_key", "vault_app_database_password")
    ]
    assert all(len(v) >= 16 for v in values)
    return values


def test_ansible_output_never_shows_a_secret(vault_values):
    log = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ansible.log"
    text = log.read_text()
    assert "Write the environment file" in text, "the log should cover the converge that wrote it"
    for value in vault_values:
        assert value not in text


def test_host_logs_never_show_a_secret(host, vault_values):
    for value in vault_values:
        journal = host.run("journalctl --no-pager -o cat | grep -cF -- %s", value)
        assert journal.stdout.strip() == "0"
        files = host.run("grep -rlF -- %s /var/log /srv/bookmarks /tmp", value)
        assert files.stdout.strip() == "", files.stdout
