"""Point-in-time recovery with pgBackRest: WAL is archived continuously, the backup and check units
work and report a failure (the repository's disk full) through their OnFailure= hook while the
database goes on, and playbooks/restore.yml (restore_from=pgbackrest) brings the cluster back to the
end of the archive or to a moment between two writes, row for row, keeping the replaced data
directory; playbooks/restore-drill.yml restores the newest backup into a scratch cluster while the
app writes and finds it identical to the live database at its restore point, and fails at once when
the archive misses WAL; the weekly timer's unit runs the same drill, and reports a restore that
differs from the live database (an unlogged table) by staying failed and firing the hook."""

from __future__ import annotations

import json
import re
import time

import pytest
from conftest import APP_DB, PROJECT_DIR, cluster_unit, recap, run_playbook, said, sql

RESTORE_PLAYBOOK = PROJECT_DIR / "playbooks" / "restore.yml"
DRILL_PLAYBOOK = PROJECT_DIR / "playbooks" / "restore-drill.yml"
DRILL_DIR = "/var/lib/postgresql/restore-drill"
DRILL_UNIT = "postgresql-restore-drill.service"
# The unit pgbackrest-drill.timer starts: the same drill as the playbook's.
DRILL_TIMER_UNIT = "pgbackrest-drill.service"
WRITER_UNIT = "drill-writer.service"
ARCHIVE = "/var/lib/pgbackrest/archive"
ARCHIVE_ASIDE = "/root/drill-archive-aside.tar"
STANZA = APP_DB
PGBACKREST = f"runuser -u postgres -- pgbackrest --stanza={STANZA}"
FAILURE_TAG = "pgbackrest-failure"
ROWS_A = range(1, 501)
ROWS_B = range(501, 801)
# Row count and a checksum over every row's content, in id order.
FINGERPRINT = (
    "SELECT count(*) || ' ' "
    "|| md5(coalesce(string_agg(id || '|' || payload, E'\\n' ORDER BY id), '')) FROM pitr"
)


def insert(host, rows: range) -> None:
    sql(
        host,
        f"INSERT INTO pitr (id, payload) SELECT g, md5(g::text) "
        f"FROM generate_series({rows.start}, {rows.stop - 1}) AS g",
    )


def data_dir(host) -> str:
    return sql(host, "SHOW data_directory", db="postgres")


def kept_dirs(host) -> list[str]:
    directory = data_dir(host)
    return host.check_output("ls -d %s.before-restore-* 2>/dev/null || true", directory).split()


@pytest.mark.parametrize(
    "unit",
    [
        "pgbackrest-full.timer",
        "pgbackrest-diff.timer",
        "pgbackrest-check.timer",
        "pgbackrest-drill.timer",
    ],
)
def test_pgbackrest_timers_are_enabled_and_waiting(host, unit):
    service = host.service(unit)
    assert service.is_enabled
    assert service.is_running


def test_wal_is_archived_through_pgbackrest(host):
    assert sql(host, "SHOW archive_mode", db="postgres") == "on"
    assert "pgbackrest" in sql(host, "SHOW archive_command", db="postgres")
    assert sql(host, "SHOW archive_timeout", db="postgres") == "1min"
    # check switches to a new WAL segment and waits until the archive has it.
    assert host.run(f"{PGBACKREST} check").rc == 0
    assert int(sql(host, "SELECT archived_count FROM pg_stat_archiver", db="postgres")) > 0


def test_backup_and_check_units_succeed(host):
    assert host.run("systemctl start pgbackrest-backup@diff.service").rc == 0
    assert host.run("systemctl start pgbackrest-check.service").rc == 0
    info = host.check_output(f"{PGBACKREST} info")
    assert "status: ok" in info
    assert "diff backup" in info


def hook_lines(host, unit: str) -> int:
    """Journal lines of the OnFailure= hook that name a unit."""
    lines = host.run("journalctl -t %s --no-pager -o cat", FAILURE_TAG).stdout.splitlines()
    return len([line for line in lines if unit in line])


# The repository's file system full: a tmpfs holding a copy of the repository, filled up, mounted
# over it for the test (the real repository stays untouched beneath it).
FULL_REPO = "/run/pitr-full-repo"


def test_a_full_repository_disk_fails_the_backup_unit_fires_the_hook_and_keeps_serving(host):
    repo = "/var/lib/pgbackrest"
    unit = "pgbackrest-backup@diff.service"
    before = hook_lines(host, unit)
    try:
        host.check_output(
            f"mkdir -p {FULL_REPO} && used=$(du -sk {repo} | cut -f1) "
            f"&& mount -t tmpfs -o size=$((used + 4096))k,mode=0750 tmpfs {FULL_REPO} "
            f"&& cp -a {repo}/. {FULL_REPO}/ && chown --reference={repo} {FULL_REPO} "
            f"&& {{ dd if=/dev/zero of={FULL_REPO}/.filler bs=64k 2>/dev/null || true; }} "
            f"&& mount --bind {FULL_REPO} {repo}"
        )
        # Full: no room left for a 64 KiB block.
        assert int(host.check_output("df --output=avail -k %s | tail -1", repo)) < 64
        backup = host.run("systemctl start %s", unit)
        state = host.run("systemctl is-failed %s", unit).stdout.strip()
        # The hook runs after the unit has failed: wait for its line, up to a minute.
        fired = host.run(
            "for i in $(seq 1 60); do "
            "[ $(journalctl -t %s --no-pager -o cat | grep -cF %s) -gt %s ] && exit 0; sleep 1; "
            "done; exit 1",
            FAILURE_TAG,
            unit,
            str(before),
        )
        # The database goes on taking writes while its repository cannot take anything.
        written = host.run(
            "runuser -u postgres -- psql -XAtq -d %s -c %s",
            APP_DB,
            "CREATE TABLE IF NOT EXISTS full_repo (n int); INSERT INTO full_repo VALUES (1)",
        )
    finally:
        host.run("umount %s; umount %s; rmdir %s", repo, FULL_REPO, FULL_REPO)
        host.run("systemctl reset-failed %s", unit)
    assert backup.rc != 0
    assert state == "failed"
    assert fired.rc == 0, hook_lines(host, unit)
    assert host.service(cluster_unit(host)).is_running
    assert written.rc == 0, written.stderr
    # The real repository is back beneath, whole: pgBackRest checks it (and archives what waited).
    host.check_output(f"{PGBACKREST} check")
    sql(host, "DROP TABLE full_repo")


@pytest.fixture(scope="module")
def pitr(db_hosts):
    """Rows A, the time T, rows B, WAL archived; the data directory lost and restored to the end of
    the archive; then a restore to T."""
    state: dict = {"after_a": {}, "after_b": {}, "kept_before": {}}
    for name, host in db_hosts.items():
        sql(host, "DROP TABLE IF EXISTS pitr; CREATE TABLE pitr (id int PRIMARY KEY, payload text)")
        insert(host, ROWS_A)
        state["after_a"][name] = sql(host, FINGERPRINT)
        state["kept_before"][name] = kept_dirs(host)
    # One moment for every host (the containers share the machine's clock), after A's commits.
    target = sql(next(iter(db_hosts.values())), "SELECT now()::text", db="postgres")
    for name, host in db_hosts.items():
        # B commits strictly after T.
        sql(host, "SELECT pg_sleep(0.1)", db="postgres")
        insert(host, ROWS_B)
        state["after_b"][name] = sql(host, FINGERPRINT)
        # Switch to a new WAL segment and wait until the archive holds the one with B.
        host.check_output(f"{PGBACKREST} check")
    # The host loses its data directory: only the repository is left.
    for host in db_hosts.values():
        directory = data_dir(host)
        host.check_output("systemctl stop %s && rm -rf -- %s", cluster_unit(host), directory)
    state["latest"] = run_playbook(
        RESTORE_PLAYBOOK, extra_vars={"restore_confirm": "yes", "restore_from": "pgbackrest"}
    )
    state["at_latest"] = {
        name: host.run("runuser -u postgres -- psql -XAtq -d %s -c %s", APP_DB, FINGERPRINT)
        for name, host in db_hosts.items()
    }
    state["to_time"] = run_playbook(
        RESTORE_PLAYBOOK,
        extra_vars={
            "restore_confirm": "yes",
            "restore_from": "pgbackrest",
            "restore_target_time": target,
        },
    )
    state["at_time"] = {
        name: host.run("runuser -u postgres -- psql -XAtq -d %s -c %s", APP_DB, FINGERPRINT)
        for name, host in db_hosts.items()
    }
    state["kept_after"] = {name: kept_dirs(host) for name, host in db_hosts.items()}
    return state


def test_restore_to_the_end_of_the_archive_succeeds(db_hosts, pitr):
    run = pitr["latest"]
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert all(counter["failed"] == 0 for counter in recap(run.stdout).values())


def test_lost_data_directory_comes_back_with_every_archived_row(host, pitr):
    name = host.backend.get_hostname()
    after = pitr["at_latest"][name]
    assert after.rc == 0, after.stderr
    assert pitr["after_b"][name].split()[0] == str(len(ROWS_A) + len(ROWS_B))
    assert after.stdout.strip() == pitr["after_b"][name]


def test_restore_to_a_time_succeeds(db_hosts, pitr):
    run = pitr["to_time"]
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert set(recap(run.stdout)) == set(db_hosts)


def test_restore_to_a_time_has_the_rows_before_it_and_none_after(host, pitr):
    name = host.backend.get_hostname()
    after = pitr["at_time"][name]
    assert after.rc == 0, after.stderr
    assert pitr["after_a"][name].split()[0] == str(len(ROWS_A))
    assert after.stdout.strip() == pitr["after_a"][name]


def test_restore_keeps_the_replaced_data_directory(host, pitr):
    name = host.backend.get_hostname()
    # The first restore replaced a lost directory; the second kept the one it replaced.
    new = set(pitr["kept_after"][name]) - set(pitr["kept_before"][name])
    assert len(new) == 1, pitr["kept_after"][name]
    for kept in new:
        assert host.file(f"{kept}/PG_VERSION").exists


def test_restored_cluster_archives_a_quiet_write_within_archive_timeout(host, pitr):
    # No WAL switch is forced: only archive_timeout (1 min) may close the segment. Right after a
    # restore the checkpointer used to sleep through it for checkpoint_timeout (5 min).
    segment = sql(
        host,
        "INSERT INTO pitr (id, payload) VALUES (-1, 'after the restore') "
        "RETURNING pg_walfile_name(pg_current_wal_insert_lsn())",
    )
    query = f"SELECT coalesce(last_archived_wal, '') >= '{segment}' FROM pg_stat_archiver"
    for _ in range(75):
        if sql(host, query, db="postgres") == "t":
            break
        time.sleep(2)
    else:
        pytest.fail(f"{segment} was not archived within 150 s (archive_timeout is 1 min)")
    sql(host, "DELETE FROM pitr WHERE id = -1")


def test_restored_cluster_archives_again(host, pitr):
    assert sql(host, "SELECT pg_is_in_recovery()", db="postgres") == "f"
    assert host.run(f"{PGBACKREST} check").rc == 0


def test_restore_with_a_target_time_refuses_a_dump(db_hosts):
    run = run_playbook(
        RESTORE_PLAYBOOK,
        extra_vars={"restore_confirm": "yes", "restore_target_time": "2026-12-02 10:15:00+00"},
    )
    assert run.returncode != 0
    assert "restore_target_time needs restore_from=pgbackrest" in " ".join(
        (run.stdout + run.stderr).split()
    )


@pytest.fixture(scope="module")
def drill(db_hosts):
    """The restore drill, run while a writer inserts a row every few milliseconds on every host."""
    for host in db_hosts.values():
        sql(
            host,
            "DROP TABLE IF EXISTS drill_writes; "
            "CREATE TABLE drill_writes "
            "(id serial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())",
        )
        host.check_output(
            "systemd-run --unit=%s --collect --uid=postgres bash -c %s",
            WRITER_UNIT,
            f"while :; do psql -XAtq -d {APP_DB} -c 'INSERT INTO drill_writes DEFAULT VALUES'; "
            "sleep 0.02; done",
        )
    try:
        run = run_playbook(DRILL_PLAYBOOK)
    finally:
        for host in db_hosts.values():
            host.run("systemctl stop %s", WRITER_UNIT)
    live = {
        name: int(sql(host, "SELECT count(*) FROM drill_writes")) for name, host in db_hosts.items()
    }
    return {"run": run, "live_after": live}


def drilled_rows(output: str, name: str) -> dict[str, int]:
    """The row counts the drill reported for one host."""
    found = re.search(rf"Restore drill passed on {re.escape(name)}: .*? rows: (\{{.*?\}})", output)
    assert found, output[-4000:]
    return json.loads(found.group(1))


def test_restore_drill_passes_while_the_app_writes(db_hosts, drill):
    run = drill["run"]
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert set(recap(run.stdout)) == set(db_hosts)


def test_restore_drill_compares_the_rows_written_up_to_its_restore_point(host, drill):
    name = host.backend.get_hostname()
    rows = drilled_rows(said(drill["run"]), name)
    # The writer ran before, during and after the restore point.
    assert 0 < rows["public.drill_writes"] < drill["live_after"][name]


def test_restore_drill_leaves_no_scratch_cluster(host, drill):
    assert not host.file(DRILL_DIR).exists
    assert not host.service(DRILL_UNIT).is_running
    assert host.service(cluster_unit(host)).is_running


@pytest.fixture
def archive_without_segments(db_hosts):
    """Every host's archived WAL segments taken out of the repository, and put back afterwards."""
    for host in db_hosts.values():
        host.check_output(
            # Segment files are named by 24 hex digits, a dash and their checksum.
            f"cd %s && find . -type f -name '{'?' * 24}-*' > /root/drill-aside.list "
            "&& tar -cf %s -T /root/drill-aside.list && xargs rm -f < /root/drill-aside.list",
            ARCHIVE,
            ARCHIVE_ASIDE,
        )
    yield
    for host in db_hosts.values():
        host.check_output("tar -xkf %s -C %s && rm -f %s", ARCHIVE_ASIDE, ARCHIVE, ARCHIVE_ASIDE)
        assert host.run(f"{PGBACKREST} check").rc == 0


def test_restore_drill_fails_at_once_when_the_archive_misses_wal(
    db_hosts, archive_without_segments
):
    run = run_playbook(DRILL_PLAYBOOK)
    output = said(run)
    assert run.returncode != 0
    assert all(counter["failed"] == 1 for counter in recap(run.stdout).values()), output[-4000:]
    assert "the scratch server stopped before it recovered" in output
    assert "Restore drill passed" not in output
    for host in db_hosts.values():
        assert not host.file(DRILL_DIR).exists
        assert host.service(cluster_unit(host)).is_running


def test_the_weekly_drill_finds_a_mismatch_stays_failed_and_fires_the_hook(host):
    """The unit pgbackrest-drill.timer starts runs the same drill as the playbook. An unlogged
    table's rows are never in the WAL, so no backup holds them: restored, it is empty, and the
    drill must say the restore differs from the live database."""
    sql(
        host,
        "DROP TABLE IF EXISTS drill_unlogged; CREATE UNLOGGED TABLE drill_unlogged (id int); "
        "INSERT INTO drill_unlogged SELECT generate_series(1, 10)",
    )
    before = hook_lines(host, DRILL_TIMER_UNIT)
    try:
        started = host.run("systemctl start %s", DRILL_TIMER_UNIT)
        state = host.run("systemctl is-failed %s", DRILL_TIMER_UNIT).stdout.strip()
        fired = host.run(
            "for i in $(seq 1 60); do "
            "[ $(journalctl -t %s --no-pager -o cat | grep -cF %s) -gt %s ] && exit 0; "
            "sleep 1; done; exit 1",
            FAILURE_TAG,
            DRILL_TIMER_UNIT,
            str(before),
        )
        journal = said(host.run("journalctl -u %s --no-pager -o cat -n 40", DRILL_TIMER_UNIT))
    finally:
        sql(host, "DROP TABLE IF EXISTS drill_unlogged")
        host.run("systemctl reset-failed %s", DRILL_TIMER_UNIT)
    assert started.rc != 0
    assert state == "failed"
    assert fired.rc == 0, hook_lines(host, DRILL_TIMER_UNIT)
    assert "Restore drill FAILED" in journal
    assert "differs from the live database" in journal
    assert '"public.drill_unlogged": {"md5": "' in journal
    assert not host.file(DRILL_DIR).exists
    assert host.service(cluster_unit(host)).is_running
