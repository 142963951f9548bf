"""The split topology after site.yml: who runs what, who may talk to whom, the API end to end."""

from __future__ import annotations

import json
import uuid

import pytest
from conftest import CA_BUNDLE, DB, DOMAIN, LB, LB2, LBS, WEB1, WEB2, WEBS, address, curl, node


@pytest.mark.parametrize(
    ("name", "units"),
    [
        (LB, ["nginx.service", "certbot.timer"]),
        (LB2, ["nginx.service", "ssh.service"]),
        (WEB1, ["bookmarks.socket", "bookmarks.service"]),
        (WEB2, ["bookmarks.socket", "bookmarks.service"]),
        (DB, ["postgresql.service", "postgresql-backup.timer"]),
    ],
)
def test_each_host_runs_its_part(name, units):
    host = node(name)
    for unit in units:
        assert host.service(unit).is_running, f"{unit} on {name}"
        assert host.service(unit).is_enabled, f"{unit} on {name}"
    state = host.run("systemctl is-system-running --wait").stdout.strip()
    assert state == "running", host.run("systemctl --failed --no-legend --plain").stdout


@pytest.mark.parametrize("name", WEBS)
def test_web_hosts_run_neither_nginx_nor_a_database(name):
    host = node(name)
    assert not host.package("nginx").is_installed
    assert not host.package("postgresql").is_installed


@pytest.mark.parametrize("name", LBS)
def test_each_balancer_proxies_to_both_web_hosts_with_passive_checks(name):
    balancer = node(name)
    conf = balancer.file("/etc/nginx/bookmarks.upstream.conf").content_string
    for web in WEBS:
        assert f"server {address(web)}:8000 max_fails=" in conf
    assert " down" not in conf
    assert not balancer.file("/srv/bookmarks/current").exists


@pytest.mark.parametrize("web", WEBS)
def test_web_hosts_admit_only_the_balancers(web):
    url = f"http://{address(web)}:8000/health"
    for balancer in LBS:
        assert json.loads(curl(node(balancer), "--max-time", "5", url))["status"] == "ok"
    for outsider in (DB, WEB2 if web == WEB1 else WEB1):
        refused = node(outsider).run(f"curl -sS --max-time 3 {url}")
        assert refused.rc != 0, f"{outsider} reached {url}"


def test_api_round_trip_through_the_balancer_reaches_both_web_hosts(lb):
    user = f"cluster-{uuid.uuid4().hex[:8]}"
    token = node(WEB1).check_output(f"bookmarks-manage create-user {user}").strip()
    assert token.startswith("bm_")
    base = f"https://{DOMAIN}/api/bookmarks"
    auth = ["--cacert", CA_BUNDLE, "-H", f"Authorization: Bearer {token}"]
    body = json.dumps({"url": "https://example.org/cluster", "title": "through the balancer"})
    created = json.loads(
        curl(lb, *auth, "-H", "Content-Type: application/json", "--data", body, base)
    )
    assert "id" in created, created
    probe = uuid.uuid4().hex
    for i in range(20):
        got = json.loads(
            curl(lb, *auth, "-H", f"X-Request-ID: {probe}-{i}", f"{base}/{created['id']}")
        )
        assert got["title"] == "through the balancer"
    # Every web host served some of the reads, and they all saw the same row.
    count = f"grep -c {probe} /var/log/bookmarks/gunicorn.log || true"
    served = {web: int(node(web).check_output(count)) for web in WEBS}
    assert all(n > 0 for n in served.values()), served
    assert sum(served.values()) == 20, served
