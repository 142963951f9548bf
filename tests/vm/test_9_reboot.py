"""A reboot of the VM: every service comes back by itself, and so does the data written before."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest
from stack import PROJECT, api

UNITS = ["postgresql.service", "nginx.service", "bookmarks.socket", "certbot.timer"]


@pytest.fixture
def written(host) -> tuple[str, dict]:
    """A token from the CLI and a bookmark made with it, before the reboot."""
    token = host.check_output("bookmarks-manage create-user reboot-%s", uuid.uuid4().hex[:8])
    url = f"https://example.org/reboot/{uuid.uuid4().hex}"
    status, _, created = api(
        host, "POST", "/api/bookmarks", token, {"url": url, "title": "Before the reboot"}
    )
    assert status == 201, created
    return token, created


def test_services_and_data_come_back_after_a_reboot(host, written):
    token, created = written
    boot_id = host.file("/proc/sys/kernel/random/boot_id").content_string
    subprocess.run(
        [str(PROJECT / "scripts" / "vm.sh"), "reboot", os.environ["BM_VM_NAME"]],
        check=True,
        cwd=PROJECT,
    )
    assert host.file("/proc/sys/kernel/random/boot_id").content_string != boot_id
    for unit in UNITS:
        assert host.service(unit).is_enabled, unit
        assert host.service(unit).is_running, unit
    # Socket activation: the first request starts gunicorn.
    status, _, fetched = api(host, "GET", f"/api/bookmarks/{created['id']}", token)
    assert status == 200, fetched
    assert fetched["title"] == "Before the reboot"
    assert host.service("bookmarks.service").is_running
    status, _, ready = api(host, "GET", "/health/ready")
    assert status == 200, ready
