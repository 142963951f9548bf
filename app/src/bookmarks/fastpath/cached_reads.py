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
with Flask's, request for request. It honours exactly the hooks ``fastpath.KNOWN_HOOKS`` lists
(the request id, authentication, the access line, the metrics); an app with any other hook is
answered by Flask alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from bookmarks import api, logs, metrics
from bookmarks.auth import Principal, hash_token
from bookmarks.fastpath import access_log
from bookmarks.middleware import REQUEST_ID_ENVIRON

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from bookmarks.fastpath.leases import SharedChecks
    from bookmarks.service import BookmarkService

RenderBody = Callable[[Any], bytes]


class CachedReads:
    """WSGI middleware serving cached ``GET <prefix><id>`` for leased tokens.

    ``endpoint`` is the view's route as the metrics label it (``metrics._endpoint_label``).
    ``honoured`` says, once the app's hooks are final (its first request), whether the fast path
    honours all of them (``fastpath.unknown_hooks``); if not, it answers nothing.
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
        honoured: Callable[[], bool],
    ) -> None:
        self.wsgi_app = wsgi_app
        self._honoured = honoured
        self._active: bool | None = None  # decided at the first request
        self._prefix = prefix
        self._endpoint = endpoint
        self._checks = checks
        self._service = service
        self._render = render
        self._mimetype = mimetype
        self.answered = 0  # read by the tests

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Answer from the cache when everything is known already, else hand over to Flask."""
        active = self._active
        if active is None:
            # Flask refuses new hooks once it has handled a request: the set is final now.
            active = self._active = self._honoured()
        if active and environ.get("REQUEST_METHOD") == "GET" and not environ.get("QUERY_STRING"):
            path = environ.get("PATH_INFO", "")
            if path.startswith(self._prefix):
                answer = self._answer(environ, path, start_response)
                if answer is not None:
                    return answer
        return self.wsgi_app(environ, start_response)

    def _leased(self, token: str) -> Principal | None:
        return self._checks.from_lease(hash_token(token))

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
            # The API's own rules (``api.caller``), with a lookup that answers from leases only:
            # an unleased token, like every refusal, raises, and Flask answers the request.
            principal = api.caller(environ.get("HTTP_AUTHORIZATION"), self._leased)
            record = self._service.cached_get(principal, int(digits))
            if record is None:
                return None
            body = self._render(record)
        except Exception:
            # Whatever went wrong (a refusal included), Flask answers instead, with its own
            # error handling.
            return None
        start_response(
            "200 OK",
            [("Content-Type", self._mimetype), ("Content-Length", str(len(body)))],
        )
        self.answered += 1
        metrics.observe("GET", self._endpoint, "200", time.perf_counter() - started)
        access_log.write(
            logs.access_fields(
                request_id=environ.get(REQUEST_ID_ENVIRON),
                method="GET",
                path=path,
                status=200,
                started=started,
                remote_addr=environ.get("REMOTE_ADDR"),
                user_id=principal.user_id,
                size=len(body),
            )
        )
        return [body]
