"""The bookmarks service: ``create_app`` builds a configured, validated Flask app.

The factory reads like a list of verbs; each module wires itself with ``init_app(app)``. There is
no app at import time (``wsgi.py`` makes the one gunicorn serves), so tests can build several.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import iscoroutinefunction
from pathlib import Path
from types import FunctionType
from typing import Any

from flask import Flask

from bookmarks import api, cli, fastpath, index, logs, metrics, middleware, ops
from bookmarks.config import BaseConfig, config_class_from_env
from bookmarks.errors import register_errorhandlers
from bookmarks.extensions import db, migrate
from bookmarks.repository import ping_idle_connections

__all__ = ["BookmarksFlask", "create_app"]


class BookmarksFlask(Flask):
    """Flask, remembering which of its functions are plain ``def`` (the service has no async).

    Flask asks ``inspect.iscoroutinefunction`` about every hook and view on every request, a
    dozen times per request here (a twentieth of a cached read's CPU, measured). The answer for
    a function never changes, so it is kept, by the function itself (a bound method's
    ``__func__``): one entry per function of the app, however many requests. Anything else, and
    every async function, goes through Flask's own ``ensure_sync``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plain: dict[FunctionType, bool] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """``func`` itself when it is a plain function or method, else Flask's wrapper."""
        key = getattr(func, "__func__", func)
        if type(key) is not FunctionType:
            return super().ensure_sync(func)
        plain = self._plain.get(key)
        if plain is None:
            plain = self._plain[key] = not iscoroutinefunction(key)
        return func if plain else super().ensure_sync(func)


def create_app(config_class: type[BaseConfig] | BaseConfig | None = None) -> Flask:
    """Build the app from a config class, a config instance, or ``BOOKMARKS_CONFIG``.

    ``_validate()`` runs before anything else, so a deployment with a missing or weak secret, a
    non-PostgreSQL database or an oversized ``PAGE_SIZE`` fails at start with every problem named.
    """
    config = _load_config(config_class)
    config._validate()

    app = BookmarksFlask(__name__)
    app.config.from_mapping(config.flask_config())
    app.config["CACHE_CONFIG"] = config.get_cache_config()

    logs.configure_logging(app)
    init_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    metrics.init_app(app)
    # After every hook it must know of, and inside the request-id and header middleware.
    fastpath.init_app(app)
    # Last: its WSGI middleware goes around everything the others installed (the fast path's).
    middleware.init_app(app)
    cli.init_app(app)
    return app


def _load_config(config_class: type[BaseConfig] | BaseConfig | None) -> BaseConfig:
    if config_class is None:
        config_class = config_class_from_env()
    return config_class() if isinstance(config_class, type) else config_class


def init_extensions(app: Flask) -> None:
    """Bind the database (idle connections pinged) and the migrations (checkout or wheel)."""
    db.init_app(app)
    with app.app_context():
        ping_idle_connections(db.engine, app.config["DB_PING_IDLE_SECONDS"])
    migrate.init_app(app, db, directory=str(migrations_dir()), compare_type=True)


def register_blueprints(app: Flask) -> None:
    """The API (with its OpenAPI document), the ops endpoints and the index at ``/``."""
    api.init_app(app)
    ops.init_app(app)
    index.init_app(app)


def migrations_dir() -> Path:
    """Where the Alembic scripts are.

    An installed wheel carries them as ``bookmarks/migrations``; a checkout (editable install) has
    them at ``app/migrations``, two levels above this package.
    """
    packaged = Path(__file__).with_name("migrations")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"
