"""The pgBackRest repository on the backup host (web2 is in the `backup` group): it holds the
stanza and takes the backups over SSH, the db host archives its WAL there, each side's key may run
pgBackRest's remote and nothing else, and restore.yml and restore-drill.yml on the db host read the
repository there, down to a lost data directory brought back to a moment between two writes; the
daily dump is copied there too."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from conftest import DB, WEB2, address, node, run_playbook

BACKUP = WEB2
STANZA = "bookmarks"
REPO = "/var/lib/pgbackrest/repo"
ON_BACKUP = f"runuser -u pgbackrest -- pgbackrest --stanza={STANZA}"
ON_DB = f"runuser -u postgres -- pgbackrest --stanza={STANZA}"
ROWS_A = range(1, 301)
ROWS_B = range(301, 501)
FAILURE_TAG = "pgbackrest-failure"
FINGERPRINT = (
    "SELECT count(*) || ' ' "
    "|| md5(coalesce(string_agg(id || '|' || payload, E'\\n' ORDER BY id), '')) FROM offsite"
)


def sql(query: str, db: str = "bookmarks") -> str:
    return node(DB).check_output("runuser -u postgres -- psql -XAtq -d %s -c %s", db, query)


def insert(rows: range) -> None:
    sql(
        f"INSERT INTO offsite (id, payload) SELECT g, md5(g::text) "
        f"FROM generate_series({rows.start}, {rows.stop - 1}) AS g"
    )


def test_the_backup_host_holds_the_stanza_with_a_full_backup():
    info = json.loads(node(BACKUP).check_output(f"{ON_BACKUP} --output=json info"))
    assert info[0]["status"]["code"] == 0
    assert "full" in [backup["type"] for backup in info[0]["backup"]]


def test_the_db_host_pushes_to_the_backup_host_and_runs_no_timers_of_its_own():
    db = node(DB)
    config = db.file("/etc/pgbackrest.conf").content_string
    assert f"repo1-host={address(BACKUP)}" in config
    assert "repo1-path" not in config
    for timer in ("pgbackrest-full.timer", "pgbackrest-diff.timer", "pgbackrest-check.timer"):
        assert not db.file(f"/etc/systemd/system/{timer}").exists


@pytest.mark.parametrize("kind", ["full", "diff", "check"])
def test_the_backup_host_runs_the_timers(kind):
    timer = node(BACKUP).service(f"pgbackrest-{kind}@{STANZA}.timer")
    assert timer.is_enabled
    assert timer.is_running


def test_wal_archived_on_the_db_host_lands_in_the_backup_hosts_repository():
    # Something to archive, outside the app's database (the drill compares every app table).
    sql("CREATE TABLE IF NOT EXISTS offsite_wal (at timestamptz)", db="postgres")
    sql("INSERT INTO offsite_wal VALUES (now())", db="postgres")
    segment = sql("SELECT pg_walfile_name(pg_switch_wal())", db="postgres")
    found = node(BACKUP).run(
        "for i in $(seq 1 60); do ls %s/archive/%s/*/%s/%s-* >/dev/null 2>&1 && exit 0; "
        "sleep 1; done; exit 1",
        REPO,
        STANZA,
        segment[:16],
        segment,
    )
    assert found.rc == 0, segment


def test_the_backup_and_check_units_succeed_on_the_backup_host():
    backup = node(BACKUP)
    assert backup.run(f"systemctl start pgbackrest-diff@{STANZA}.service").rc == 0
    assert backup.run(f"systemctl start pgbackrest-check@{STANZA}.service").rc == 0
    assert "diff backup" in backup.check_output(f"{ON_BACKUP} info")


@pytest.mark.parametrize(
    ("source", "user", "target", "login"),
    [(DB, "postgres", BACKUP, "pgbackrest"), (BACKUP, "pgbackrest", DB, "postgres")],
)
@pytest.mark.parametrize(
    "command", ["id", "cat /etc/passwd", "/usr/bin/pgbackrest version; id", ""]
)
def test_pgbackrests_ssh_key_runs_nothing_but_pgbackrests_remote(
    source, user, target, login, command
):
    tried = node(source).run(
        "runuser -u %s -- ssh -o BatchMode=yes %s@%s %s", user, login, address(target), command
    )
    assert tried.rc != 0
    assert "pgbackrest-ssh-gate: refused" in tried.stderr


@pytest.mark.parametrize(
    ("name", "path", "peer", "commands"),
    [
        (DB, "/var/lib/postgresql/.ssh/authorized_keys", BACKUP, ["pgbackrest-ssh-gate pg"]),
        (
            BACKUP,
            "/var/lib/pgbackrest/.ssh/authorized_keys",
            DB,
            ["pgbackrest-ssh-gate repo", f"pgbackrest-dump-receive {STANZA}"],
        ),
    ],
)
def test_each_side_authorizes_the_others_keys_from_its_address_for_one_command_each(
    name, path, peer, commands
):
    lines = node(name).file(path).content_string.splitlines()
    assert [
        f'restrict,from="{address(peer)}",command="/usr/local/sbin/{command}" ssh-ed25519 '
        for command in commands
    ] == [line[: line.index("ssh-ed25519 ") + len("ssh-ed25519 ")] for line in lines]


def test_the_daily_dump_is_copied_to_the_backup_host_and_nothing_else_passes_its_key():
    db, backup = node(DB), node(BACKUP)
    assert db.run("systemctl start postgresql-backup.service").rc == 0
    newest = db.check_output("ls /var/backups/postgresql/*.pgc | sort | tail -n 1")
    name = newest.rsplit("/", 1)[1]
    copy = f"/var/lib/pgbackrest/dumps/{STANZA}/{name}"
    here = db.check_output("sha256sum %s", newest).split()[0]
    assert backup.check_output("sha256sum %s", copy).split()[0] == here
    refused = db.run(
        "runuser -u postgres -- ssh -i /var/lib/postgresql/.ssh/id_dump_ed25519 "
        "-o IdentitiesOnly=yes -o BatchMode=yes pgbackrest@%s %s </dev/null",
        address(BACKUP),
        "../x.pgc 0",
    )
    assert refused.rc != 0
    assert "pgbackrest-dump-receive: refused" in refused.stderr


@pytest.fixture(scope="module")
def offsite_restore():
    """Rows A, the time T, rows B, WAL archived on the backup host; the db host's data directory
    lost and restored from the backup host to the end of the archive; then to T."""
    db = node(DB)
    sql("DROP TABLE IF EXISTS offsite; CREATE TABLE offsite (id int PRIMARY KEY, payload text)")
    insert(ROWS_A)
    after_a = sql(FINGERPRINT)
    target = sql("SELECT now()::text", db="postgres")
    sql("SELECT pg_sleep(0.1)", db="postgres")
    insert(ROWS_B)
    after_b = sql(FINGERPRINT)
    db.check_output(f"{ON_DB} check")
    directory = sql("SHOW data_directory", db="postgres")
    unit = db.check_output(
        "systemctl list-units --plain --no-legend 'postgresql@*' | awk '{print $1}'"
    )
    db.check_output("systemctl stop %s && rm -rf -- %s", unit, directory)
    latest, _ = run_playbook(
        "restore.yml", "-e", "restore_confirm=yes", "-e", "restore_from=pgbackrest"
    )
    at_latest = db.run(
        "runuser -u postgres -- psql -XAtq -d bookmarks -c %s", FINGERPRINT
    ).stdout.strip()
    to_time, _ = run_playbook(
        "restore.yml",
        "-e",
        "restore_confirm=yes",
        "-e",
        "restore_from=pgbackrest",
        "-e",
        f"restore_target_time='{target}'",
    )
    at_time = db.run(
        "runuser -u postgres -- psql -XAtq -d bookmarks -c %s", FINGERPRINT
    ).stdout.strip()
    return {
        "after_a": after_a,
        "after_b": after_b,
        "latest": latest,
        "at_latest": at_latest,
        "to_time": to_time,
        "at_time": at_time,
    }


def test_a_lost_data_directory_comes_back_from_the_backup_host_with_every_archived_row(
    offsite_restore,
):
    assert offsite_restore["latest"].returncode == 0, offsite_restore["latest"].stdout[-3000:]
    assert offsite_restore["at_latest"] == offsite_restore["after_b"]


def test_a_restore_to_a_time_reads_the_backup_hosts_archive_up_to_that_moment(offsite_restore):
    assert offsite_restore["to_time"].returncode == 0, offsite_restore["to_time"].stdout[-3000:]
    assert offsite_restore["at_time"] == offsite_restore["after_a"]


def test_the_weekly_restore_drill_passes_on_the_db_host_reading_the_backup_hosts_repository(
    offsite_restore,
):
    # The unit pgbackrest-drill.timer starts; playbooks/restore-drill.yml runs the same drill (the
    # postgresql scenario runs it that way).
    db = node(DB)
    assert db.service("pgbackrest-drill.timer").is_enabled
    drill = db.run("systemctl start pgbackrest-drill.service")
    journal = db.check_output("journalctl -u pgbackrest-drill.service --no-pager -o cat -n 20")
    assert drill.rc == 0, journal
    assert "Restore drill passed on " in journal
    assert f"stanza {STANZA} restored from repo1 to drill-" in journal


@contextmanager
def ssh_refused(on: str, source: str) -> Iterator[None]:
    """SSH on one host refuses connections from another (a TCP reset, at once), through a table
    of its own that filters before the firewall's and is deleted afterwards."""
    host = node(on)
    table = "test_ssh_refused"
    rules = (
        f"table inet {table} {{ chain input {{ type filter hook input priority -10; "
        f"ip saddr {address(source)} tcp dport 22 reject with tcp reset; }}; }}"
    )
    host.check_output("echo %s | nft -f -", rules)
    try:
        yield
    finally:
        host.check_output("nft delete table inet %s", table)


def hook_fired(name: str, unit: str, before: int) -> bool:
    """Whether the OnFailure= hook wrote a line naming the unit after `before` such lines (the hook
    runs after the unit has failed: wait up to a minute)."""
    return (
        node(name)
        .run(
            "for i in $(seq 1 60); do "
            "[ $(journalctl -t %s --no-pager -o cat | grep -cF %s) -gt %s ] && exit 0; sleep 1; "
            "done; exit 1",
            FAILURE_TAG,
            unit,
            str(before),
        )
        .rc
        == 0
    )


def hook_lines(name: str, unit: str) -> int:
    lines = node(name).run("journalctl -t %s --no-pager -o cat", FAILURE_TAG).stdout.splitlines()
    return len([line for line in lines if unit in line])


def test_a_db_host_out_of_reach_fails_the_backup_unit_fires_the_hook_and_keeps_serving():
    backup = node(BACKUP)
    unit = f"pgbackrest-diff@{STANZA}.service"
    before = hook_lines(BACKUP, unit)
    with ssh_refused(on=DB, source=BACKUP):
        started = backup.run("systemctl start %s", unit)
        state = backup.run("systemctl is-failed %s", unit).stdout.strip()
        fired = hook_fired(BACKUP, unit, before)
        serving = sql("SELECT count(*) FROM offsite")
    backup.run("systemctl reset-failed %s", unit)
    assert started.rc != 0
    assert state == "failed"
    assert fired, hook_lines(BACKUP, unit)
    assert int(serving) > 0
    # Back in reach, the next backup works again.
    assert backup.run("systemctl start %s", unit).rc == 0


def archiver() -> dict[str, str]:
    row = sql(
        "SELECT archived_count, coalesce(last_archived_wal, ''), failed_count, "
        "coalesce(last_failed_wal, '') FROM pg_stat_archiver",
        db="postgres",
    ).split("|")
    return dict(zip(("archived", "last_archived", "failed", "last_failed"), row, strict=True))


def wait_for(condition, seconds: int = 120) -> bool:
    for _ in range(seconds):
        if condition():
            return True
        time.sleep(1)
    return False


def test_a_backup_host_out_of_reach_stops_archiving_not_the_database_and_the_wal_catches_up():
    db = node(DB)
    sql("CREATE TABLE IF NOT EXISTS offsite_wal (at timestamptz)", db="postgres")
    failed_before = int(archiver()["failed"])
    with ssh_refused(on=BACKUP, source=DB):
        sql("INSERT INTO offsite_wal VALUES (now())", db="postgres")
        segment = sql("SELECT pg_walfile_name(pg_switch_wal())", db="postgres")
        failing = wait_for(lambda: int(archiver()["failed"]) > failed_before, 60)
        # The database keeps taking writes; the segment waits in pg_wal/ for its turn.
        rows_before = int(sql("SELECT count(*) FROM offsite_wal", db="postgres"))
        sql("INSERT INTO offsite_wal SELECT now() FROM generate_series(1, 100)", db="postgres")
        rows_after = int(sql("SELECT count(*) FROM offsite_wal", db="postgres"))
        waiting = db.run(
            "test -e %s/pg_wal/archive_status/%s.ready",
            sql("SHOW data_directory", db="postgres"),
            segment,
        ).rc
        stuck = archiver()
    assert failing, stuck
    assert rows_after == rows_before + 100
    assert waiting == 0, stuck
    assert stuck["last_archived"] < segment, stuck
    # Back in reach: the next finished segment wakes the archiver, which pushes the waiting ones.
    sql("INSERT INTO offsite_wal VALUES (now())", db="postgres")
    sql("SELECT pg_switch_wal()", db="postgres")
    assert wait_for(lambda: archiver()["last_archived"] > segment), archiver()
    assert (
        node(BACKUP).run("ls %s/archive/%s/*/%s/%s-*", REPO, STANZA, segment[:16], segment).rc == 0
    )
