"""The pgBackRest repository on the backup host (web2 is in the `backup` group): it holds the
stanza and takes the backups over SSH, the db host archives its WAL there, each side's key may run
pgBackRest's remote and nothing else, and restore.yml and restore-drill.yml on the db host read the
repository there, down to a lost data directory brought back to a moment between two writes; the
daily dump is copied there too."""

from __future__ import annotations

import json

import pytest
from conftest import DB, WEB2, address, node, run_playbook

BACKUP = WEB2
STANZA = "bookmarks"
REPO = "/var/lib/pgbackrest/repo"
ON_BACKUP = f"runuser -u pgbackrest -- pgbackrest --stanza={STANZA}"
ON_DB = f"runuser -u postgres -- pgbackrest --stanza={STANZA}"
ROWS_A = range(1, 301)
ROWS_B = range(301, 501)
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


def test_the_restore_drill_passes_on_the_db_host_reading_the_backup_hosts_repository(
    offsite_restore,
):
    drill, _ = run_playbook("restore-drill.yml")
    assert drill.returncode == 0, drill.stdout[-3000:]
    assert "Restore drill passed" in drill.stdout
