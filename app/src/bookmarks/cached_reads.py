"""Cached single-bookmark reads answered below Flask: the hottest request, without the framework.

``GET /api/bookmarks/<id>`` with a token whose check is leased (``principals``) and a bookmark
the caller's cache already holds needs no database and no decision: the answer is the cached
body. Flask's request machinery (contexts, routing, the blueprint's hooks, flask-smorest's
decorators, the response object) was three quarters of such a request's cost in the app
(measured), so ``CachedReads`` answers it as WSGI middleware, before Flask sees it, with exactly
what the view would have sent: the same body, headers (the security headers and the request id
come from ``middleware.ResponseHeaders`` around both), access line, metrics and cache count.

It only ever answers from what is already known; everything else goes to Flask unchanged:
another method or path, a query string, a missing, malformed, unknown or unleased token, a
bookmark not in the cache (or cached as missing: Flask answers the 404), an id Flask's route
would not match the same way (leading zeros, non-ASCII digits). The tests compare its answers
with Flask's, request for request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from bookmarks import logs, metrics
from bookmarks.auth import bearer_token, hash_token
from bookmarks.middleware import REQUEST_ID_ENVIRON

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from bookmarks.principals import SharedChecks
    from bookmarks.service import BookmarkService

RenderBody = Callable[[Any], bytes]


class CachedReads:
    """WSGI middleware serving cached ``GET <prefix><id>`` for leased tokens.

    ``endpoint`` is the view's route as the metrics label it (``metrics._endpoint_label``).
    """

    def __init__(
        self,
        wsgi_app: WSGIApplication,
        checks: SharedChecks,
        service: BookmarkService,
        render: RenderBody,
        *,
        mimetype: str,
        prefix: str,
        endpoint: str,
    ) -> None:
        self.wsgi_app = wsgi_app
        self._prefix = prefix
        self._endpoint = endpoint
        self._checks = checks
        self._service = service
        self._render = render
        self._mimetype = mimetype
        self.answered = 0  # read by the tests

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Answer from the cache when everything is known already, else hand over to Flask."""
        if environ.get("REQUEST_METHOD") == "GET" and not environ.get("QUERY_STRING"):
            path = environ.get("PATH_INFO", "")
            if path.startswith(self._prefix):
                answer = self._answer(environ, path, start_response)
                if answer is not None:
                    return answer
        return self.wsgi_app(environ, start_response)

    def _answer(
        self, environ: WSGIEnvironment, path: str, start_response: StartResponse
    ) -> list[bytes] | None:
        started = time.perf_counter()
        digits = path[len(self._prefix) :]
        # What Flask's <int:...> converter matches, in its one spelling: ASCII digits, no zeros
        # in front (anything else goes to Flask, which answers it as it always has).
        if not (digits.isascii() and digits.isdigit()) or (digits[0] == "0" and digits != "0"):
            return None
        try:
            token = bearer_token(environ.get("HTTP_AUTHORIZATION"))
            if token is None:
                return None
            principal = self._checks.from_lease(hash_token(token))
            if principal is None:
                return None
            record = self._service.cached_get(principal, int(digits))
            if record is None:
                return None
            body = self._render(record)
        except Exception:
            # Whatever went wrong, Flask answers instead, with its own error handling.
            return None
        start_response(
            "200 OK",
            [("Content-Type", self._mimetype), ("Content-Length", str(len(body)))],
        )
        self.answered += 1
        metrics.observe("GET", self._endpoint, "200", time.perf_counter() - started)
        logs.log_request(
            request_id=environ.get(REQUEST_ID_ENVIRON),
            method="GET",
            path=path,
            status=200,
            started=started,
            remote_addr=environ.get("REMOTE_ADDR"),
            user_id=principal.user_id,
            size=len(body),
        )
        return [body]
