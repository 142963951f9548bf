"""``/``: where a visitor (or ``make demo``'s URL) finds the API, its document and health checks.

Links are relative paths, as the API's page links are, so they are right behind any proxy and
never echo a Host header. Nothing here names the version, release or host: that is ``/_status``,
which nginx keeps to loopback.
"""

from __future__ import annotations

from flask import Blueprint, Flask, url_for

index = Blueprint("index", __name__)


@index.get("/")
def root() -> dict[str, object]:
    """The service's entry points."""
    return {
        "service": "bookmarks",
        "api": url_for("bookmarks.BookmarkCollection"),
        "openapi": url_for("api-docs.openapi_json"),
        "health": {"live": url_for("ops.health"), "ready": url_for("ops.ready")},
    }


def init_app(app: Flask) -> None:
    """Register ``/`` (after the API and ops blueprints whose endpoints it links to)."""
    app.register_blueprint(index)
