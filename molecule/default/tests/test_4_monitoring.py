"""Alerts on the all-in-one host (also in `monitor`) reach a webhook: app stopped, backup failed,
a certificate about to expire.

The webhook receiver is a tiny HTTP server started in the container as a transient systemd unit;
delivery is Alertmanager's real one. The scenario's group_vars shorten the scrape and evaluation
interval (5 s) and Alertmanager's group_wait/group_interval (5 s/10 s); the rules' `for:` durations
are production's. Tests poll with generous deadlines and assert no wall time.
"""

from __future__ import annotations

import json
import re
import shlex
import time

import pytest
from conftest import api
from prometheus_api import console, every_target_up, poll, query

RECEIVER_UNIT = "test-alert-receiver"
RECEIVER_LOG = "/var/tmp/test-alerts.jsonl"
RECEIVER_PORT = 9099  # group_vars/all/vars.yml: monitor_alert_webhook_url
BACKUP_UNIT = "postgresql-backup.service"
BACKUP_DIR = "/var/backups/postgresql"
# The pgBackRest backups' series (roles/exporters' pgbackrest-backup-metric) and the stanza.
PGBACKREST_UNIT = "pgbackrest-backup@.service"
STANZA = "bookmarks"
# Watched by the certificate check, absent after converge (exporters_certificates_extra).
EXPIRING_CERTIFICATE = "/etc/ssl/alert-test/expiring.pem"
# The operator's overview, roles/monitor's console (README: Monitoring and alerts).
CONSOLE = "stack.html"

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


def table_rows(page: str, table: str) -> list[dict[str, str]]:
    """The rows of one of the console's tables: their data-* attributes and their cells by class."""
    body = re.search(rf'<table id="{table}">(.*?)</table>', page, re.S)
    assert body, f"no table {table!r} in the console"
    rows = []
    for attrs, row in re.findall(r"<tr (data-[^>]*)>(.*?)</tr>", body.group(1), re.S):
        cells = re.findall(r'<td class="([^"]+)">([^<]*)<', row)
        rows.append(
            dict(re.findall(r'data-([a-z]+)="([^"]*)"', attrs))
            | {cls.split()[0]: text.strip() for cls, text in cells}
        )
    return rows


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


# Each platform's Prometheus scrapes both platforms, and so alerts on both: the checks below pick
# this host's alerts by their `host` label (a late delivery of the other's would match otherwise).
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
    # This host's Prometheus scrapes every web host's app (every host is in `monitor`). With one
    # platform there is no host outside a limited run here; the cluster scenario's runs have them.
    web = host.ansible.get_variables()["groups"]["web"]
    apps = {t["labels"]["instance"] for t in targets if t["labels"]["job"] == "app"}
    assert len(apps) == len(web), (apps, web)


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


def newest_pgbackrest_stop(host) -> int:
    """The stop time of the newest backup in the pgBackRest repository, as pgBackRest reports it."""
    info = json.loads(
        host.check_output(f"runuser -u postgres -- pgbackrest --stanza={STANZA} --output=json info")
    )
    return max(backup["timestamp"]["stop"] for stanza in info for backup in stanza["backup"])


def test_a_pgbackrest_backup_exports_the_repositorys_newest_backup_time(host, hostname):
    host.run_expect([0], "systemctl start pgbackrest-backup@diff.service")
    # Each host's Prometheus scrapes both platforms: this host's series, by its `host` label.
    series = f'backup_last_success_timestamp_seconds{{unit="{PGBACKREST_UNIT}", host="{hostname}"}}'
    stop = newest_pgbackrest_stop(host)
    poll(lambda: query(host, f"{series} == {stop}"), 120, "the new backup's time in Prometheus")


def test_a_failed_backup_fires_the_backup_alert_at_the_webhook(host, hostname, receiver):
    mode = host.check_output(f"stat -c %a {BACKUP_DIR}")
    # The backup's user may no longer write its directory: pg_dump fails, the unit fails.
    host.run_expect([0], f"chmod 0555 {BACKUP_DIR}")
    try:
        assert host.run(f"systemctl start {BACKUP_UNIT}").rc != 0
        poll(
            lambda: delivered(host, "BackupFailed", "firing", name=BACKUP_UNIT, host=hostname),
            300,
            "BackupFailed delivered to the webhook",
            every=5,
        )
    finally:
        host.run_expect([0], f"chmod {mode} {BACKUP_DIR}")
        host.run(f"systemctl reset-failed {BACKUP_UNIT}")


def test_a_certificate_expiring_within_14_days_fires_at_the_webhook_and_removing_it_resolves(
    host, hostname, receiver
):
    directory = EXPIRING_CERTIFICATE.rsplit("/", 1)[0]
    host.run_expect([0], f"install -d -m 0755 {directory}")
    try:
        # A real self-signed certificate valid for 7 days (its key is not kept).
        host.run_expect(
            [0],
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 "
            f"-keyout /dev/null -subj /CN=expiring.bookmarks.test -out {EXPIRING_CERTIFICATE}",
        )
        # The hourly check, now rather than within the hour.
        host.run_expect([0], "systemctl start certificate-expiry.service")
        alerts = poll(
            lambda: delivered(
                host, "CertificateExpiresSoon", "firing", path=EXPIRING_CERTIFICATE, host=hostname
            ),
            300,
            "CertificateExpiresSoon for the short-lived certificate delivered to the webhook",
            every=5,
        )
        assert "expires in 6d" in alerts[0]["annotations"]["summary"]
    finally:
        host.run(f"rm -rf {directory}")
        host.run("systemctl start certificate-expiry.service")
    poll(
        lambda: delivered(
            host, "CertificateExpiresSoon", "resolved", path=EXPIRING_CERTIFICATE, host=hostname
        ),
        300,
        "CertificateExpiresSoon resolved at the webhook",
        every=5,
    )


def test_the_stack_console_shows_requests_errors_latency_connections_and_backup_age(host, hostname):
    for _ in range(20):
        assert api(host, "GET", "/health/ready")[0] == 200

    def rendered():
        status, page = console(host, CONSOLE)
        assert status == 200, page
        # Each host's Prometheus scrapes both platforms: this host's rows.
        app, postgresql, backups = (
            [row for row in table_rows(page, table) if row["host"] == hostname]
            for table in ("app", "postgresql", "backups")
        )
        # Rates need two scrapes after the requests above.
        if len(app) != 1 or float(app[0]["rate"]) == 0:
            return None
        return app, postgresql, backups

    app, postgresql, backups = poll(rendered, 120, "the console with this host's requests")
    assert re.fullmatch(r"[0-9.]+%", app[0]["errors"])
    assert re.fullmatch(r"[0-9.]+(ns|us|ms|s)", app[0]["p99"])
    assert len(postgresql) == 1
    assert 0 < int(postgresql[0]["connections"]) < int(postgresql[0]["max"])
    assert re.fullmatch(r"[0-9.]+%", postgresql[0]["used"])
    assert {row["unit"] for row in backups} == {BACKUP_UNIT, PGBACKREST_UNIT}
    assert all(re.fullmatch(r"[0-9dhms. ]+", row["age"]) for row in backups)
