"""fail2ban: a client that keeps hitting the rate limits is banned in fail2ban's own nftables
table, next to the host firewall's, until `fail2ban-client unban`.

The client is a network namespace inside the target, joined to it by a veth pair on the
benchmarking range (198.18.0.0/30): its requests arrive from an address of the scenario's own,
not from loopback or the host's own addresses, which fail2ban never bans.
"""

import shlex

import pytest
from conftest import DOMAIN, PEBBLE_ROOT, fetch_pebble_root

NETNS = "edge-f2b-client"
SERVER, CLIENT = "198.18.0.1", "198.18.0.2"
JAIL = "nginx-limit-req"
F2B_TABLE = "inet f2b-table"
F2B_SET = f"addr-set-{JAIL}"
FIREWALL_TABLE = "inet host_firewall"


def from_client(host, path="/api/bookmarks"):
    """One HTTPS request from the client namespace: its status code, or 000 when refused."""
    argv = [
        "ip", "netns", "exec", NETNS,
        "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
        "--cacert", PEBBLE_ROOT,
        f"https://{DOMAIN}{path}",
    ]  # fmt: skip
    return host.run(shlex.join(argv)).stdout.strip()


def banned(host):
    return host.run("fail2ban-client get %s banned", JAIL).stdout


def wait_for(host, condition, timeout=30):
    """Poll a shell condition on the target until it holds (fail2ban reads the log by polling)."""
    return host.run("timeout %s sh -c %s", str(timeout), f"until {condition}; do sleep 1; done").rc


@pytest.fixture(scope="module")
def client(host):
    """The client namespace and its veth pair, removed afterwards (and any ban of it lifted)."""
    fetch_pebble_root(host)
    # `ip netns exec` shows /etc/netns/<ns>/hosts as /etc/hosts: the site's name is the server's
    # veth address there.
    hosts = f"/etc/netns/{NETNS}/hosts"
    host.run("mkdir -p %s && echo '%s %s' > %s", hosts.rsplit("/", 1)[0], SERVER, DOMAIN, hosts)
    setup = host.run(
        f"ip netns add {NETNS} && ip link add edge-f2b type veth peer name eth0 netns {NETNS}"
        f" && ip addr add {SERVER}/30 dev edge-f2b && ip link set edge-f2b up"
        f" && ip -n {NETNS} addr add {CLIENT}/30 dev eth0 && ip -n {NETNS} link set eth0 up"
    )
    assert setup.rc == 0, setup.stderr
    assert from_client(host, "/health") == "200"
    yield CLIENT
    host.run("fail2ban-client unban %s", CLIENT)
    host.run("ip link del edge-f2b; ip netns del %s; rm -rf /etc/netns/%s", NETNS, NETNS)


@pytest.fixture(scope="module")
def banned_client(host, client):
    """A burst beyond the API's rate limit (10 r/s, burst 20 here) from the client, until banned
    (hey does not check the certificate: the burst is about the limit, not about TLS)."""
    burst = host.run("ip netns exec %s hey -n 100 -c 20 https://%s/api/bookmarks", NETNS, DOMAIN)
    assert "[429]" in burst.stdout, burst.stdout
    assert wait_for(host, f"fail2ban-client get {JAIL} banned | grep -qF {client}") == 0, (
        banned(host) + host.run("tail -5 /var/log/nginx/bookmarks/error.log").stdout
    )
    return client


@pytest.mark.parametrize("jail", ["sshd", JAIL])
def test_fail2ban_runs_the_jail(host, jail):
    assert host.service("fail2ban").is_running
    assert host.service("fail2ban").is_enabled
    status = host.run("fail2ban-client status %s", jail)
    assert status.rc == 0, status.stderr


def test_the_nginx_jail_reads_the_sites_error_log(host):
    logs = host.check_output("fail2ban-client get %s logpath", JAIL)
    assert "/var/log/nginx/bookmarks/error.log" in logs


def test_bans_go_to_nftables_in_fail2bans_own_table(host):
    actions = host.check_output("fail2ban-client get %s actions", JAIL)
    assert "nftables-multiport" in actions


def test_loopback_is_never_banned(host):
    ignored = host.check_output("fail2ban-client get %s ignoreip", JAIL)
    assert "127.0.0.0/8" in ignored
    assert "::1" in ignored


def test_a_burst_beyond_the_rate_limit_bans_the_client_in_an_nft_set(host, banned_client):
    elements = host.check_output("nft list set %s %s", F2B_TABLE, F2B_SET)
    assert banned_client in elements


def test_the_banned_client_cannot_connect_and_others_still_can(host, banned_client, pebble_root):
    assert from_client(host) == "000"
    ok = host.run(
        "curl -s -o /dev/null -w '%%{http_code}' --cacert %s https://%s/health", pebble_root, DOMAIN
    )
    assert ok.stdout == "200"


def test_the_host_firewall_outlives_a_fail2ban_restart_and_the_ban_a_firewall_reload(
    host, banned_client
):
    before = host.check_output("nft list table %s", FIREWALL_TABLE)
    host.run_expect([0], "systemctl restart fail2ban.service")
    assert host.check_output("nft list table %s", FIREWALL_TABLE) == before
    # fail2ban restores its bans from its database at start.
    assert wait_for(host, f"nft list set {F2B_TABLE} {F2B_SET} | grep -qF {banned_client}") == 0
    host.run_expect([0], "systemctl reload host-firewall.service")
    host.run_expect([0], "systemctl restart host-firewall.service")
    assert banned_client in host.check_output("nft list set %s %s", F2B_TABLE, F2B_SET)
    assert host.check_output("nft list table %s", FIREWALL_TABLE) == before
    assert from_client(host) == "000"


def test_fail2ban_client_unban_lets_the_client_back(host, banned_client):
    host.run_expect([0, 1], "fail2ban-client unban %s", banned_client)
    assert banned_client not in banned(host)
    assert banned_client not in host.check_output("nft list set %s %s", F2B_TABLE, F2B_SET)
    assert from_client(host, "/health") == "200"
