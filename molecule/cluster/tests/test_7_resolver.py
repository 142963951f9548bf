"""The web hosts resolve the database's name through a resolver off loopback, the only one that
knows the name (dnsmasq on a web host, prepare.yml), and the app unit admits that resolver: its
IPAddressDeny=any drops DNS queries to any address its allow list does not name. Runs after the
failover test, so the web host it restarted is checked too."""

from __future__ import annotations

import json

import pytest
from conftest import DB, LB, LB2, LBS, WEB2, WEBS, address, curl, node

# app_database_host and cluster_resolver_host (group_vars/all/vars.yml).
DB_NAME = "db.bookmarks.internal"
RESOLVER = WEB2
UNIT = "bookmarks.service"
# A transient unit with a given IP filter: what a service with that allow list can resolve.
SANDBOX = (
    "systemd-run --quiet --wait --pipe -p IPAddressDeny=any -p IPAddressAllow=%s getent hosts %s"
)


def allowed(web: str) -> list[str]:
    return node(web).check_output("systemctl show -p IPAddressAllow --value %s", UNIT).split()


@pytest.mark.parametrize("web", WEBS)
def test_the_web_hosts_resolve_the_database_name_through_the_resolver_off_loopback(web):
    host = node(web)
    servers = [
        line.split()[1]
        for line in host.file("/etc/resolv.conf").content_string.splitlines()
        if line.startswith("nameserver")
    ]
    assert servers == [address(RESOLVER)]
    assert host.check_output("getent hosts %s", DB_NAME).split()[0] == address(DB)


@pytest.mark.parametrize("name", [*LBS, *WEBS, DB])
def test_only_the_resolver_knows_the_database_name(name):
    # No hosts file names it; Docker's resolver (127.0.0.11, which the resolver forwards every
    # other name to) is not asked here, since it would send an unknown name out of the machine.
    assert DB_NAME not in node(name).file("/etc/hosts").content_string
    if name == RESOLVER:
        assert node(name).service("dnsmasq.service").is_running


@pytest.mark.parametrize("web", WEBS)
def test_the_app_unit_admits_loopback_the_balancers_the_database_and_the_resolver(web):
    peers = {f"{address(name)}/32" for name in (LB, LB2, DB, RESOLVER)}
    assert set(allowed(web)) == {"127.0.0.0/8", "::1/128", *peers}
    # Nothing but the app role's resolver allowance admits the resolver's address.
    assert address(RESOLVER) not in {address(name) for name in (LB, LB2, DB)}


@pytest.mark.parametrize("web", WEBS)
def test_under_the_unit_filter_the_name_resolves_only_with_the_resolver_admitted(web):
    host = node(web)
    with_resolver = allowed(web)
    got = host.check_output(SANDBOX, " ".join(with_resolver), DB_NAME)
    assert got.split()[0] == address(DB)
    without = [a for a in with_resolver if a != f"{address(RESOLVER)}/32"]
    assert len(without) == len(with_resolver) - 1
    assert host.run(SANDBOX, " ".join(without), DB_NAME).rc != 0


@pytest.mark.parametrize("web", WEBS)
def test_the_app_reaches_the_database_by_that_name(web):
    host = node(web)
    # Counted, not printed: the line holds the password.
    env = host.run(f"grep -c '^DATABASE_URL=.*@{DB_NAME}:5432/' /etc/bookmarks/bookmarks.env")
    assert env.stdout.strip() == "1"
    ready = curl(
        host,
        *("--max-time", "10", "--unix-socket", "/run/bookmarks/gunicorn.sock"),
        "http://localhost/health/ready",
    )
    assert json.loads(ready)["status"] == "ready"


def test_the_database_certificate_names_it_for_verify_full():
    sans = node(DB).check_output(
        "openssl x509 -noout -ext subjectAltName -in /etc/ssl/postgresql/server.crt"
    )
    assert f"DNS:{DB_NAME}" in sans
