"""Shared helpers of the edge scenario's tests (nginx, certbot against Pebble, logrotate)."""

import json
import shlex

import pytest
import testinfra

DOMAIN = "bookmarks.test"
ALIAS = "www.bookmarks.test"
PEBBLE_ROOT = "/var/tmp/edge-pebble-root.pem"
TESTSSL_DIR = "/var/tmp/edge-testssl"


def fetch_pebble_root(host):
    """Pebble's issuing root, from its management API (it changes at every Pebble start)."""
    cmd = host.run(
        "curl -sSf --cacert /etc/pebble/ca.pem -o %s https://127.0.0.1:15000/roots/0", PEBBLE_ROOT
    )
    assert cmd.rc == 0, cmd.stderr
    return PEBBLE_ROOT


@pytest.fixture
def pebble_root(host):
    return fetch_pebble_root(host)


def curl(host, path, *args, scheme="https", name=DOMAIN, address="127.0.0.1"):
    """One request through nginx; answers (status, headers as a lower-cased dict, body)."""
    port = 443 if scheme == "https" else 80
    argv = [
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        PEBBLE_ROOT,
        "--resolve",
        f"{name}:{port}:{address}",
        "-D",
        "/dev/stderr",
        *args,
        f"{scheme}://{name}{path}",
    ]
    cmd = host.run(shlex.join(argv))
    assert cmd.rc == 0, cmd.stderr
    status_line, *header_lines = cmd.stderr.strip().split("\r\n\r\n")[-1].split("\r\n")
    headers = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        headers.setdefault(key.strip().lower(), []).append(value.strip())
    return int(status_line.split()[1]), headers, cmd.stdout


def echoed(body):
    """What the stand-in upstream received (it answers with the request it saw)."""
    return json.loads(body)


def non_loopback_address(host):
    """The container's own address on its network interface (not 127.0.0.0/8)."""
    addresses = host.interface("eth0").addresses
    ipv4 = [a for a in addresses if ":" not in a]
    assert ipv4, addresses
    return ipv4[0]


def _all_hosts(config):
    option = config.option
    # Like testinfra's own parametrization: no --hosts means every host of the inventory.
    return testinfra.get_hosts(
        option.hosts.split(",") if option.hosts else [None],
        connection=option.connection,
        ansible_inventory=option.ansible_inventory,
        force_ansible=getattr(option, "force_ansible", False),
    )


@pytest.fixture(scope="session")
def all_hosts(request):
    """Every target, for tests that act on all of them at once."""
    return _all_hosts(request.config)


@pytest.fixture(scope="session", autouse=True)
def _testssl_in_background(request):
    """testssl.sh takes minutes, so it runs on every target while the other tests run."""
    for host in _all_hosts(request.config):
        fetch_pebble_root(host)
        host.run("rm -rf %s && mkdir -p %s", TESTSSL_DIR, TESTSSL_DIR)
        testssl = shlex.join(
            [
                "testssl",
                "--quiet",
                "--color",
                "0",
                "--warnings",
                "off",
                # Names come from /etc/hosts; no lookup leaves the container.
                "--nodns",
                "none",
                "--add-ca",
                PEBBLE_ROOT,
                "--jsonfile",
                "findings.json",
                f"{DOMAIN}:443",
            ]
        )
        started = host.run(
            shlex.join(
                [
                    "systemd-run",
                    "--unit=edge-testssl",
                    "--collect",
                    f"--working-directory={TESTSSL_DIR}",
                    "sh",
                    "-c",
                    f"{testssl} > report.txt 2>&1; touch done",
                ]
            )
        )
        assert started.rc == 0, started.stderr


def wait_for_testssl(host, timeout=600):
    """Block until the background testssl run on this target has finished."""
    waited = host.run(
        "timeout %s sh -c 'until [ -e %s/done ]; do sleep 2; done'", str(timeout), TESTSSL_DIR
    )
    assert waited.rc == 0, f"testssl did not finish within {timeout} s"
