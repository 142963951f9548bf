"""``/api/bookmarks``: the HTTP edge of ``BookmarkService``.

Authentication happens in the blueprint's ``before_request``, before any body is parsed, so an
anonymous client learns nothing about validation rules and costs no parsing. Views translate HTTP
into service calls and nothing else; the service raises ``AppError`` values that ``errors.py``
turns into JSON.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import marshmallow as ma
from cachetools import LRUCache
from flask import Flask, Response, current_app, g, request, url_for
from flask.json.provider import JSONProvider
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from sqlalchemy import Engine

from bookmarks.auth import Principal, bearer_token
from bookmarks.errors import AuthError
from bookmarks.extensions import db
from bookmarks.repository import lookup_principal
from bookmarks.schemas import (
    BookmarkInSchema,
    BookmarkPageSchema,
    BookmarkPatchSchema,
    BookmarkSchema,
    ErrorSchema,
    ListArgsSchema,
)
from bookmarks.service import (
    ENTRY_OVERHEAD,
    BookmarkRecord,
    BookmarkService,
    PageResult,
    record_size,
)

SERVICE_KEY = "bookmarks.service"
URL_PREFIX = "/api/bookmarks"
# One bookmark's route, below URL_PREFIX; ``ITEM_ENDPOINT`` is how the metrics label it.
ITEM_RULE = "/<int:bookmark_id>"
ITEM_ENDPOINT = URL_PREFIX + ITEM_RULE
# The app's token check: ``TokenChecks`` here, or the fast path's shared, leased checks.
CHECKS_KEY = "bookmarks.checks"

blp = Blueprint(
    "bookmarks",
    __name__,
    url_prefix=URL_PREFIX,
    description="Your bookmarks. Every call needs `Authorization: Bearer <token>`.",
)


class BookmarksApi(Api):
    """flask-smorest's Api, documenting our error shape instead of its own."""

    ERROR_SCHEMA = ErrorSchema


def _errors(*codes: int) -> Any:
    """Document the error statuses a view can answer with (all share the ``Error`` schema)."""

    def decorate(view: Any) -> Any:
        for code in codes:
            view = blp.alt_response(code, schema=ErrorSchema, description=_DESCRIPTIONS[code])(view)
        return view

    return decorate


_DESCRIPTIONS = {
    400: "The body is not valid JSON.",
    401: "Missing, malformed, unknown or revoked token.",
    404: "No such bookmark for this user.",
    409: "This user already has a bookmark with this url.",
    413: "The body is larger than the server accepts.",
}


BODIES_KEY = "bookmarks.record_bodies"
_BOOKMARK_SCHEMA = BookmarkSchema()


class RecordBodies:
    """The JSON bodies of single bookmarks, exactly as flask-smorest would dump and jsonify them.

    A body is a pure function of the record's value (records are frozen and compared by value)
    and of the app's JSON provider, so a remembered body can never be out of date: a changed
    bookmark is a different record. Cached reads hand out the same record object again and
    again; serialising it anew every time was a sixth of a cached read's cost. Remembered per
    app, least recently used first out, within ``max_entries`` and ``max_bytes`` (the body and
    the record it keeps alive, as ``service.record_size`` counts it).
    """

    def __init__(self, json: JSONProvider, *, max_entries: int, max_bytes: int) -> None:
        self._json = json
        self.max_entries = max_entries
        self._bodies: LRUCache[BookmarkRecord, tuple[bytes, int]] = LRUCache(
            maxsize=max_bytes, getsizeof=lambda entry: entry[1]
        )
        self._lock = threading.Lock()

    def __call__(self, record: BookmarkRecord) -> bytes:
        """The body of ``record``."""
        with self._lock:
            entry = self._bodies.get(record)
        if entry is not None:
            return entry[0]
        body = self._json.response(_BOOKMARK_SCHEMA.dump(record)).get_data()
        size = ENTRY_OVERHEAD + record_size(record) + sys.getsizeof(body)
        if size <= self._bodies.maxsize:
            with self._lock:
                self._bodies[record] = (body, size)
                while len(self._bodies) > self.max_entries:
                    self._bodies.popitem()
        return body

    @property
    def currsize(self) -> int:
        """Bytes held."""
        with self._lock:
            return int(self._bodies.currsize)


class TokenChecks:
    """The plain path's token check: one query per request (``repository.lookup_principal``)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def principal(self, token: str) -> Principal | None:
        """The token's user and current ``data_version``, as the database has them now."""
        return lookup_principal(self._engine, token)


def _record_response(record: BookmarkRecord) -> Response:
    body = current_app.extensions[BODIES_KEY](record)
    return current_app.response_class(body, mimetype=current_app.json.mimetype)


def service() -> BookmarkService:
    """The app's ``BookmarkService`` (one per app, so each app has its own cache)."""
    return current_app.extensions[SERVICE_KEY]


def principal() -> Principal:
    """The authenticated caller (set by ``authenticate``)."""
    return g.principal


def caller(authorization: str | None, lookup: Callable[[str], Principal | None]) -> Principal:
    """Who an ``Authorization`` header proves to be calling (``lookup`` resolves its token).

    The one place the API's authentication rules live: the ``authenticate`` hook calls it, and so
    does the fast path (``fastpath.cached_reads``, with a lookup that answers from leases only),
    so a rule added here holds for both. Raises ``AuthError`` (401).
    """
    if not authorization:
        raise AuthError("authentication required: send Authorization: Bearer <token>")
    token = bearer_token(authorization)
    found = lookup(token) if token else None
    if found is None:
        raise AuthError("invalid or revoked token", invalid=True)
    return found


@blp.before_request
def authenticate() -> None:
    """Find the caller from the bearer token (401 without a valid one)."""
    checks = current_app.extensions[CHECKS_KEY]
    g.principal = caller(request.headers.get("Authorization"), checks.principal)


def _page_links(result: PageResult, args: dict[str, Any]) -> dict[str, str | None]:
    """Relative links, so they are right behind any proxy and never echo a forged Host header."""
    keep = {k: args[k] for k in ("q", "tag") if args.get(k)}

    def link(page: int) -> str:
        return url_for("bookmarks.BookmarkCollection", page=page, per_page=result.per_page, **keep)

    return {
        "self": link(result.page),
        "first": link(1),
        "last": link(result.pages),
        "next": link(result.page + 1) if result.page < result.pages else None,
        "prev": link(min(result.page - 1, result.pages)) if result.page > 1 else None,
    }


@blp.route("")
class BookmarkCollection(MethodView):
    """List, search and create."""

    # Unknown query parameters are errors too: a typo such as `per_pge` must not be ignored.
    @blp.arguments(ListArgsSchema, location="query", unknown=ma.RAISE)
    @blp.response(200, BookmarkPageSchema)
    @_errors(401)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List bookmarks, newest first, or search them with `q`, best match first."""
        per_page = args.get("per_page") or current_app.config["PAGE_SIZE"]
        if args.get("q"):
            result = service().search(
                principal(), args["q"], page=args["page"], per_page=per_page, tag=args.get("tag")
            )
        else:
            result = service().list(
                principal(), page=args["page"], per_page=per_page, tag=args.get("tag")
            )
        return {
            "items": result.items,
            "page": result.page,
            "per_page": result.per_page,
            "total": result.total,
            "pages": result.pages,
            "links": _page_links(result, args),
        }

    @blp.arguments(BookmarkInSchema)
    @blp.response(201, BookmarkSchema)
    @_errors(400, 401, 409, 413)
    def post(self, values: dict[str, Any]) -> tuple[BookmarkRecord, int, dict[str, str]]:
        """Save a url (one bookmark per url)."""
        record = service().create(principal(), values)
        location = url_for("bookmarks.BookmarkItem", bookmark_id=record.id)
        return record, 201, {"Location": location}


@blp.route(ITEM_RULE)
class BookmarkItem(MethodView):
    """Read, replace, change and delete one bookmark."""

    @blp.response(200, BookmarkSchema)
    @_errors(401, 404)
    def get(self, bookmark_id: int) -> Response:
        """Get one bookmark."""
        # A Response passes through flask-smorest as it is; BookmarkSchema still documents it.
        return _record_response(service().get(principal(), bookmark_id))

    @blp.arguments(BookmarkInSchema)
    @blp.response(200, BookmarkSchema)
    @_errors(400, 401, 404, 409, 413)
    def put(self, values: dict[str, Any], bookmark_id: int) -> BookmarkRecord:
        """Replace a bookmark (omitted title, notes and tags become empty)."""
        return service().update(principal(), bookmark_id, values)

    @blp.arguments(BookmarkPatchSchema)
    @blp.response(200, BookmarkSchema)
    @_errors(400, 401, 404, 409, 413)
    def patch(self, values: dict[str, Any], bookmark_id: int) -> BookmarkRecord:
        """Change some fields of a bookmark."""
        return service().update(principal(), bookmark_id, values)

    @blp.response(204)
    @_errors(401, 404)
    def delete(self, bookmark_id: int) -> None:
        """Delete a bookmark."""
        service().delete(principal(), bookmark_id)


def init_app(app: Flask) -> None:
    """Create this app's Api (it holds the app's OpenAPI spec) and its BookmarkService."""
    api = BookmarksApi(
        app,
        spec_kwargs={
            "info": {
                "description": "Bookmarks API. Errors share the Error schema; "
                "every response carries X-Request-ID."
            },
            "security": [{"bearerAuth": []}],
        },
    )
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "bm_..."}
    )
    api.register_blueprint(blp)
    # JSON Schema's way to say what BookmarkPatchSchema._not_empty enforces.
    api.spec.components.schemas["BookmarkPatch"]["minProperties"] = 1
    app.extensions[SERVICE_KEY] = BookmarkService(db.session, app.config["CACHE_CONFIG"])
    with app.app_context():
        app.extensions[CHECKS_KEY] = TokenChecks(db.engine)
    app.extensions[BODIES_KEY] = RecordBodies(
        app.json,
        max_entries=app.config["RECORD_BODIES_CACHED"],
        max_bytes=app.config["RECORD_BODIES_MAX_BYTES"],
    )
