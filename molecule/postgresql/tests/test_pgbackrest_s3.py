"""pgBackRest's second repository in S3-compatible storage (repo2, group_vars/db): the server is
moto's behind nginx (prepare.yml), reached over HTTPS with its certificate verified against a test
CA. Every WAL segment reaches repo2 as well as repo1, the backup unit backs up to both, the check
unit checks and verifies both, the restore drill restores from repo2 alone (backup and WAL) into a
scratch cluster whose tables match the live ones, and restore.yml -e restore_repo=2 brings the
cluster back from repo2 with every row; the keys stay in a file only root and postgres read."""

from __future__ import annotations

import json

import pytest
from conftest import APP_DB, PROJECT_DIR, recap, run_playbook, said, sql

RESTORE_PLAYBOOK = PROJECT_DIR / "playbooks" / "restore.yml"
FINGERPRINT = (
    "SELECT count(*) || ' ' "
    "|| md5(coalesce(string_agg(id || '|' || payload, E'\\n' ORDER BY id), '')) FROM s3_rows"
)

DRILL_PLAYBOOK = PROJECT_DIR / "playbooks" / "restore-drill.yml"
PGBACKREST = f"runuser -u postgres -- pgbackrest --stanza={APP_DB}"
CONF = "/etc/pgbackrest.conf"
ROWS = 300


def repo_info(host, repo: int) -> dict:
    """pgbackrest info of one repository, as JSON."""
    return json.loads(host.check_output(f"{PGBACKREST} --repo={repo} --output=json info"))[0]


def test_s3_keys_are_readable_by_root_and_postgres_only(host):
    conf = host.file(CONF)
    assert conf.user == "root"
    assert conf.group == "postgres"
    assert conf.mode == 0o640
    assert conf.contains("^repo2-type=s3$")
    assert conf.contains("^repo2-s3-key-secret=")


def test_s3_repository_is_reached_with_tls_verified_against_the_ca(host):
    conf = host.file(CONF)
    assert conf.contains("^repo2-storage-verify-tls=y$")
    assert conf.contains("^repo2-storage-ca-file=/etc/pgbackrest/s3-ca.crt$")
    assert host.file("/etc/pgbackrest/s3-ca.crt").contains("BEGIN CERTIFICATE")


def test_wal_is_archived_to_the_s3_repository(host):
    segment = sql(host, "SELECT pg_walfile_name(pg_current_wal_lsn())", db="postgres")
    # check switches to a new WAL segment and waits until every repository has it.
    assert host.run(f"{PGBACKREST} check").rc == 0
    archive = repo_info(host, 2)["archive"]
    assert archive, "repo2 holds no archived WAL"
    assert archive[-1]["max"][-24:] >= segment


def test_backup_unit_backs_up_to_both_repositories(host):
    before = {repo: {b["label"] for b in repo_info(host, repo)["backup"]} for repo in (1, 2)}
    started = host.run("systemctl start pgbackrest-backup@diff.service")
    assert started.rc == 0, host.run(
        "journalctl -u pgbackrest-backup@diff.service --no-pager -o cat -n 30"
    ).stdout
    for repo in (1, 2):
        newest = repo_info(host, repo)["backup"][-1]
        assert newest["label"] not in before[repo], (repo, newest)
        assert newest["type"] == "diff", (repo, newest)
        assert newest["database"]["repo-key"] == repo


def test_check_unit_checks_and_verifies_both_repositories(host):
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    assert host.run("systemctl start pgbackrest-check.service").rc == 0
    journal = host.check_output(
        "journalctl -u pgbackrest-check.service --since %s --no-pager -o cat", since
    )
    assert "check repo2 archive for WAL" in journal
    assert journal.count("verify command end: completed successfully") == 2
    assert "--repo=2" in journal


def test_s3_keys_stay_out_of_pgbackrest_logs(host):
    secret = host.check_output(f"sed -n 's/^repo2-s3-key-secret=//p' {CONF}")
    assert secret
    logs = host.run("cat /var/log/pgbackrest/*.log").stdout
    assert "repo2-s3-key-secret=<redacted>" in logs
    assert secret not in logs


@pytest.fixture(scope="module")
def drill_from_s3(db_hosts):
    """A table written and backed up, then the drill from repo2 only."""
    for host in db_hosts.values():
        sql(
            host,
            "DROP TABLE IF EXISTS s3_rows; "
            "CREATE TABLE s3_rows (id int PRIMARY KEY, payload text); "
            f"INSERT INTO s3_rows SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) AS g",
        )
    run = run_playbook(DRILL_PLAYBOOK, extra_vars={"postgresql_drill_repo": 2})
    yield run
    for host in db_hosts.values():
        sql(host, "DROP TABLE IF EXISTS s3_rows")


def test_restore_drill_from_the_s3_repository_passes(db_hosts, drill_from_s3):
    run = drill_from_s3
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert set(recap(run.stdout)) == set(db_hosts)


def test_restore_drill_from_the_s3_repository_has_the_rows(host, drill_from_s3):
    output = said(drill_from_s3)
    name = host.backend.get_hostname()
    assert f"Restore drill passed on {name}: stanza {APP_DB} restored from repo2" in output
    assert f'"public.s3_rows": {ROWS}' in output


@pytest.fixture(scope="module")
def restore_from_s3(db_hosts, drill_from_s3):
    """The cluster restored from repo2 (backup and WAL) to the end of the archive, s3_rows and
    all."""
    state: dict = {"before": {}, "after": {}, "restore_command": {}, "log": {}}
    for name, host in db_hosts.items():
        sql(
            host,
            "INSERT INTO s3_rows SELECT g, 'after the drill' FROM generate_series(1001, 1100) g",
        )
        state["before"][name] = sql(host, FINGERPRINT)
    state["run"] = run_playbook(
        RESTORE_PLAYBOOK,
        extra_vars={"restore_confirm": "yes", "restore_from": "pgbackrest", "restore_repo": 2},
    )
    for name, host in db_hosts.items():
        state["after"][name] = host.run(
            "runuser -u postgres -- psql -XAtq -d %s -c %s", APP_DB, FINGERPRINT
        )
        directory = sql(host, "SHOW data_directory", db="postgres")
        state["restore_command"][name] = host.run(
            "grep ^restore_command %s/postgresql.auto.conf", directory
        ).stdout
        state["log"][name] = host.run(
            "grep -h 'restore backup set' /var/log/pgbackrest/%s-restore.log | tail -1", APP_DB
        ).stdout
    return state


def test_restore_from_the_s3_repository_succeeds(db_hosts, restore_from_s3):
    run = restore_from_s3["run"]
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert all(counter["failed"] == 0 for counter in recap(run.stdout).values())


def test_restore_from_the_s3_repository_reads_backup_and_wal_from_it(host, restore_from_s3):
    name = host.backend.get_hostname()
    assert "repo2: restore backup set" in restore_from_s3["log"][name]
    assert "--repo=2" in restore_from_s3["restore_command"][name]


def test_restore_from_the_s3_repository_has_every_row(host, restore_from_s3):
    name = host.backend.get_hostname()
    after = restore_from_s3["after"][name]
    assert after.rc == 0, after.stderr
    assert restore_from_s3["before"][name].split()[0] == str(ROWS + 100)
    assert after.stdout.strip() == restore_from_s3["before"][name]
