"""Operations endpoints: liveness, readiness, build status and Prometheus metrics.

``/health`` does no I/O, so a slow database never gets a healthy process restarted.
``/health/ready`` asks the database with short timeouts, on a connection of its own (so a pool
exhausted by requests cannot delay it), and answers 503 while it cannot, so a load balancer or
deploy check stops sending traffic instead of collecting 500s. ``/_status`` and
``/metrics`` are for operators: nginx should expose them to the monitoring network only.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app
from sqlalchemy import Connection, Engine, create_engine, text

from bookmarks import metrics
from bookmarks.extensions import migrate

ops = Blueprint("ops", __name__)

STARTED_KEY = "bookmarks.started"
HEAD_KEY = "bookmarks.migration_head"
READINESS_ENGINE_KEY = "bookmarks.readiness_engine"


def readiness_engine(app: Flask) -> Engine:
    """The engine of the readiness and status checks (``BaseConfig.readiness_engine_options``)."""
    return app.extensions[READINESS_ENGINE_KEY]


@contextmanager
def _timed_connection(engine: Engine, timeout_ms: int) -> Iterator[Connection]:
    """A connection in a transaction whose statements time out after ``timeout_ms``.

    A transaction, although the pool's connections autocommit, so that the timeout set with
    ``set_config(..., true)`` lasts for the check and never leaks into the pooled connection.
    """
    with (
        engine.connect().execution_options(isolation_level="READ COMMITTED") as connection,
        connection.begin(),
    ):
        connection.execute(
            text("SELECT set_config('statement_timeout', :timeout, true)"),
            {"timeout": str(timeout_ms)},
        )
        yield connection


def check_database(engine: Engine, timeout_ms: int) -> str | None:
    """Run ``SELECT 1`` under a statement timeout; return why it failed, or ``None``.

    The reason is the exception class only: driver messages can carry host names and users, and
    the readiness answer is visible to whoever can reach it. The full error goes to the log.
    """
    try:
        with _timed_connection(engine, timeout_ms) as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:
        current_app.logger.warning("readiness check failed: %s", error)
        return type(error).__name__
    return None


def database_revision(engine: Engine, timeout_ms: int) -> str | None:
    """The Alembic revision the database is at (``None`` when unknown or unreachable)."""
    try:
        with _timed_connection(engine, timeout_ms) as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception:
        return None


def migration_head(app: Flask) -> str | None:
    """The newest migration this release ships (what ``flask db heads`` prints), read once."""
    if HEAD_KEY not in app.extensions:
        from alembic.script import ScriptDirectory  # noqa: PLC0415 - only when first asked

        config = migrate.get_config(app.extensions["migrate"].directory)
        heads = ScriptDirectory.from_config(config).get_heads()
        app.extensions[HEAD_KEY] = ",".join(sorted(heads)) or None
    return app.extensions[HEAD_KEY]


@ops.get("/health")
def health() -> dict[str, str]:
    """Liveness: the process answers. No I/O on purpose."""
    return {"status": "ok"}


@ops.get("/health/ready")
def ready() -> tuple[dict[str, Any], int]:
    """Readiness: the database answers within the timeout (503 otherwise)."""
    engine = readiness_engine(current_app)
    failure = check_database(engine, current_app.config["READINESS_TIMEOUT_MS"])
    if failure:
        return {"status": "unavailable", "checks": {"database": f"failed: {failure}"}}, 503
    return {"status": "ready", "checks": {"database": "ok"}}, 200


@ops.get("/_status")
def status() -> dict[str, Any]:
    """What is running: version, release, git sha, start time, schema expected and present."""
    config = current_app.config
    started = current_app.extensions[STARTED_KEY]
    return {
        "service": "bookmarks",
        "version": config["VERSION"],
        "release_id": config["RELEASE_ID"],
        "git_sha": config["GIT_SHA"],
        "config": config["CONFIG_NAME"],
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "uptime_seconds": round(time.time() - started, 1),
        "python": platform.python_version(),
        "migration_head": migration_head(current_app),
        "database_revision": database_revision(
            readiness_engine(current_app), config["READINESS_TIMEOUT_MS"]
        ),
    }


@ops.get("/metrics")
def metrics_endpoint() -> Response:
    """Prometheus exposition, aggregated over all worker processes."""
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)


def init_app(app: Flask) -> None:
    """Register the endpoints and remember when this process started."""
    app.extensions[STARTED_KEY] = time.time()
    app.extensions[READINESS_ENGINE_KEY] = create_engine(
        app.config["SQLALCHEMY_DATABASE_URI"], **app.config["READINESS_ENGINE_OPTIONS"]
    )
    app.register_blueprint(ops)
