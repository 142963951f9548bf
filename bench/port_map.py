#!/usr/bin/env python3
"""The port map of the cluster scenario: which ports answer from which host, intended vs observed.

From each of the scenario's hosts it opens a TCP connection to each port of every other scenario
host (their addresses on the scenario's own Docker network, nothing else), all at once, and sorts
the outcome: `open` (a service answered), `refused` (the firewall let the SYN in, nothing listens:
a reset) or `dropped` (no answer before the timeout: the firewall's default drop, or the app
socket's own IPAddressDeny). The intended map follows the firewall's rules in playbooks/vars/
firewall.yml: SSH from anywhere, 80/443 on the balancers from anyone, the app's port on the web
hosts from the balancers only, PostgreSQL on the database from the web hosts only, and every
other port dropped. It prints one row per host and port (the sources let in, intended and
observed) and exits 1 when they differ. The cluster's tests use the same functions
(molecule/cluster/tests/test_5_firewall.py).
With --ipv6 it probes the hosts' IPv6 addresses on the same network (a ULA /64, NETWORK6) instead.
The intended IPv6 map is the IPv4 one except where it names sources: the allow lists hold the
hosts' private addresses, IPv4 (default_ipv4), so the app's port and PostgreSQL admit nobody
over IPv6 (SSH and 80/443, open to anyone, are the same over both).
Needs the cluster scenario converged and still up, for example (holding the machine's test lock):
  flock /tmp/heavy-test.lock bash -c \
  'molecule converge -s cluster && .venv/bin/python bench/port_map.py; molecule destroy -s cluster'
Usage: .venv/bin/python bench/port_map.py [--timeout 3] [--ipv6]
"""

from __future__ import annotations

import argparse
import ipaddress
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping

NETWORK = "bm-cluster"
# Its IPv6 subnet (molecule/cluster/molecule.yml); Docker picks the IPv4 one.
NETWORK6 = "fd00:b0c::/64"
# The scenario's hosts and their inventory group (molecule/cluster/molecule.yml).
HOSTS: dict[str, str] = {
    "bm-cluster-lb": "lb",
    "bm-cluster-lb2": "lb",
    "bm-cluster-web1": "web",
    "bm-cluster-web2": "web",
    "bm-cluster-db": "db",
}
# SSH, HTTP, HTTPS, PostgreSQL, the app's port, and one port no rule names.
PORTS = (22, 80, 443, 5432, 8000, 9000)
APP_PORT, DB_PORT = 8000, 5432


def intended(
    groups: Mapping[str, str], source: str, target: str, port: int, family: int = 4
) -> bool:
    """Whether the firewall is meant to let `source` reach `port` on `target` over IPv`family`."""
    target_group, source_group = groups[target], groups[source]
    has_lb = "lb" in groups.values()
    edge = "lb" if has_lb else "web"
    if port == 22:
        return True
    if port in (80, 443):
        return target_group == edge
    # The sources of these two are the hosts' private addresses, IPv4 ones (playbooks/vars/
    # addresses.yml: default_ipv4): over IPv6 no rule admits them, by design.
    if port in (APP_PORT, DB_PORT) and family != 4:
        return False
    if port == APP_PORT:
        return has_lb and target_group == "web" and source_group == "lb"
    if port == DB_PORT:
        return target_group == "db" and source_group == "web"
    return False


def probe_script(targets: Mapping[str, str], ports: tuple[int, ...], timeout: float) -> str:
    """A bash script that tries every target's ports at once and prints `address port status`."""
    lines = []
    for address in targets.values():
        for port in ports:
            connect = shlex.quote(f"exec 3<>/dev/tcp/{address}/{port}")
            lines.append(
                f'(timeout {timeout} bash -c {connect} 2>/dev/null; echo "{address} {port} $?") &'
            )
    lines.append("wait")
    return "\n".join(lines)


def parse(output: str, targets: Mapping[str, str]) -> dict[tuple[str, int], str]:
    """Map (target, port) to open, refused or dropped (timeout's exit status 124)."""
    by_address = {address: name for name, address in targets.items()}
    seen = {}
    for line in output.splitlines():
        address, port, status = line.split()
        outcome = {"0": "open", "124": "dropped"}.get(status, "refused")
        seen[(by_address[address], int(port))] = outcome
    return seen


def observe(
    run: Callable[[str], str],
    source: str,
    addresses: Mapping[str, str],
    ports: tuple[int, ...] = PORTS,
    timeout: float = 3,
) -> dict[tuple[str, int], str]:
    """Probe every other host's ports from `source`; `run` runs a bash script there."""
    targets = {name: address for name, address in addresses.items() if name != source}
    return parse(run(probe_script(targets, ports, timeout)), targets)


def docker_run(source: str) -> Callable[[str], str]:
    def run(script: str) -> str:
        done = subprocess.run(
            ["docker", "exec", source, "bash", "-c", script],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    return run


def docker_addresses(family: int = 4) -> dict[str, str]:
    field = "IPAddress" if family == 4 else "GlobalIPv6Address"
    template = f'{{{{(index .NetworkSettings.Networks "{NETWORK}").{field}}}}}'
    found = {}
    for name in HOSTS:
        done = subprocess.run(
            ["docker", "inspect", "-f", template, name], capture_output=True, text=True, check=True
        )
        found[name] = done.stdout.strip()
    return found


def describe(sources: list[str], groups: Mapping[str, str]) -> str:
    if not sources:
        return "nobody"
    if len(sources) == len(groups) - 1:
        return "all"
    return ", ".join(s.removeprefix("bm-cluster-") for s in sources)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=3, help="seconds until a probe is dropped")
    parser.add_argument(
        "--ipv6", action="store_true", help=f"probe the hosts' IPv6 addresses ({NETWORK6})"
    )
    args = parser.parse_args()
    family = 6 if args.ipv6 else 4
    addresses = docker_addresses(family)
    if family == 6:
        subnet = ipaddress.ip_network(NETWORK6)
        outside = [a for a in addresses.values() if not a or ipaddress.ip_address(a) not in subnet]
        if outside:
            parser.error(f"not an address in {NETWORK6}: {outside}")
    seen = {
        source: observe(docker_run(source), source, addresses, timeout=args.timeout)
        for source in HOSTS
    }
    width = max(len(name) for name in HOSTS) + 2
    print(f"{'host':<{width}}{'port':>5}  {'intended (from)':<22}{'observed (from)':<22}answer")
    differ = 0
    for target in HOSTS:
        for port in PORTS:
            sources = [s for s in HOSTS if s != target]
            want = [s for s in sources if intended(HOSTS, s, target, port, family)]
            got = [s for s in sources if seen[s][(target, port)] != "dropped"]
            # What the sources let in met: a service (open), or nothing listening (refused).
            answers = "/".join(sorted({seen[s][(target, port)] for s in got})) or "-"
            mark = "" if want == got else "  DIFFERS"
            differ += want != got
            print(
                f"{target:<{width}}{port:>5}  {describe(want, HOSTS):<22}"
                f"{describe(got, HOSTS):<22}{answers}{mark}"
            )
    probes = len(HOSTS) * (len(HOSTS) - 1) * len(PORTS)
    over = " over IPv6" if family == 6 else ""
    summary = f"{probes} probes{over} from {len(HOSTS)} hosts"
    print(f"{summary}; {differ} rows differ from the intended map")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
