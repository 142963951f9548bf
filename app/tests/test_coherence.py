"""Coherence that no writer can forget: the database changes ``data_version`` itself.

Writers here know nothing of the app: plain psycopg connections (as ``psql`` would), with no
version bump and no lease wait, and a real ``pg_dump``/``pg_restore``. Readers are real gunicorn
worker processes and a second app instance, each with a warm cache.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from bookmarks.repository import lease_wait
from conftest import (
    PGCLUSTER_SH,
    Served,
    create_database,
    dispose,
    drop_database,
    gunicorn_workers,
    libpq_url,
    make_app,
    migrate_to_head,
)

WORKERS = 2


def psql(database_url: str, statement: str, params: Any = None) -> None:
    """Commit one statement the way an operator in ``psql`` would: nothing else."""
    with psycopg.connect(libpq_url(database_url)) as connection:
        connection.execute(statement, params)


def on_every_worker(served: Served, path: str, token: str) -> dict[int, list[Any]]:
    """Call ``path`` on new connections until every worker has answered it twice; by pid."""
    answers: dict[int, list[Any]] = {}
    for _ in range(200):
        status, body, pid = served.call(path, token)
        answers.setdefault(pid, []).append((status, body))
        if len(answers) == WORKERS and all(len(seen) >= 2 for seen in answers.values()):
            return answers
    pytest.fail(f"not every worker answered: {sorted(answers)}")
    return answers  # not reached


@pytest.fixture(params=[0, 20], ids=["no-lease", "lease-20ms"])
def lease_ms(request: pytest.FixtureRequest) -> int:
    return request.param


@pytest.fixture
def served(app: Flask, database_url: str, tmp_path: Path, lease_ms: int) -> Iterator[Served]:
    del app  # empties the tables after the test (gunicorn is stopped first)
    with gunicorn_workers(database_url, tmp_path, WORKERS, READ_LEASE_MS=str(lease_ms)) as served:
        yield served


def settle(lease_ms: int) -> None:
    """Let a lease taken before the write end (nothing at all without leases).

    A writer outside the app cannot make readers' leases end sooner: its change reaches a reader
    holding one within ``READ_LEASE_MS`` of its commit; with leases off, at once.
    """
    if lease_ms:
        time.sleep(lease_wait(lease_ms / 1000))


def test_a_write_from_psql_is_seen_by_the_next_read_on_every_worker_and_instance(
    served: Served,
    app_factory: Callable[..., Flask],
    token: str,
    database_url: str,
    lease_ms: int,
) -> None:
    other = app_factory(READ_LEASE_MS=lease_ms).test_client()
    auth = {"Authorization": f"Bearer {token}"}
    psql(
        database_url,
        "INSERT INTO bookmarks (user_id, url, title) SELECT id, 'https://a.example/', 'v1'"
        " FROM users WHERE name = 'alice'",
    )
    status, page, _ = served.call("/api/bookmarks", token)
    assert status == 200
    path = f"/api/bookmarks/{page['items'][0]['id']}"
    # Warm every cache: single reads, list pages and searches.
    for read in (path, "/api/bookmarks", "/api/bookmarks?q=v1"):
        on_every_worker(served, read, token)
        other.get(read, headers=auth)
        other.get(read, headers=auth)

    psql(database_url, "UPDATE bookmarks SET title = 'v2 renamed'")
    settle(lease_ms)
    for pid, answers in on_every_worker(served, path, token).items():
        assert {body["title"] for _, body in answers} == {"v2 renamed"}, f"worker {pid}"
    assert other.get(path, headers=auth).json["title"] == "v2 renamed"
    for answers in on_every_worker(served, "/api/bookmarks?q=renamed", token).values():
        assert {body["total"] for _, body in answers} == {1}

    psql(
        database_url,
        "INSERT INTO bookmarks (user_id, url) SELECT id, 'https://b.example/'"
        " FROM users WHERE name = 'alice'",
    )
    settle(lease_ms)
    for answers in on_every_worker(served, "/api/bookmarks", token).values():
        assert {body["total"] for _, body in answers} == {2}
    assert other.get("/api/bookmarks", headers=auth).json["total"] == 2

    psql(database_url, "DELETE FROM bookmarks WHERE url = 'https://a.example/'")
    settle(lease_ms)
    for answers in on_every_worker(served, path, token).values():
        assert {status for status, _ in answers} == {404}
    assert other.get(path, headers=auth).status_code == 404

    psql(database_url, "UPDATE api_tokens SET revoked_at = now()")
    settle(lease_ms)
    for answers in on_every_worker(served, "/api/bookmarks", token).values():
        assert {status for status, _ in answers} == {401}
    assert other.get("/api/bookmarks", headers=auth).status_code == 401


# -- a restored older database --------------------------------------------------------------


@pytest.fixture
def restorable(tmp_path: Path) -> Iterator[tuple[str, Callable[[str], None]]]:
    """A database of its own and the PostgreSQL client binaries to dump and restore it."""
    url = create_database("bookmarks_restore")
    migrate_to_head(url)
    bindir = Path(
        subprocess.run(
            ["bash", "-c", f'source "{PGCLUSTER_SH}" && pgcluster_bindir'],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    dump = tmp_path / "older.dump"

    def run(tool: str) -> None:
        args = {
            "pg_dump": ["--format=custom", f"--file={dump}"],
            "pg_restore": ["--clean", "--if-exists", "--single-transaction", str(dump)],
        }[tool]
        subprocess.run(
            [str(bindir / tool), f"--dbname={libpq_url(url)}", *args],
            check=True,
            capture_output=True,
        )

    yield url, run
    drop_database("bookmarks_restore")


def test_a_restored_older_database_is_never_served_from_the_cache(
    restorable: tuple[str, Callable[[str], None]],
) -> None:
    url, run = restorable
    apps = [make_app(url, READ_LEASE_MS=0) for _ in range(2)]
    try:
        first, second = (made.test_client() for made in apps)
        runner = apps[0].test_cli_runner()
        token = runner.invoke(args=["users", "create", "alice"]).stdout.strip()
        auth = {"Authorization": f"Bearer {token}"}
        created = first.post(
            "/api/bookmarks", json={"url": "https://a.example/", "title": "A"}, headers=auth
        )
        path = f"/api/bookmarks/{created.json['id']}"
        versions = [version_of(url)]

        def read_everywhere(expected: str) -> None:
            for client in (first, second):
                for _ in range(2):  # the second from the cache, if at all
                    assert title(client, path, auth) == expected
                    items = client.get("/api/bookmarks", headers=auth).json["items"]
                    assert [item["title"] for item in items] == [expected]

        read_everywhere("A")
        run("pg_dump")
        assert first.patch(path, json={"title": "B"}, headers=auth).status_code == 200
        versions.append(version_of(url))
        read_everywhere("B")  # now cached under B's version on both instances

        run("pg_restore")
        assert version_of(url) == versions[0], "the restore put the older version back"
        read_everywhere("A")

        # The writes after a restore must not reuse the version B was cached under (a counter
        # would: A's version + 1), from the API and from psql alike.
        assert first.patch(path, json={"title": "C"}, headers=auth).status_code == 200
        versions.append(version_of(url))
        read_everywhere("C")
        run("pg_restore")
        psql(url, "UPDATE bookmarks SET title = 'D'")
        versions.append(version_of(url))
        read_everywhere("D")
        assert len(set(versions)) == len(versions), "no version was issued twice"
    finally:
        for made in apps:
            dispose(made)


def version_of(url: str) -> int:
    with psycopg.connect(libpq_url(url)) as connection:
        return connection.execute("SELECT data_version FROM users").fetchone()[0]


def title(client: FlaskClient, path: str, auth: dict[str, str]) -> str:
    response = client.get(path, headers=auth)
    assert response.status_code == 200
    return response.json["title"]
