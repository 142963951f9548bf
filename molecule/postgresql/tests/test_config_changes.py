"""Re-running the role with changed settings: a reload-only change (work_mem, pg_hba.conf) applies
without a restart, a change that needs one (listen_addresses) restarts PostgreSQL, and an app host
the inventory lists logs in over the network with the password while no other address can."""

import pytest
from conftest import SCENARIO_DIR, app_login, own_address, run_playbook, sql

CONVERGE = SCENARIO_DIR / "converge.yml"
# Templated on each host by Ansible: the host's own non-loopback address stands in for an app host.
OWN_IPV4 = "{{ ansible_facts['default_ipv4']['address'] }}"
# The role's configuration phase (with its checks and handlers) is all these changes touch.
ONLY_CONFIG = ("--tags", "postgresql_config")
# Start time of the server, two settings, and the addresses pg_hba.conf admits (address and mask
# are separate columns of pg_hba_file_rules).
STATE = (
    "SELECT pg_postmaster_start_time(), current_setting('work_mem'), "
    "current_setting('listen_addresses'), (SELECT string_agg(address, ' ' ORDER BY line_number) "
    "FROM pg_hba_file_rules WHERE address IS NOT NULL)"
)


def observe(hosts, password) -> dict:
    observed = {}
    for name, host in hosts.items():
        address = own_address(host)
        started, work_mem, listen, hba = sql(host, STATE, db="postgres").split("|")
        observed[name] = {
            "started": started,
            "work_mem": work_mem,
            "listen": listen,
            "hba": hba.split(),
            "address": address,
            "remote": app_login(host, password, address),
            "remote_wrong": app_login(host, password + "-wrong", address),
        }
    return observed


@pytest.fixture(scope="module")
def changes(db_hosts, app_password):
    steps = {"before": observe(db_hosts, app_password)}
    runs = {}
    try:
        runs["reload"] = run_playbook(
            CONVERGE,
            *ONLY_CONFIG,
            extra_vars={"postgresql_work_mem": "7MB", "postgresql_app_hosts": [OWN_IPV4]},
        )
        steps["reload"] = observe(db_hosts, app_password)
        runs["restart"] = run_playbook(
            CONVERGE,
            *ONLY_CONFIG,
            extra_vars={
                "postgresql_work_mem": "7MB",
                "postgresql_app_hosts": [OWN_IPV4],
                "postgresql_listen_addresses": ["localhost", OWN_IPV4],
            },
        )
        steps["restart"] = observe(db_hosts, app_password)
    finally:
        # Back to the scenario's own settings, whatever happened above.
        runs["back"] = run_playbook(CONVERGE, *ONLY_CONFIG)
        steps["back"] = observe(db_hosts, app_password)
    return {"steps": steps, "runs": runs}


@pytest.mark.parametrize("run", ["reload", "restart", "back"])
def test_role_runs_succeed(changes, run):
    assert changes["runs"][run].returncode == 0, changes["runs"][run].stdout[-4000:]


def test_reload_only_change_does_not_restart(host, changes):
    name = host.backend.get_hostname()
    before, reload = changes["steps"]["before"][name], changes["steps"]["reload"][name]
    assert reload["work_mem"] == "7MB"
    assert reload["address"] not in before["hba"]
    assert reload["address"] in reload["hba"]
    assert reload["started"] == before["started"]


def test_listen_address_change_restarts(host, changes):
    name = host.backend.get_hostname()
    reload, restart = changes["steps"]["reload"][name], changes["steps"]["restart"][name]
    assert restart["listen"] == f"localhost,{restart['address']}"
    assert restart["started"] != reload["started"]


def test_listed_app_host_logs_in_over_the_network(host, changes):
    restart = changes["steps"]["restart"][host.backend.get_hostname()]
    assert restart["remote"].rc == 0, restart["remote"].stderr
    assert restart["remote_wrong"].rc != 0
    assert "password authentication failed" in restart["remote_wrong"].stderr


def test_back_to_defaults_closes_the_network_again(host, changes):
    name = host.backend.get_hostname()
    before, back = changes["steps"]["before"][name], changes["steps"]["back"][name]
    assert back["listen"] == "localhost"
    assert back["hba"] == before["hba"]
    assert back["work_mem"] == before["work_mem"]
    assert back["remote"].rc != 0
    assert "Connection refused" in back["remote"].stderr
