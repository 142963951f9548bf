"""A newer PostgreSQL installed beside the app's cluster, as a release upgrade leaves it: the role
goes on serving the cluster that holds the app's database, changes nothing, and warns with the
upgrade steps (pg_upgradecluster after a backup).

Debian ships one PostgreSQL per release, so the newer version is a stand-in: a server binary under
/usr/lib/postgresql/99 and an empty, stopped cluster 99/main on port 5433 that pg_lsclusters lists,
as a package install leaves one. Both are removed after the run.
"""

import re

import pytest
from conftest import SCENARIO_DIR, recap, run_playbook, said, sql

CONVERGE = SCENARIO_DIR / "converge.yml"
NEWER = "99"
MAKE_NEWER = f"""
set -e
install -d /usr/lib/postgresql/{NEWER}/bin
printf '#!/bin/sh\\necho stand-in for a newer PostgreSQL >&2\\nexit 1\\n' \
  > /usr/lib/postgresql/{NEWER}/bin/postgres
chmod 0755 /usr/lib/postgresql/{NEWER}/bin/postgres
install -d -o postgres -g postgres /etc/postgresql/{NEWER}/main
printf "data_directory = '/var/lib/postgresql/{NEWER}/main'\\nport = 5433\\n" \
  > /etc/postgresql/{NEWER}/main/postgresql.conf
install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/{NEWER}/main
"""
REMOVE_NEWER = (
    f"rm -rf /usr/lib/postgresql/{NEWER} /etc/postgresql/{NEWER} /var/lib/postgresql/{NEWER}"
)
STARTED = "SELECT pg_postmaster_start_time()"


@pytest.fixture(scope="module")
def upgraded(db_hosts):
    """A converge with the newer version installed beside each host's cluster."""
    state: dict = {"clusters": {}, "started": {}, "after": {}, "newer_conf_d": {}}
    try:
        for name, host in db_hosts.items():
            host.check_output("sh -c %s", MAKE_NEWER)
            state["clusters"][name] = host.check_output("pg_lsclusters --no-header")
            state["started"][name] = sql(host, STARTED, db="postgres")
        state["run"] = run_playbook(CONVERGE)
        for name, host in db_hosts.items():
            state["after"][name] = sql(host, STARTED, db="postgres")
            state["newer_conf_d"][name] = host.file(f"/etc/postgresql/{NEWER}/main/conf.d").exists
    finally:
        for host in db_hosts.values():
            host.run(REMOVE_NEWER)
    return state


def major(host) -> str:
    return sql(host, "SHOW server_version_num", db="postgres")[:-4]


def test_newer_cluster_is_listed_beside_the_apps(host, upgraded):
    clusters = upgraded["clusters"][host.backend.get_hostname()]
    assert re.search(rf"^{NEWER}\s+main\s+5433\s+down", clusters, re.MULTILINE), clusters
    assert re.search(rf"^{major(host)}\s+main\s+5432\s+online", clusters, re.MULTILINE), clusters


def test_converge_succeeds_and_changes_nothing(db_hosts, upgraded):
    run = upgraded["run"]
    assert run.returncode == 0, run.stdout[-4000:]
    counters = recap(run.stdout)
    assert set(counters) == set(db_hosts)
    assert all(counter["changed"] == 0 for counter in counters.values()), counters


def test_apps_cluster_keeps_running_untouched(host, upgraded):
    name = host.backend.get_hostname()
    assert upgraded["after"][name] == upgraded["started"][name]
    assert not upgraded["newer_conf_d"][name]


def test_warning_names_both_versions_and_the_upgrade(host, upgraded):
    output = said(upgraded["run"])
    old = major(host)
    for words in (
        f"PostgreSQL {NEWER} is installed, but the app's database bookmarks",
        f"is in cluster {old}/main, which this role goes on serving",
        "nothing was changed",
        "playbooks/backup.yml",
        f"as root on {host.backend.get_hostname()}: pg_dropcluster --stop {NEWER} main",
        f"pg_upgradecluster {old} main",
    ):
        assert words in output, upgraded["run"].stdout[-4000:]
