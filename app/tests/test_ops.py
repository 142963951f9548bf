"""Ops endpoints: liveness without I/O, readiness that follows the database, build status."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from bookmarks.extensions import db
from bookmarks.ops import readiness_engine
from bookmarks.repository import UserRepository
from conftest import dispose, make_app, migrate_to_head, pgcluster


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def unreachable(app_factory: Callable[..., Flask]) -> FlaskClient:
    """An app whose DATABASE_URL points at a port nobody listens on."""
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/postgres"
    return app_factory(DATABASE_URL=url).test_client()


def test_health_is_ok(client: FlaskClient) -> None:
    response = client.get("/health")
    assert (response.status_code, response.json) == (200, {"status": "ok"})


def test_health_needs_no_database(unreachable: FlaskClient) -> None:
    assert unreachable.get("/health").status_code == 200


def test_ready_when_the_database_answers(client: FlaskClient) -> None:
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json == {"status": "ready", "checks": {"database": "ok"}}


def test_readiness_timeout_does_not_leak_into_pooled_connections(
    app: Flask, client: FlaskClient
) -> None:
    assert client.get("/health/ready").status_code == 200
    with app.app_context():
        timeout = db.session.execute(text("SHOW statement_timeout")).scalar()
    assert timeout == "5s"


def test_ready_answers_when_requests_hold_every_pooled_connection(
    app: Flask, client: FlaskClient
) -> None:
    """Its own connection: the app's pool, exhausted, would make it wait its 5 s and fail."""
    with app.app_context():
        engine = db.engine
        held = [engine.connect() for _ in range(engine.pool.size() + engine.pool._max_overflow)]
        try:
            assert engine.pool.checkedout() == len(held)
            response = client.get("/health/ready")
        finally:
            for connection in held:
                connection.close()
    assert (response.status_code, response.json["status"]) == (200, "ready")


def test_ready_waits_for_its_own_connection_no_longer_than_its_timeout(app: Flask) -> None:
    """Probes that pile up wait at most the readiness timeout for its one connection, then 503."""
    engine = readiness_engine(app)
    assert engine.pool.size() == 1
    assert engine.pool._max_overflow == 0
    assert engine.pool._timeout == app.config["READINESS_TIMEOUT_MS"] / 1000
    with engine.connect():  # a probe still running
        response = app.test_client().get("/health/ready")
    assert response.status_code == 503
    assert response.json["checks"]["database"] == "failed: TimeoutError"


def test_not_ready_when_the_database_is_unreachable(unreachable: FlaskClient) -> None:
    response = unreachable.get("/health/ready")
    assert response.status_code == 503
    assert response.json == {
        "status": "unavailable",
        "checks": {"database": "failed: OperationalError"},
    }


def test_status_reports_the_build(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(VERSION="1.2.3", RELEASE_ID="20261122T0600Z-abc1234", GIT_SHA="abc1234")
    body = app.test_client().get("/_status").json
    assert body["service"] == "bookmarks"
    assert (body["version"], body["release_id"], body["git_sha"]) == (
        "1.2.3",
        "20261122T0600Z-abc1234",
        "abc1234",
    )
    assert body["config"] == "testing"
    assert body["started_at"].endswith("+00:00")
    assert body["uptime_seconds"] >= 0
    assert body["migration_head"] == body["database_revision"] == "0003_data_version_triggers"


def test_status_reads_release_identity_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, app_factory: Callable[..., Flask]
) -> None:
    monkeypatch.setenv("BOOKMARKS_RELEASE_ID", "r42")
    monkeypatch.setenv("BOOKMARKS_GIT_SHA", "deadbeef")
    monkeypatch.delenv("BOOKMARKS_VERSION", raising=False)
    body = app_factory().test_client().get("/_status").json
    assert (body["release_id"], body["git_sha"], body["version"]) == ("r42", "deadbeef", "1.0.0")


def test_status_answers_without_a_database(unreachable: FlaskClient) -> None:
    body = unreachable.get("/_status").json
    assert body["database_revision"] is None
    assert body["migration_head"] == "0003_data_version_triggers"


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[Path]:
    """A PostgreSQL cluster of this module's own, so stopping it disturbs no other test."""
    directory = Path(tempfile.mkdtemp(prefix="bookmarks-ops-pg-"))
    try:
        pgcluster("pgcluster_start", directory)
        yield directory
    finally:
        pgcluster("pgcluster_stop", directory)
        shutil.rmtree(directory, ignore_errors=True)


def test_readiness_follows_a_database_stop_and_restart(own_cluster: Path) -> None:
    url = pgcluster("pgcluster_resume_env", own_cluster)["DATABASE_URL"]
    migrate_to_head(url)
    app = make_app(url)
    try:
        with app.app_context():
            users = UserRepository(db.session)
            token = users.issue_token(users.create("olga")).token
            db.session.commit()
        client = app.test_client()
        auth = {"Authorization": f"Bearer {token}"}
        assert client.get("/health/ready").status_code == 200
        assert client.get("/api/bookmarks", headers=auth).status_code == 200

        pgcluster("pgcluster_stop", own_cluster)
        assert client.get("/health/ready").status_code == 503
        assert client.get("/health").status_code == 200
        down = client.get("/api/bookmarks", headers=auth)
        assert down.status_code == 503
        assert down.headers["Retry-After"] == "5"
        assert down.json["message"] == "the database is unavailable; retry shortly"

        pgcluster("pgcluster_resume", own_cluster)
        assert client.get("/health/ready").status_code == 200
        assert client.get("/api/bookmarks", headers=auth).status_code == 200
    finally:
        dispose(app)
