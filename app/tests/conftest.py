"""Fixtures in the flaskr style (``app``, ``client``, ``runner``) over a real PostgreSQL.

``DATABASE_URL`` names a server where the tests may create databases (``scripts/test-app.sh``
starts a throwaway cluster and exports it). The session migrates one test database to head
with the real Alembic scripts; each test gets a fresh app on it and leaves the tables empty.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from flask_migrate import upgrade
from prometheus_client import REGISTRY
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bookmarks import create_app
from bookmarks.config import TestingConfig
from bookmarks.extensions import db
from bookmarks.fastpath import CachedReads
from bookmarks.logs import HANDLER_MARK
from bookmarks.ops import readiness_engine
from bookmarks.repository import UserRepository, wait_out_leases

APP_DIR = Path(__file__).resolve().parents[1]
PGCLUSTER_SH = APP_DIR / "tools" / "pgcluster.sh"
TABLES = "bookmarks, api_tokens, users"


def server_url() -> str:
    """The PostgreSQL server the tests run against (a superuser URL)."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        pytest.exit(
            "DATABASE_URL is not set: run scripts/test-app.sh (it starts a throwaway PostgreSQL)",
            returncode=2,
        )
    return url


def libpq_url(url: str) -> str:
    """The same URL in the form psycopg.connect() takes."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(name: str) -> str:
    """(Re)create database ``name`` on the test server; return its SQLAlchemy URL."""
    with psycopg.connect(libpq_url(server_url()), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(server_url()).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    """Drop database ``name`` (closing whatever still uses it)."""
    with psycopg.connect(libpq_url(server_url()), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def make_app(database_url: str, **overrides: Any) -> Flask:
    """A testing app on ``database_url``; overrides are config fields."""
    return create_app(TestingConfig(DATABASE_URL=database_url, **overrides))


def acknowledge(app: Flask) -> None:
    """What a writer outside the service does after its commit: wait out the read leases.

    The service's own writes do this before they answer (``principals``: read leases); a test
    that commits behind the app's back must too, before it counts its write as done.
    """
    wait_out_leases(app.config["READ_LEASE_SECONDS"])


def cache_hits() -> float:
    """How many reads the service's caches answered so far (the single-process registry)."""
    return REGISTRY.get_sample_value("bookmarks_cache_requests_total", {"result": "hit"}) or 0.0


def cached_reads_of(app: Flask) -> CachedReads | None:
    """The app's ``CachedReads`` middleware (its ``answered`` counts what it answered), if any."""
    layer: Any = app.wsgi_app
    while not isinstance(layer, CachedReads):
        if hasattr(layer, "app"):
            layer = layer.app
        elif hasattr(layer, "wsgi_app"):
            layer = layer.wsgi_app
        else:
            return None  # the plain path: no fast path installed
    return layer


def answered_below_flask(app: Flask) -> int:
    """How many requests the fast path answered without Flask (0 on the plain path)."""
    layer = cached_reads_of(app)
    return layer.answered if layer is not None else 0


def pytest_report_header() -> str:
    """Which path the suite runs on (``scripts/test-app.sh`` runs it on both)."""
    return f"bookmarks: FASTPATH={os.environ.get('FASTPATH') or 'on (default)'}"


def dispose(app: Flask) -> None:
    """Close the app's connections, so many short-lived apps never exhaust the server."""
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    readiness_engine(app).dispose()


# Served by ``gunicorn_workers``: the app, with the pid of the worker that answered in a header.
_PID_APP = """
import os

from bookmarks.wsgi import app as bookmarks_app


def app(environ, start_response):
    def start(status, headers, exc_info=None):
        headers.append(("X-Worker-Pid", str(os.getpid())))
        return start_response(status, headers, exc_info)

    return bookmarks_app(environ, start)
"""


@dataclass
class Served:
    """A running gunicorn: where it listens, and a way to call it."""

    base: str
    log: Path

    def call(
        self, path: str, token: str | None = None, method: str = "GET", body: Any = None
    ) -> tuple[int, Any, int]:
        """(status, JSON body, pid of the worker) of one request on a new connection."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(  # noqa: S310 - loopback only
            self.base + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                status, payload, got = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, payload, got = error.code, error.read(), error.headers
        return status, json.loads(payload) if payload else None, int(got["X-Worker-Pid"])


@contextmanager
def gunicorn_workers(
    database_url: str, directory: Path, workers: int = 2, **env: str
) -> Iterator[Served]:
    """Gunicorn with the shipped config on a loopback port, ``workers`` real worker processes.

    ``env`` adds to the environment (e.g. ``READ_LEASE_MS``, ``CACHE_MAX_BYTES``); the config is
    ``testing`` unless it says otherwise.
    """
    (directory / "pidapp.py").write_text(_PID_APP)
    metrics_dir = directory / "metrics"
    metrics_dir.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {
        **os.environ,
        "BOOKMARKS_CONFIG": "testing",
        "DATABASE_URL": database_url,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "PYTHONPATH": str(directory),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": str(workers),
        **env,
    }
    log_path = directory / "gunicorn.log"
    gunicorn = Path(sys.executable).with_name("gunicorn")
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(gunicorn), "--config", "python:bookmarks.gunicorn_conf", "pidapp:app"],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        served = Served(f"http://127.0.0.1:{port}", log_path)
        try:
            for _ in range(300):
                try:
                    served.call("/health")
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                pytest.fail("gunicorn did not answer: " + log_path.read_text())
            yield served
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def migrate_to_head(database_url: str) -> None:
    """Run the real migrations, as ``flask db upgrade`` does."""
    app = make_app(database_url)
    with app.app_context():
        upgrade()
    dispose(app)


def pgcluster(command: str, directory: Path) -> dict[str, str]:
    """Run a ``tools/pgcluster.sh`` function on ``directory``; return the variables it exports."""
    script = f'source "{PGCLUSTER_SH}" && {command} "{directory}" && env -0'
    result = subprocess.run(["bash", "-c", script], capture_output=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"{command} failed: {result.stderr.decode(errors='replace')}")
    pairs = (item.split("=", 1) for item in result.stdout.decode().split("\0") if "=" in item)
    return dict(pairs)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database migrated to head for this test session."""
    url = create_database("bookmarks_test")
    migrate_to_head(url)
    yield url
    drop_database("bookmarks_test")


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    """A fresh app (fresh cache) per test; the tables are emptied afterwards."""
    app = make_app(database_url)
    yield app
    with app.app_context():
        db.session.remove()
        with db.engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    dispose(app)


@pytest.fixture
def app_factory(app: Flask, database_url: str) -> Iterator[Callable[..., Flask]]:
    """More apps on the test database (each with its own cache), e.g. a second "host"."""
    del app  # depends on it so the tables are emptied after the test
    apps: list[Flask] = []

    def factory(**overrides: Any) -> Flask:
        apps.append(make_app(overrides.pop("DATABASE_URL", database_url), **overrides))
        return apps[-1]

    yield factory
    for made in apps:
        dispose(made)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of ``app``."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """A CLI runner of ``app``."""
    return app.test_cli_runner()


@pytest.fixture
def make_user(app: Flask) -> Callable[[str], str]:
    """Create a user (or reuse it) and return a fresh token for it."""

    def make(name: str = "alice") -> str:
        with app.app_context():
            users = UserRepository(db.session)
            user = users.get_by_name(name) or users.create(name)
            issued = users.issue_token(user)
            db.session.commit()
        return issued.token

    return make


@pytest.fixture
def token(make_user: Callable[[str], str]) -> str:
    """A token of user alice."""
    return make_user("alice")


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    """Headers authenticating as alice."""
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def create(client: FlaskClient, auth: dict[str, str]) -> Callable[..., dict[str, Any]]:
    """POST a bookmark as alice and return its JSON (asserting it was created)."""

    def create(url: str = "https://example.org/", **fields: Any) -> dict[str, Any]:
        response = client.post("/api/bookmarks", json={"url": url, **fields}, headers=auth)
        assert response.status_code == 201, response.json
        return response.json

    return create


@pytest.fixture
def log_lines(app: Flask) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Capture what the JSON log handler writes; call the result to get the parsed lines."""
    del app  # the app installs the handler
    handler = next(h for h in logging.getLogger().handlers if getattr(h, HANDLER_MARK, False))
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    handler.setStream(previous)


@pytest.fixture
def only_the_json_handler(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[bool], io.StringIO]]:
    """Route the root logger to the app's JSON handler alone (pytest adds its own beside it).

    Call with ``direct=False`` to add a second handler, which sends access lines the ordinary
    way (a record through the logger). Returns the buffer the JSON handler writes to.
    """
    del app  # installs the handler
    handler = next(h for h in logging.root.handlers if getattr(h, HANDLER_MARK, False))
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)

    def route(direct: bool) -> io.StringIO:
        others = [] if direct else [logging.NullHandler()]
        monkeypatch.setattr(logging.root, "handlers", [handler, *others])
        return buffer

    yield route
    handler.setStream(previous)
