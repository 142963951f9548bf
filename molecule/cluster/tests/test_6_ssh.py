"""sshd after site.yml: keys only, no root login, few attempts, from the base role's drop-in,
wherever openssh-server is installed (the balancers, the db host and the backup host here); hosts
without it gain no sshd."""

from __future__ import annotations

import pytest
from conftest import DB, LB, LB2, LBS, WEB1, WEB2, address, node

DROP_IN = "/etc/ssh/sshd_config.d/50-base.conf"


@pytest.mark.parametrize("name", [*LBS, DB, WEB2])
@pytest.mark.parametrize(
    "setting",
    [
        "passwordauthentication no",
        "kbdinteractiveauthentication no",
        "permitemptypasswords no",
        "permitrootlogin no",
        "maxauthtries 3",
    ],
)
def test_sshd_runs_with_the_hardened_settings(name, setting):
    effective = node(name).check_output("sshd -T").splitlines()
    assert setting in effective


def test_sshd_offers_public_keys_only():
    # A client that would take any method is told the only one left is publickey.
    refused = node(LB).run(
        "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
        "-o PreferredAuthentications=password,keyboard-interactive,publickey "
        f"nobody@{address(LB2)} true"
    )
    assert refused.rc == 255
    assert "Permission denied (publickey)" in refused.stderr, refused.stderr


@pytest.mark.parametrize("name", [WEB1])
def test_hosts_without_sshd_get_neither_sshd_nor_its_drop_in(name):
    host = node(name)
    assert not host.package("openssh-server").is_installed
    assert not host.file(DROP_IN).exists


def test_the_drop_in_is_root_owned_and_not_writable_by_others():
    f = node(LB2).file(DROP_IN)
    assert (f.user, f.group, f.mode) == ("root", "root", 0o644)
