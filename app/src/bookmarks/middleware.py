"""What every request gets: proxy headers, a request id, timing and security headers."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from random import getrandbits
from typing import TYPE_CHECKING, Any

from flask import Flask, Request, g, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_ENVIRON = "bookmarks.request_id"
# A sane id is short and made of characters that cannot break a log line or a header.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # The service only ever returns JSON: nothing may load, frame or submit anything.
    "Content-Security-Policy": (
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "interest-cohort=()",
}

_SECURITY_HEADER_ITEMS = tuple(SECURITY_HEADERS.items())
_NO_STORE = ("Cache-Control", "no-store")


class LazySessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions (same cookie flags), opened only when the cookie was sent.

    The API authenticates with tokens and never sets a session cookie, yet Flask opens a session
    for every request, and the stock interface builds its signing serializer first, each time
    (a tenth of a cached read's cost, measured). A request without the cookie gets a new empty
    session straight away; one with it is verified exactly as before.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """An empty session without any signing work when the request has no session cookie."""
        # A substring test of the raw header, so no cookie parsing either; a false positive only
        # means the usual verification runs.
        if self.get_cookie_name(app) not in request.environ.get("HTTP_COOKIE", ""):
            return self.session_class()
        return super().open_session(app, request)


class ResponseHeaders:
    """WSGI middleware: the request id and the security headers, on every response.

    Below Flask, so they are on every answer the app gives (errors and unmatched paths too) and
    cost one list append: added through the response's ``Headers`` they were a tenth of a cached
    read's CPU (each value validated, each header a method call). The request id is chosen here,
    before Flask sees the request, and handed to it in the environ (``start_request``).
    """

    def __init__(self, wsgi_app: WSGIApplication) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Serve the request; add the headers as the response starts."""
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        # A request id needs to be unique, not unguessable: the PRNG (reseeded in every forked
        # worker) instead of a getrandom() system call per request (a twentieth of its CPU).
        request_id = (
            incoming if _SANE_REQUEST_ID.fullmatch(incoming) else f"{getrandbits(128):032x}"
        )
        environ[REQUEST_ID_ENVIRON] = request_id
        added = [(REQUEST_ID_HEADER, request_id), *_SECURITY_HEADER_ITEMS]
        # Responses depend on the Authorization header: no shared cache may keep them.
        if environ.get("PATH_INFO", "").startswith("/api/bookmarks"):
            added.append(_NO_STORE)

        def start(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            headers.extend(added)
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)


def start_request() -> None:
    """Note when the request started and its id (chosen by ``ResponseHeaders``)."""
    g.request_started = time.perf_counter()
    g.request_id = request.environ.get(REQUEST_ID_ENVIRON)


def init_app(app: Flask) -> None:
    """Trust exactly one proxy hop (nginx on the same host) and install the per-request hooks.

    With ``x_for=1`` only the address nginx appends is believed, so a client cannot spoof its
    address by sending its own ``X-Forwarded-For``. HSTS is nginx's job: it owns TLS.
    """
    app.wsgi_app = ProxyFix(ResponseHeaders(app.wsgi_app), x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    app.session_interface = LazySessionInterface()
    app.before_request(start_request)
