"""PostgreSQL over the network speaks TLS only: the web hosts reach the database with
verify-full against the db host's own CA, a plain-text connection is refused, and the app's,
the CLI's and the backup and restore playbooks' connections all work over it."""

from __future__ import annotations

import json
import shlex

import pytest
from conftest import DB, WEBS, address, curl, node, run_playbook

CA = "/etc/bookmarks/database-ca.crt"
# The app's own URL from its env file, as psql takes it (no driver, no query): the password
# stays on the web host, never in a test's command line or output.
PSQL = (
    "url=$(sed -n 's/^DATABASE_URL=\"\\(.*\\)\"$/\\1/p' /etc/bookmarks/bookmarks.env "
    "| sed 's/+psycopg//; s/?.*//'); "
    'psql -w -X -At "$url?{params}" -c {sql}'
)
SSL_OF_MY_CONNECTION = "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


def db_sql(query: str) -> str:
    command = f"runuser -u postgres -- psql -X -At -c {shlex.quote(query)}"
    return node(DB).check_output(command).strip()


def ready(web: str) -> dict:
    return json.loads(
        curl(
            node(web),
            *("--max-time", "10", "--unix-socket", "/run/bookmarks/gunicorn.sock"),
            "http://localhost/health/ready",
        )
    )


@pytest.mark.parametrize("web", WEBS)
def test_the_app_url_verifies_the_database_against_its_ca(web):
    host = node(web)
    env = "/etc/bookmarks/bookmarks.env"
    # Counted, not printed: the line holds the password.
    line = host.run(f"grep -c 'sslmode=verify-full&sslrootcert={CA}\"$' {env}")
    assert line.stdout.strip() == "1"
    ca = host.file(CA)
    assert (ca.user, ca.mode) == ("root", 0o644)
    assert ca.content_string == node(DB).file("/etc/ssl/postgresql/ca.crt").content_string


@pytest.mark.parametrize("web", WEBS)
def test_a_plain_text_connection_from_a_web_host_is_refused(web):
    refused = node(web).run(PSQL.format(params="sslmode=disable", sql="'SELECT 1'"))
    assert refused.rc != 0
    message = " ".join((refused.stdout + refused.stderr).split())
    # Refused by pg_hba.conf for the missing TLS, before any password was asked.
    assert "no pg_hba.conf entry" in message, message
    assert "no encryption" in message, message


@pytest.mark.parametrize("web", WEBS)
def test_the_same_credentials_connect_over_verified_tls(web):
    params = f"sslmode=verify-full&sslrootcert={CA}"
    got = node(web).check_output(PSQL.format(params=params, sql=shlex.quote(SSL_OF_MY_CONNECTION)))
    ssl, version = got.strip().split("|")
    assert ssl == "t"
    assert version in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("web", WEBS)
def test_the_database_shows_the_app_connections_as_tls(web):
    assert ready(web)["status"] == "ready"
    rows = db_sql(
        "SELECT s.ssl FROM pg_stat_activity AS a JOIN pg_stat_ssl AS s USING (pid) "
        f"WHERE a.usename = 'bookmarks' AND a.client_addr = '{address(web)}'"
    ).split()
    assert rows, f"no connection of {web}'s app on the database"
    assert set(rows) == {"t"}, rows


def test_pg_hba_admits_other_hosts_with_hostssl_only():
    rules = db_sql(
        "SELECT type || ' ' || address FROM pg_hba_file_rules "
        "WHERE address IS NOT NULL AND address NOT IN ('127.0.0.1', '::1')"
    ).splitlines()
    assert sorted(rules) == sorted(f"hostssl {address(web)}" for web in WEBS)


@pytest.mark.parametrize(
    ("path", "user", "group", "mode"),
    [
        ("/etc/ssl/postgresql/private/ca.key", "root", "root", 0o600),
        ("/etc/ssl/postgresql/private/server.key", "root", "postgres", 0o640),
        ("/etc/ssl/postgresql/private", "root", "postgres", 0o710),
    ],
)
def test_the_private_keys_are_closed(path, user, group, mode):
    f = node(DB).file(path)
    assert (f.user, f.group, f.mode) == (user, group, mode)


def test_backup_and_restore_playbooks_work_over_tls():
    backup, _ = run_playbook("backup.yml")
    assert backup.returncode == 0, " ".join((backup.stdout + backup.stderr).split())[-3000:]
    restore, _ = run_playbook("restore.yml", "-e", "restore_confirm=yes")
    assert restore.returncode == 0, " ".join((restore.stdout + restore.stderr).split())[-3000:]
    for web in WEBS:
        assert ready(web)["status"] == "ready"
