"""The firewall site.yml loads on every host: the port map it makes, and that it outlives a restart.

Probes go only to the scenario's own containers, on its own Docker network (bench/port_map.py),
over IPv4 and over IPv6 (the network has both, molecule.yml).
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import pytest
from conftest import DB, LB, LB2, LBS, WEB1, WEB2, address, node

sys.path.insert(0, str(Path(__file__).parents[3] / "bench"))
import port_map  # noqa: E402

HOSTS = (LB, LB2, WEB1, WEB2, DB)
TABLE = "inet host_firewall"
UNIT = "host-firewall.service"


@pytest.fixture(scope="module")
def addresses():
    return {name: address(name) for name in HOSTS}


@pytest.fixture(scope="module")
def addresses6():
    found = {name: address(name, 6) for name in HOSTS}
    # Only the scenario's own hosts are probed: each address is in its network's IPv6 subnet.
    subnet = ipaddress.ip_network(port_map.NETWORK6)
    assert all(ipaddress.ip_address(a) in subnet for a in found.values()), found
    return found


def run_on(name: str):
    host = node(name)

    def run(script: str) -> str:
        return host.check_output("bash -c %s", script)

    return run


def mismatches(source: str, addresses) -> list[str]:
    return differences(source, port_map.observe(run_on(source), source, addresses))


def differences(source: str, seen, family: int = 4) -> list[str]:
    wrong = []
    for (target, port), outcome in sorted(seen.items()):
        want = port_map.intended(port_map.HOSTS, source, target, port, family)
        if want != (outcome != "dropped"):
            meant = "let in" if want else "dropped"
            wrong.append(f"{source} -> {target}:{port} {outcome}, meant to be {meant}")
    return wrong


@pytest.mark.parametrize("source", HOSTS)
def test_each_host_reaches_exactly_the_ports_the_map_intends(source, addresses):
    assert mismatches(source, addresses) == []


# The same probes to the other hosts' IPv6 addresses. Where a rule admits anyone (SSH, 80/443 on
# the balancers) the map is the IPv4 one. Where it names sources, those are the hosts' private
# addresses, IPv4 ones (default_ipv4, playbooks/vars/addresses.yml), so over IPv6 the app's port
# (from the balancers) and 5432 (from the web hosts) admit nobody, by design (port_map.intended).
@pytest.mark.parametrize("source", HOSTS)
def test_each_host_reaches_over_ipv6_exactly_the_ports_the_ipv6_map_intends(source, addresses6):
    seen = port_map.observe(run_on(source), source, addresses6)
    assert differences(source, seen, family=6) == []
    # nginx listens on [::] too (nginx_listen_ipv6: the host has IPv6 addresses): it answers there.
    balancers = [name for name in LBS if name != source]
    assert {seen[(lb, port)] for lb in balancers for port in (80, 443)} == {"open"}


@pytest.mark.parametrize("name", HOSTS)
def test_every_host_drops_what_no_rule_admits_in_one_table_of_its_own(name):
    host = node(name)
    assert host.service(UNIT).is_enabled
    rules = host.check_output("nft list table %s", TABLE)
    assert "hook input priority filter; policy drop;" in rules
    assert "ct state established,related accept" in rules
    # Docker's NAT table (its embedded DNS) is left alone, and names still resolve.
    assert "table ip nat" in host.check_output("nft list tables")
    assert host.run("getent hosts %s", DB).rc == 0


def test_the_rules_come_back_after_the_firewall_unit_restarts(addresses):
    db = node(DB)
    db.run_expect([0], "systemctl restart %s", UNIT)
    assert "policy drop;" in db.check_output("nft list table %s", TABLE)
    assert mismatches(WEB1, addresses) == []
    assert mismatches(LB, addresses) == []
