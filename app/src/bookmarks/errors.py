"""Errors as values with a status and a message, and the handlers that turn them into JSON.

Code below the API edge raises ``AppError`` subclasses and never touches Flask's request; the
handlers here give every failure (ours, Werkzeug's, webargs' validation errors, and bugs) one JSON
shape with the request id, so clients and operators can correlate. A 500 never carries a traceback:
the traceback goes to the log, the client gets the request id to quote.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, g, jsonify
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

log = logging.getLogger(__name__)


class AppError(Exception):
    """A failure the client can act on, with the HTTP status that describes it."""

    status: int = 500
    message: str = "internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.errors = errors
        self.headers = headers or {}
        super().__init__(self.message)


class NotFoundError(AppError):
    """The resource does not exist or belongs to someone else (the two look alike on purpose)."""

    status = 404
    message = "not found"


class ConflictError(AppError):
    """The change would break a uniqueness rule (one bookmark per url and user)."""

    status = 409
    message = "conflict"


class AuthError(AppError):
    """Missing, malformed, unknown or revoked token.

    The message says which of missing or invalid, never which part of a token was wrong.
    """

    status = 401
    message = "authentication required"

    def __init__(self, message: str | None = None, *, invalid: bool = False) -> None:
        challenge = 'Bearer realm="bookmarks"'
        if invalid:
            challenge += ', error="invalid_token"'
        super().__init__(message, headers={"WWW-Authenticate": challenge})


def error_body(status: int, message: str, errors: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one error shape (documented as ``Error`` in the OpenAPI document)."""
    body: dict[str, Any] = {
        "code": status,
        "status": HTTPStatus(status).phrase,
        "message": message,
    }
    if errors:
        body["errors"] = errors
    request_id = g.get("request_id") if g else None
    if request_id:
        body["request_id"] = request_id
    return body


def _json_error(
    status: int,
    message: str,
    errors: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    response = jsonify(error_body(status, message, errors))
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def handle_app_error(error: AppError) -> Response:
    """Translate a domain error raised below the edge."""
    return _json_error(error.status, error.message, error.errors, error.headers)


def handle_http_exception(error: HTTPException) -> Response:
    """Werkzeug's errors (404, 405, 413, ...) and webargs' 400/422, as JSON instead of HTML."""
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    errors = data.get("errors") or data.get("messages")
    message = data.get("message") or error.description or HTTPStatus(status).phrase
    if status == 422 and not data.get("message"):
        message = "the request is not valid; see errors"
    headers = dict(data.get("headers") or {})
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        headers["Allow"] = ", ".join(sorted(error.valid_methods))
    return _json_error(status, str(message), errors, headers)


def handle_database_unavailable(error: Exception) -> Response:
    """The database is down, unreachable, too slow, or the pool is exhausted: 503, retry later.

    Not a bug and not the client's fault, so neither 500 nor 4xx; ``Retry-After`` tells well-behaved
    clients to back off while ``/health/ready`` takes the instance out of rotation.
    """
    log.warning("database unavailable: %s", type(error).__name__, exc_info=error)
    return _json_error(
        503, "the database is unavailable; retry shortly", headers={"Retry-After": "5"}
    )


def handle_unexpected(error: Exception) -> Response:
    """Log a bug with its traceback and answer with a generic 500 (no details for the client)."""
    if isinstance(error, HTTPException):  # raised inside another handler: keep its status
        return handle_http_exception(error)
    log.exception("unhandled error", exc_info=error)
    return _json_error(500, "internal error; quote the request id when reporting it")


def register_errorhandlers(app: Flask) -> None:
    """Register after flask-smorest, so these handlers replace its HTTPException handler."""
    app.register_error_handler(AppError, handle_app_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(OperationalError, handle_database_unavailable)
    app.register_error_handler(PoolTimeoutError, handle_database_unavailable)
    app.register_error_handler(Exception, handle_unexpected)
