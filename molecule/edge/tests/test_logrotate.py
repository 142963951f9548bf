"""Logrotate: the app keeps writing to the new file after a forced rotation; nginx too."""

import re
import uuid

import pytest
from conftest import curl


@pytest.mark.parametrize("conf", ["/etc/logrotate.d/bookmarks", "/etc/logrotate.d/bookmarks-nginx"])
def test_logrotate_dry_run_is_clean(host, conf):
    cmd = host.run("logrotate -d %s 2>&1", conf)
    assert cmd.rc == 0, cmd.stdout
    assert not re.search(r"^error:", cmd.stdout, re.MULTILINE), cmd.stdout


def test_app_logs_are_rotated_daily_keeping_the_configured_count(host):
    conf = host.file("/etc/logrotate.d/bookmarks").content_string
    for directive in ("daily", "rotate 7", "compress", "delaycompress", "--signal=USR1"):
        assert directive in conf


def test_forced_rotation_leaves_the_app_writing_to_the_new_file(host, pebble_root):
    before, after = f"before-{uuid.uuid4().hex}", f"after-{uuid.uuid4().hex}"
    curl(host, "/api/bookmarks", "-H", f"X-Request-ID: {before}")
    assert before in host.file("/var/log/bookmarks/app.log").content_string
    cmd = host.run("logrotate -f /etc/logrotate.d/bookmarks 2>&1")
    assert cmd.rc == 0, cmd.stdout
    curl(host, "/api/bookmarks", "-H", f"X-Request-ID: {after}")
    current = host.file("/var/log/bookmarks/app.log")
    rotated = host.file("/var/log/bookmarks/app.log.1")
    assert after in current.content_string
    assert before not in current.content_string
    assert before in rotated.content_string
    assert after not in rotated.content_string
    assert current.user == "bookmarks"
    assert current.mode == 0o640


def test_forced_rotation_leaves_nginx_writing_to_the_new_file(host, pebble_root):
    marker = f"nginx-{uuid.uuid4().hex}"
    curl(host, "/health")
    cmd = host.run("logrotate -f /etc/logrotate.d/bookmarks-nginx 2>&1")
    assert cmd.rc == 0, cmd.stdout
    host.run("sleep 1")  # the master reopens its files asynchronously after USR1
    curl(host, "/health", "-H", f"X-Request-ID: {marker}")
    assert marker in host.file("/var/log/nginx/bookmarks/access.log").content_string
    assert marker not in host.file("/var/log/nginx/bookmarks/access.log.1").content_string
