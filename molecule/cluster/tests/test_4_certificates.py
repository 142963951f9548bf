"""Two balancers behind the same names share one certificate.

Pebble runs on the first balancer, which alone asks for the certificate, and its DNS answers the
site's names with the second balancer's address (molecule/cluster/prepare.yml): every HTTP-01
check reaches the balancer that did not ask, which passes it on to the one that did.
"""

from __future__ import annotations

import json

import pytest
from conftest import ANSIBLE_LOG_PATH, CA_BUNDLE, DOMAIN, LB, LB2, LBS, address, curl, node

LINEAGE = "/etc/letsencrypt/live/bookmarks"


def fingerprint(name: str) -> str:
    """SHA-256 fingerprint of the certificate the balancer `name` serves for the site."""
    probe = (
        f"openssl s_client -connect {address(name)}:443 -servername {DOMAIN} </dev/null 2>/dev/null"
        " | openssl x509 -noout -fingerprint -sha256"
    )
    return node(LB).check_output(probe).strip()


def test_only_the_first_balancer_asks_the_ca():
    assert node(LB).file(f"{LINEAGE}/cert.pem").exists
    assert not node(LB2).file("/etc/letsencrypt/live").exists
    assert not node(LB2).package("certbot").is_installed


def test_the_ca_checked_the_challenges_on_the_balancer_that_did_not_ask():
    log = node(LB2).file("/var/log/nginx/bookmarks/access.log").content_string
    checks = [
        json.loads(line) for line in log.splitlines() if "/.well-known/acme-challenge/" in line
    ]
    assert checks, "Pebble's HTTP-01 checks never reached the second balancer"
    assert all(check["status"] == 200 for check in checks), checks


@pytest.mark.parametrize("name", LBS)
def test_each_balancer_serves_the_certificate_from_the_ca(lb, name):
    got = curl(
        lb,
        "--cacert",
        CA_BUNDLE,
        "--resolve",
        f"{DOMAIN}:443:{address(name)}",
        f"https://{DOMAIN}/health",
    )
    assert json.loads(got)["status"] == "ok"


def test_both_balancers_serve_the_same_certificate():
    assert fingerprint(LB) == fingerprint(LB2)


def test_the_certificate_key_never_appears_in_ansible_output():
    # Before the renewal below: the key the converge copied to the second balancer.
    assert ANSIBLE_LOG_PATH, "the scenario's Ansible log is not set"
    key = node(LB).check_output(f"cat {LINEAGE}/privkey.pem").splitlines()
    body = [line for line in key if line and not line.startswith("-----")]
    with open(ANSIBLE_LOG_PATH, encoding="utf-8") as log:
        text = log.read()
    assert "PRIVATE KEY" not in text
    assert not any(line in text for line in body)


def test_a_renewal_on_the_first_balancer_reaches_the_second(lb):
    before = fingerprint(LB)
    # What certbot.timer does when the certificate is due, forced now; its deploy hook sends
    # the new certificate to the second balancer over SSH.
    lb.run_expect(
        [0],
        "REQUESTS_CA_BUNDLE=/etc/pebble/ca.pem certbot renew --cert-name bookmarks"
        " --force-renewal --no-random-sleep-on-renew",
    )
    renewed = fingerprint(LB)
    assert renewed != before
    assert fingerprint(LB2) == renewed
    received = node(LB2).check_output("journalctl -t certbot-receive --no-pager -o cat")
    assert "installed bookmarks" in received
