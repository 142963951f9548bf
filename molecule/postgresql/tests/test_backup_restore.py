"""Backups and restores: playbooks/backup.yml fetches a dump, the timer's own unit writes complete
dumps and applies the retention, playbooks/restore.yml brings the data back exactly and refuses to
run unconfirmed, and a backup of a stopped database fails visibly and keeps the earlier dumps."""

import pytest
import yaml
from conftest import (
    APP_DB,
    APP_USER,
    BACKUP_DIR,
    PROJECT_DIR,
    cluster_unit,
    recap,
    run_playbook,
    sql,
)

BACKUP_PLAYBOOK = PROJECT_DIR / "playbooks" / "backup.yml"
RESTORE_PLAYBOOK = PROJECT_DIR / "playbooks" / "restore.yml"
ROLE_DEFAULTS = yaml.safe_load((PROJECT_DIR / "roles/postgresql/defaults/main.yml").read_text())
BACKUP_UNIT = "postgresql-backup.service"
ROWS = 1000
# Row count and a checksum over every row's content, in id order.
FINGERPRINT = (
    "SELECT count(*) || ' ' || md5(coalesce(string_agg(id || '|' || url || '|' || title || '|' "
    "|| created::text, E'\\n' ORDER BY id), '')) FROM roundtrip"
)


def dumps(host) -> list[str]:
    """Names of the complete dumps in the backup directory, newest first."""
    names = host.check_output(
        "find %s -maxdepth 1 -type f -name %s -printf '%%f\\n'", BACKUP_DIR, f"{APP_DB}-*.pgc"
    ).split()
    return sorted(names, reverse=True)


def app_sql(host, password: str, statements: str) -> None:
    """Run statements as the app's role over TCP, the way the app writes its data."""
    result = host.run(
        "PGPASSWORD=%s psql -XAtq -v ON_ERROR_STOP=1 -h 127.0.0.1 -U %s -d %s -c %s",
        password,
        APP_USER,
        APP_DB,
        statements,
    )
    assert result.rc == 0, result.stderr


def test_backup_playbook_fetches_the_new_dump(db_hosts, tmp_path):
    run = run_playbook(
        BACKUP_PLAYBOOK, extra_vars={"backup_fetch": True, "backup_fetch_dir": str(tmp_path)}
    )
    assert run.returncode == 0, run.stdout[-3000:]
    for name, host in db_hosts.items():
        newest = dumps(host)[0]
        fetched = tmp_path / name / newest
        assert fetched.is_file(), sorted(tmp_path.rglob("*"))
        assert fetched.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom-format magic
        assert fetched.stat().st_mode & 0o777 == 0o600
        assert fetched.stat().st_size == host.file(f"{BACKUP_DIR}/{newest}").size


@pytest.fixture(scope="module")
def round_trip(db_hosts, app_password):
    """Write rows, back up with the timer's unit, drop the table, restore with the playbook."""
    state: dict = {"before": {}, "dumps_before": {}, "dumps_after": {}, "backup_rc": {}}
    for name, host in db_hosts.items():
        app_sql(
            host,
            app_password,
            "DROP TABLE IF EXISTS roundtrip; "
            "CREATE TABLE roundtrip (id int PRIMARY KEY, url text NOT NULL, title text, "
            "created timestamptz NOT NULL DEFAULT now()); "
            "INSERT INTO roundtrip (id, url, title) SELECT g, 'https://example.test/' || g, "
            f"md5(g::text) FROM generate_series(1, {ROWS}) AS g",
        )
        state["before"][name] = sql(host, FINGERPRINT)
        state["dumps_before"][name] = dumps(host)
        state["backup_rc"][name] = host.run("systemctl start %s", BACKUP_UNIT).rc
        state["dumps_after"][name] = dumps(host)
        sql(host, "DROP TABLE roundtrip")
    state["refused"] = run_playbook(RESTORE_PLAYBOOK)
    state["after_refusal"] = {
        name: sql(host, "SELECT to_regclass('roundtrip') IS NULL")
        for name, host in db_hosts.items()
    }
    state["restore"] = run_playbook(RESTORE_PLAYBOOK, extra_vars={"restore_confirm": "yes"})
    state["after"] = {
        name: host.run("runuser -u postgres -- psql -XAtq -d %s -c %s", APP_DB, FINGERPRINT)
        for name, host in db_hosts.items()
    }
    return state


def test_backup_unit_writes_a_new_readable_dump(host, round_trip):
    name = host.backend.get_hostname()
    assert round_trip["backup_rc"][name] == 0
    new = set(round_trip["dumps_after"][name]) - set(round_trip["dumps_before"][name])
    assert len(new) == 1, round_trip["dumps_after"][name]
    dump = f"{BACKUP_DIR}/{new.pop()}"
    assert host.file(dump).user == "postgres"
    assert host.file(dump).mode == 0o600
    assert "TABLE DATA public roundtrip" in host.check_output("pg_restore --list %s", dump)


def test_restore_refuses_to_run_unconfirmed(db_hosts, round_trip):
    refused = round_trip["refused"]
    assert refused.returncode != 0
    assert "-e restore_confirm=yes" in refused.stderr
    assert all(counters["changed"] == 0 for counters in recap(refused.stdout).values())
    # The dropped table is still missing: the refusal touched nothing.
    assert set(round_trip["after_refusal"].values()) == {"t"}


def test_restore_playbook_succeeds(db_hosts, round_trip):
    restore = round_trip["restore"]
    assert restore.returncode == 0, restore.stdout[-4000:]
    counters = recap(restore.stdout)
    assert set(counters) == set(db_hosts)
    assert all(counter["failed"] == 0 for counter in counters.values())


def test_restore_brings_the_rows_back_identical(host, round_trip):
    name = host.backend.get_hostname()
    before = round_trip["before"][name]
    after = round_trip["after"][name]
    assert before.split()[0] == str(ROWS)
    assert after.rc == 0, after.stderr
    assert after.stdout.strip() == before


def test_restored_database_keeps_owner_and_privileges(host, round_trip):
    owner, acl = sql(
        host,
        f"SELECT pg_get_userbyid(datdba), datacl FROM pg_database WHERE datname = '{APP_DB}'",
        db="postgres",
    ).split("|")
    assert owner == APP_USER
    assert not [entry for entry in acl.strip("{}").split(",") if entry.startswith("=")], acl
    assert sql(host, "SELECT tableowner FROM pg_tables WHERE tablename = 'roundtrip'") == APP_USER


def test_replaced_database_is_kept_for_rollback(host, round_trip):
    previous = f"{APP_DB}_before_restore"
    tables = sql(host, "SELECT count(*) FROM pg_tables WHERE tablename = 'roundtrip'", db=previous)
    # The copy is the database as it was before the restore: the table had been dropped.
    assert tables == "0"


# A stand-in for the app: restore.yml stops `<app>.service` on the web hosts around a restore.
FAKE_APP_UNIT = (
    "[Unit]\nDescription=Stand-in for the app (molecule)\n[Service]\nExecStart=sleep infinity\n"
)
APP_PID = "systemctl show --property=MainPID --value bookmarks.service"


@pytest.fixture(scope="module")
def failed_restore(db_hosts, round_trip):
    """Restore a dump that fails half-way, with a stand-in app running on the db hosts."""
    poisoned = f"{APP_DB}-19990101T000000Z.pgc"
    state: dict = {"fingerprint": {}, "pid_before": {}}
    for name, host in db_hosts.items():
        # A dump that pg_restore lists fine but cannot restore: an owner role that is gone.
        sql(
            host,
            "CREATE ROLE ghost NOLOGIN; CREATE TABLE ghost_table (id int); "
            "ALTER TABLE ghost_table OWNER TO ghost",
        )
        host.check_output(
            "runuser -u postgres -- pg_dump --format=custom --file=%s/%s %s",
            BACKUP_DIR,
            poisoned,
            APP_DB,
        )
        sql(host, "DROP TABLE ghost_table; DROP ROLE ghost")
        state["fingerprint"][name] = sql(host, FINGERPRINT)
        host.check_output(
            "printf %s > /etc/systemd/system/bookmarks.service && systemctl daemon-reload "
            "&& systemctl start bookmarks.service",
            FAKE_APP_UNIT,
        )
        state["pid_before"][name] = host.check_output(APP_PID)
    try:
        state["run"] = run_playbook(
            RESTORE_PLAYBOOK,
            extra_vars={
                "restore_confirm": "yes",
                "restore_file": poisoned,
                "restore_web_group": "db",
            },
        )
        state["app_active"] = {
            name: host.run("systemctl is-active bookmarks.service").stdout.strip()
            for name, host in db_hosts.items()
        }
        state["pid_after"] = {name: host.check_output(APP_PID) for name, host in db_hosts.items()}
        state["after"] = {name: sql(host, FINGERPRINT) for name, host in db_hosts.items()}
    finally:
        for host in db_hosts.values():
            host.run(
                "systemctl stop bookmarks.service; rm -f /etc/systemd/system/bookmarks.service "
                "%s/%s; systemctl daemon-reload",
                BACKUP_DIR,
                poisoned,
            )
    return state


def test_failed_restore_reports_failure(failed_restore):
    run = failed_restore["run"]
    assert run.returncode != 0
    assert "ghost" in run.stdout + run.stderr


def test_failed_restore_restarts_the_app_it_stopped(host, failed_restore):
    name = host.backend.get_hostname()
    assert failed_restore["app_active"][name] == "active"
    # A new main PID: the app was stopped for the restore and started again after the failure.
    assert failed_restore["pid_after"][name] != failed_restore["pid_before"][name]


def test_failed_restore_leaves_the_database_untouched(host, failed_restore):
    name = host.backend.get_hostname()
    assert failed_restore["after"][name] == failed_restore["fingerprint"][name]


def test_retention_keeps_the_newest_dumps_and_none_too_old(host):
    keep_count = ROLE_DEFAULTS["postgresql_backup_keep_count"]
    keep_days = ROLE_DEFAULTS["postgresql_backup_keep_days"]
    # Older-named stand-ins (retention looks at names and ages, not content): one more than the
    # count keeps, the newest of them aged past the day limit.
    fakes = [f"{APP_DB}-2020010{n}T000000Z.pgc" for n in range(1, keep_count + 2)]
    aged = fakes[-1]
    for fake in fakes:
        host.check_output("install -o postgres -m 0600 /dev/null %s/%s", BACKUP_DIR, fake)
    host.check_output("touch -d '%s days ago' %s/%s", str(keep_days + 1), BACKUP_DIR, aged)
    try:
        listed_before = dumps(host)
        assert host.run("systemctl start %s", BACKUP_UNIT).rc == 0
        listed_after = dumps(host)
    finally:
        for fake in fakes:
            host.run("rm -f %s/%s", BACKUP_DIR, fake)
    new = [name for name in listed_after if name not in listed_before]
    assert len(new) == 1
    candidates = sorted([*listed_before, *new], reverse=True)
    expected = [name for rank, name in enumerate(candidates) if rank < keep_count and name != aged]
    assert listed_after == expected


def test_backup_of_a_stopped_database_fails_visibly_and_keeps_earlier_dumps(host):
    unit = cluster_unit(host)
    earlier = host.check_output("cd %s && sha256sum -- %s-*.pgc", BACKUP_DIR, APP_DB)
    assert earlier, "no earlier dump to protect"
    host.check_output("systemctl stop %s", unit)
    try:
        backup = host.run("systemctl start %s", BACKUP_UNIT)
        state = host.run("systemctl is-failed %s", BACKUP_UNIT).stdout.strip()
        log = host.run("journalctl -u %s -n 20 --no-pager", BACKUP_UNIT).stdout
        partial = host.check_output("find %s -name '*.partial'", BACKUP_DIR)
        kept = host.check_output("cd %s && sha256sum -- %s-*.pgc", BACKUP_DIR, APP_DB)
    finally:
        host.run("systemctl start %s", unit)
        host.run("systemctl reset-failed %s", BACKUP_UNIT)
    assert backup.rc != 0
    assert state == "failed"
    assert "pg_dump" in log
    assert partial == ""
    assert kept == earlier
    assert host.service(unit).is_running
