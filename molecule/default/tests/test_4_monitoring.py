"""Alerts on the all-in-one host (also in `monitor`) reach a webhook: app stopped, backup failed.

The webhook receiver is a tiny HTTP server started in the container as a transient systemd unit;
delivery is Alertmanager's real one. The scenario's group_vars shorten the scrape and evaluation
interval (5 s) and Alertmanager's group_wait/group_interval (5 s/10 s); the rules' `for:` durations
are production's. Tests poll with generous deadlines and assert no wall time.
"""

from __future__ import annotations

import json
import shlex
import time

import pytest
from prometheus_api import every_target_up, poll, query

RECEIVER_UNIT = "test-alert-receiver"
RECEIVER_LOG = "/var/tmp/test-alerts.jsonl"
RECEIVER_PORT = 9099  # group_vars/all/vars.yml: monitor_alert_webhook_url
BACKUP_UNIT = "postgresql-backup.service"
BACKUP_DIR = "/var/backups/postgresql"

# Appends each POSTed notification to RECEIVER_LOG, one JSON document a line.
RECEIVER = f"""
import http.server
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open("{RECEIVER_LOG}", "ab") as log:
            log.write(body.replace(b"\\n", b" ") + b"\\n")
        self.send_response(200)
        self.end_headers()
http.server.HTTPServer(("127.0.0.1", {RECEIVER_PORT}), Receiver).serve_forever()
"""


def notifications(host) -> list[dict]:
    out = host.run(f"cat {RECEIVER_LOG} 2>/dev/null").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def delivered(host, alertname: str, status: str, /, **labels: str) -> list[dict]:
    """The alerts the receiver got with this name, status and labels."""
    return [
        alert
        for note in notifications(host)
        for alert in note["alerts"]
        if alert["labels"].get("alertname") == alertname
        and alert["status"] == status
        and all(alert["labels"].get(k) == v for k, v in labels.items())
    ]


@pytest.fixture(scope="module")
def receiver(host):
    host.run(f"systemctl stop {RECEIVER_UNIT}; rm -f {RECEIVER_LOG}")
    host.run_expect(
        [0],
        f"systemd-run --unit={RECEIVER_UNIT} --property=Type=simple "
        f"/usr/bin/python3 -c {shlex.quote(RECEIVER)}",
    )
    poll(
        lambda: host.socket(f"tcp://127.0.0.1:{RECEIVER_PORT}").is_listening,
        30,
        "the test receiver listens",
        every=1,
    )
    yield
    host.run(f"systemctl stop {RECEIVER_UNIT}")


def test_every_target_is_still_up_after_the_limited_runs(host):
    """The deploys and rollbacks of test_2 ran with --limit and no fact cache: the hosts outside
    the run (the other platform's, a monitor host too) must stay in the socket's allow list."""
    targets = poll(lambda: every_target_up(host), 120, "every target up")
    # This host's Prometheus scrapes both platforms' apps (both hosts are in `monitor`).
    assert len({t["labels"]["instance"] for t in targets if t["labels"]["job"] == "app"}) == 2


def test_stopping_the_app_fires_target_down_at_the_webhook_and_starting_it_resolves(
    host, hostname, receiver
):
    # The socket too: systemd would start the service again for Prometheus's next scrape.
    host.run_expect([0], "systemctl stop bookmarks.socket bookmarks.service")
    try:
        poll(
            lambda: delivered(host, "TargetDown", "firing", job="app", host=hostname),
            300,
            "TargetDown for the app delivered to the webhook",
            every=5,
        )
    finally:
        host.run_expect([0], "systemctl start bookmarks.socket bookmarks.service")
    poll(
        lambda: delivered(host, "TargetDown", "resolved", job="app", host=hostname),
        300,
        "TargetDown for the app resolved at the webhook",
        every=5,
    )


def test_a_successful_backup_exports_its_time(host):
    host.run_expect([0], f"systemctl start {BACKUP_UNIT}")
    result = poll(
        lambda: query(host, f'backup_last_success_timestamp_seconds{{unit="{BACKUP_UNIT}"}}'),
        120,
        "the backup's success time in Prometheus",
    )
    assert float(result[0]["value"][1]) > time.time() - 3600


def test_a_failed_backup_fires_the_backup_alert_at_the_webhook(host, receiver):
    mode = host.check_output(f"stat -c %a {BACKUP_DIR}")
    # The backup's user may no longer write its directory: pg_dump fails, the unit fails.
    host.run_expect([0], f"chmod 0555 {BACKUP_DIR}")
    try:
        assert host.run(f"systemctl start {BACKUP_UNIT}").rc != 0
        poll(
            lambda: delivered(host, "BackupFailed", "firing", name=BACKUP_UNIT),
            300,
            "BackupFailed delivered to the webhook",
            every=5,
        )
    finally:
        host.run_expect([0], f"chmod {mode} {BACKUP_DIR}")
        host.run(f"systemctl reset-failed {BACKUP_UNIT}")
