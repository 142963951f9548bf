"""A forced renewal against Pebble, with its nginx reload, while load runs: no request fails."""

import re

from conftest import DOMAIN, wait_for_testssl
from test_certbot import renewal_environment

LOAD_SECONDS = 20
LOAD_REPORT = "/var/tmp/edge-load.txt"


def served_serial(host):
    return host.run(
        "openssl s_client -connect 127.0.0.1:443 -servername %s </dev/null 2>/dev/null"
        " | openssl x509 -noout -serial",
        DOMAIN,
    ).stdout.strip()


def test_forced_renewal_under_load_fails_no_request(host):
    # testssl's handshakes must not share the machine with the measured load.
    wait_for_testssl(host)
    before = served_serial(host)
    hook_runs_before = host.run("journalctl -t certbot-deploy-hook -q --no-pager | wc -l").stdout
    started = host.run(
        "systemd-run --unit=edge-load --collect --property=StandardOutput=file:%s "
        "hey -z %ss -c 8 -disable-compression https://%s/health",
        LOAD_REPORT,
        str(LOAD_SECONDS),
        DOMAIN,
    )
    assert started.rc == 0, started.stderr
    host.run("sleep 3")
    env = renewal_environment(host)
    renew = host.run(f"env {env} certbot renew --force-renewal --no-random-sleep-on-renew 2>&1")
    assert renew.rc == 0, renew.stdout
    assert "Congratulations, all renewals succeeded" in renew.stdout
    finished = host.run(
        "timeout %s sh -c 'while systemctl is-active -q edge-load; do sleep 1; done'",
        str(LOAD_SECONDS + 30),
    )
    assert finished.rc == 0
    report = host.file(LOAD_REPORT).content_string
    statuses = {code: int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", report)}
    total = sum(statuses.values())
    errors = report.split("Error distribution:")[1] if "Error distribution:" in report else ""
    print(f"\n{host.backend.get_hostname()}: {total} requests in {LOAD_SECONDS} s, {statuses}")
    print(f"errors: {errors.strip() or 'none'}")
    assert total > 0, report
    assert set(statuses) == {"200"}, report
    assert not errors.strip(), report
    # The renewal really happened and our deploy hook reloaded nginx with the new certificate.
    assert served_serial(host) != before
    hook_runs_after = host.run("journalctl -t certbot-deploy-hook -q --no-pager | wc -l").stdout
    assert int(hook_runs_after) > int(hook_runs_before)
