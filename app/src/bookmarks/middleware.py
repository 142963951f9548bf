"""What every request gets: proxy headers, a request id, timing and security headers."""

from __future__ import annotations

import re
import time
import uuid

from flask import Flask, Request, Response, g, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

REQUEST_ID_HEADER = "X-Request-ID"
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


def _start_request() -> None:
    g.request_started = time.perf_counter()
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex


def _finish_response(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    # Appended, not set: no view sets these, and Headers.setdefault scans the list for each one
    # (measured at a third of a bare request's cost).
    response.headers.extend(_SECURITY_HEADER_ITEMS)
    # Responses depend on the Authorization header: no shared cache may keep them.
    if request.path.startswith("/api/bookmarks"):
        response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    """Trust exactly one proxy hop (nginx on the same host) and install the per-request hooks.

    With ``x_for=1`` only the address nginx appends is believed, so a client cannot spoof its
    address by sending its own ``X-Forwarded-For``. HSTS is nginx's job: it owns TLS.
    """
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    app.session_interface = LazySessionInterface()
    app.before_request(_start_request)
    app.after_request(_finish_response)
