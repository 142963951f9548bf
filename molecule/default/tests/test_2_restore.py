"""Restores on a live host: an older dump comes back migrated to the live release's head and
gated, later deploys keep migrating from the database's own head, and a dump the live release does
not know is refused before anything stops."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from conftest import api, run_playbook, status_of

MANAGE = "/usr/local/sbin/bookmarks-manage"
BACKUP_DIR = "/var/backups/postgresql"
BACKUP_UNIT = "postgresql-backup.service"
UNKNOWN_HEAD = "9999_from_a_newer_release"


def live_manifest(host) -> dict:
    return json.loads(host.file("/srv/bookmarks/current/manifest.json").content_string)


def db_head(host) -> str:
    """The database's own migration head, read from alembic_version."""
    return host.check_output(
        "runuser -u postgres -- psql -XAtq -d bookmarks -c %s",
        "SELECT string_agg(version_num, ',') FROM alembic_version",
    )


def set_db_head(host, revision: str) -> None:
    host.check_output(
        "runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d bookmarks -c %s",
        f"UPDATE alembic_version SET version_num = '{revision}'",
    )


def newest_dump(host) -> str:
    return host.check_output(
        "find %s -maxdepth 1 -name 'bookmarks-*.pgc' -printf '%%f\\n' | sort | tail -n 1",
        BACKUP_DIR,
    )


def unit_identity(host) -> dict[str, str]:
    """What changes when the app's units stop or start: each unit's invocation and main PID."""
    return {
        f"{unit} {prop}": host.check_output(f"systemctl show --property={prop} --value {unit}")
        for unit in ("bookmarks.socket", "bookmarks.service")
        for prop in ("InvocationID", "MainPID")
    }


def changed_count(output: str, hostname: str) -> int:
    found = re.search(rf"^{re.escape(hostname)}\s+:.*\bchanged=(\d+)", output, re.M)
    assert found, output[-2000:]
    return int(found.group(1))


@pytest.fixture(scope="module")
def older_dump_restored(host):
    """Back up at head N-1 (downgraded first), deploy head N, restore that backup, deploy again."""
    hostname = host.backend.get_hostname()
    head = live_manifest(host)["migration_head"]
    older = [m for m in live_manifest(host)["migrations"] if m < head][-1]
    state: dict = {"head": head, "older": older}
    try:
        host.check_output(f"{MANAGE} db downgrade {older}")
        state["head_backed_up"] = db_head(host)
        backup = run_playbook("backup.yml", hostname)
        assert backup.returncode == 0, backup.stdout[-3000:]
        dump = newest_dump(host)

        state["deploy"] = run_playbook("deploy.yml", hostname, "-e", "app_force_release=true")
        state["head_after_deploy"] = db_head(host)

        state["restore"] = run_playbook(
            "restore.yml", hostname, "-e", "restore_confirm=yes", "-e", f"restore_file={dump}"
        )
        state["head_after_restore"] = db_head(host)
        state["ready"] = api(host, "GET", "/health/ready")
        state["status"] = status_of(host)
        token = host.check_output(f"{MANAGE} create-user restore-{uuid.uuid4().hex[:8]}")
        # Full-text search needs what head N added (the column N-1 lacks).
        state["search"] = api(host, "GET", "/api/bookmarks?q=restore", token)

        state["next_deploy"] = run_playbook("deploy.yml", hostname, "-e", "app_force_release=true")
        state["head_after_next_deploy"] = db_head(host)
        state["live_after_next_deploy"] = live_manifest(host)["release_id"]
        state["status_after_next_deploy"] = status_of(host)
    finally:
        # Whatever failed above, later tests get a database at the live release's head.
        host.run(f"{MANAGE} db upgrade")
    return state


def test_the_backup_was_taken_at_the_older_head(older_dump_restored):
    assert older_dump_restored["head_backed_up"] == older_dump_restored["older"]


def test_a_deploy_migrates_a_database_behind_the_releases_head(older_dump_restored):
    """The new release's head equals the live one's: the database's own head decides."""
    deploy = older_dump_restored["deploy"]
    assert deploy.returncode == 0, deploy.stdout[-3000:]
    assert older_dump_restored["head_after_deploy"] == older_dump_restored["head"]


def test_a_restored_older_dump_is_migrated_to_the_live_releases_head(older_dump_restored):
    restore = older_dump_restored["restore"]
    assert restore.returncode == 0, restore.stdout[-4000:] + restore.stderr[-2000:]
    assert older_dump_restored["head_after_restore"] == older_dump_restored["head"]


def test_the_restore_gates_on_readiness_as_a_deploy_does(older_dump_restored):
    text = " ".join(older_dump_restored["restore"].stdout.split())
    assert "Wait until the release answers ready through its socket" in text


def test_the_api_serves_after_the_restore(older_dump_restored):
    status, _, body = older_dump_restored["ready"]
    assert status == 200, body
    served = older_dump_restored["status"]
    assert served["database_revision"] == served["migration_head"] == older_dump_restored["head"]
    status, _, found = older_dump_restored["search"]
    assert status == 200, found


def test_the_next_deploy_after_the_restore_works(host, older_dump_restored):
    deploy = older_dump_restored["next_deploy"]
    assert deploy.returncode == 0, deploy.stdout[-3000:]
    assert older_dump_restored["head_after_next_deploy"] == older_dump_restored["head"]
    live = older_dump_restored["live_after_next_deploy"]
    assert older_dump_restored["status_after_next_deploy"]["release_id"] == live


@pytest.fixture(scope="module")
def newer_dump_refused(host):
    """A dump whose head no release here knows (as if taken under a newer release): restore it."""
    hostname = host.backend.get_hostname()
    head = live_manifest(host)["migration_head"]
    state: dict = {"head": head, "hostname": hostname}
    dump = ""
    try:
        set_db_head(host, UNKNOWN_HEAD)
        host.check_output(f"systemctl start {BACKUP_UNIT}")
        dump = newest_dump(host)
        set_db_head(host, head)
        state["units_before"] = unit_identity(host)
        state["restore"] = run_playbook(
            "restore.yml", hostname, "-e", "restore_confirm=yes", "-e", f"restore_file={dump}"
        )
        state["units_after"] = unit_identity(host)
        state["head_after"] = db_head(host)
    finally:
        # The schema is head N's either way: only the recorded revision was made up.
        set_db_head(host, head)
        if dump:
            host.run(f"rm -f {BACKUP_DIR}/{dump}")
    return state


def test_a_dump_the_live_release_does_not_know_is_refused(newer_dump_refused):
    restore = newer_dump_refused["restore"]
    assert restore.returncode != 0
    text = " ".join((restore.stdout + restore.stderr).split())
    assert f"at migration {UNKNOWN_HEAD}, which the live release" in text, text[-3000:]


def test_the_refusal_comes_before_anything_stops(newer_dump_refused):
    assert newer_dump_refused["units_after"] == newer_dump_refused["units_before"]
    assert newer_dump_refused["head_after"] == newer_dump_refused["head"]
    restore = newer_dump_refused["restore"]
    assert changed_count(restore.stdout, newer_dump_refused["hostname"]) == 0
