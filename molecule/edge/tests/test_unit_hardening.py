"""nginx.service in the nginx role's sandbox: a low exposure score, and nothing it must do lost.

Renewals (a forced one under load, with the deploy hook's reload: test_renewal_under_load.py; the
dry run: test_certbot.py) and logrotate's reopen (test_logrotate.py) run under the same sandbox.
"""

import re

import pytest
from conftest import DOMAIN

DROP_IN = "/etc/systemd/system/nginx.service.d/50-hardening.conf"
TARGET = 5.0


def exposure(host):
    report = host.check_output("systemd-analyze security --no-pager nginx.service")
    found = re.search(r"Overall exposure level for nginx\.service: ([0-9.]+)", report)
    assert found, report
    return float(found.group(1))


def test_nginx_exposure_is_at_most_the_target(host):
    score = exposure(host)
    print(f"\n{host.backend.get_hostname()}: systemd-analyze security nginx.service {score}")
    assert score <= TARGET


def test_the_sandbox_is_the_roles_drop_in(host):
    assert DROP_IN in host.check_output("systemctl show nginx.service -p DropInPaths --value")
    f = host.file(DROP_IN)
    assert (f.user, f.group, f.mode) == ("root", "root", 0o644)
    assert host.check_output("systemctl show nginx.service -p ProtectSystem --value") == "strict"


def test_workers_still_run_as_www_data(host):
    users = host.check_output("ps -o user= -C nginx").split()
    assert "root" in users
    assert "www-data" in users


def workers(host):
    return host.check_output("pgrep -f 'nginx: worker process$' | sort")


@pytest.mark.parametrize("command", ["systemctl reload nginx.service", "nginx -t -q"])
def test_nginx_reloads_and_checks_under_the_sandbox(host, pebble_root, command):
    before = workers(host)
    host.run_expect([0], command)
    host.run("sleep 1")
    assert host.service("nginx").is_running
    if command.startswith("systemctl reload"):
        assert workers(host) != before  # new workers: the reload took effect
    ok = host.run(
        "curl -s -o /dev/null -w '%%{http_code}' --cacert %s https://%s/health", pebble_root, DOMAIN
    )
    assert ok.stdout == "200"
