"""The fast path: every speed-up beside the plain Flask path, in one place, behind ``FASTPATH``.

The plain path is the reference: each API request runs Flask's hooks, checks its token with one
query through SQLAlchemy on a pooled connection, and logs its access line through ``logging``.
With ``FASTPATH`` on (the default), ``init_app`` installs instead:

* ``leases``: the token check shared by one worker's concurrent requests and *leased* for
  ``READ_LEASE_MS``, with every commit waiting the lease out (``repository``'s commit wait);
* ``connections``: the check on one held connection, as a prepared statement on psycopg;
* ``cached_reads``: ``GET /api/bookmarks/<id>`` of a leased token and a cached bookmark answered
  as WSGI middleware below Flask, with ``access_log`` writing its line straight to the handler.

Answering below Flask means skipping Flask's hooks, so the fast path honours exactly the hooks it
knows (``KNOWN_HOOKS``: what each does, it does itself). An app with any other request hook (a
scope check, an audit, CORS) gets no fast path: ``init_app`` refuses to install beside one, and
``CachedReads`` answers nothing if one was added after ``create_app``. Teach it the new hook, or
run with ``FASTPATH=off``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask

from bookmarks import api, logs, metrics, middleware
from bookmarks.config import ConfigError
from bookmarks.extensions import db
from bookmarks.fastpath.cached_reads import CachedReads
from bookmarks.fastpath.connections import PrincipalQuery, lookup_principals_raw
from bookmarks.fastpath.leases import SharedChecks
from bookmarks.repository import wait_out_leases_after_commits

__all__ = ["KNOWN_HOOKS", "CachedReads", "init_app", "unknown_hooks"]

# The request hooks ``CachedReads`` does the work of, by registry: the request id and start time,
# the token check (a lease of the same query), the access line and the metrics.
KNOWN_HOOKS: dict[str, tuple[Callable[..., Any], ...]] = {
    "before_request_funcs": (middleware.start_request, api.authenticate),
    "after_request_funcs": (logs.log_request_hook, metrics.observe_hook),
    "teardown_request_funcs": (),
    "url_value_preprocessors": (),
}


def unknown_hooks(app: Flask) -> list[str]:
    """The app's request hooks that the fast path does not know (and so would skip)."""
    found = []
    for registry, known in KNOWN_HOOKS.items():
        for scope, hooks in getattr(app, registry).items():
            for hook in hooks:
                if hook not in known:
                    name = getattr(hook, "__qualname__", repr(hook))
                    where = f"blueprint {scope}" if scope else "app"
                    found.append(f"{registry}[{where}]: {hook.__module__}.{name}")
    return found


def init_app(app: Flask) -> None:
    """Install the fast path when ``FASTPATH`` is on (before ``middleware`` wraps the app).

    Raises ``ConfigError`` when the app already has a request hook the fast path does not know.
    """
    if not app.config["FASTPATH"]:
        return
    unknown = unknown_hooks(app)
    if unknown:
        raise ConfigError(
            app.config["CONFIG_NAME"],
            [
                "the fast path would skip these request hooks: "
                + "; ".join(unknown)
                + " (teach bookmarks.fastpath about them, or set FASTPATH=off)"
            ],
        )
    lease = app.config["READ_LEASE_SECONDS"]
    with app.app_context():
        engine = db.engine
    wait_out_leases_after_commits(engine, lease)
    checks = app.extensions[api.CHECKS_KEY] = SharedChecks(
        PrincipalQuery(engine),
        lambda hashes: lookup_principals_raw(engine, hashes),
        lease=lease,
        max_leases=app.config["CACHE_CONFIG"]["max_entries"],
    )
    app.wsgi_app = CachedReads(  # type: ignore[method-assign]
        app.wsgi_app,
        checks,
        app.extensions[api.SERVICE_KEY],
        app.extensions[api.BODIES_KEY],
        mimetype=app.json.mimetype,  # type: ignore[attr-defined]
        prefix=api.URL_PREFIX + "/",
        endpoint=api.ITEM_ENDPOINT,
        honoured=lambda: not _refused(app),
    )


def _refused(app: Flask) -> bool:
    unknown = unknown_hooks(app)
    if unknown:
        logging.getLogger(__name__).error(
            "fast path off: request hooks it does not know: %s", "; ".join(unknown)
        )
    return bool(unknown)
