"""Per-request plumbing: request ids, security headers, one trusted proxy hop."""

from __future__ import annotations

import re

import pytest
from flask import Flask, request
from flask.testing import FlaskClient

from bookmarks.middleware import SECURITY_HEADERS


def test_sane_request_id_is_kept(client: FlaskClient) -> None:
    response = client.get("/health", headers={"X-Request-ID": "edge-7f3a.42:1"})
    assert response.headers["X-Request-ID"] == "edge-7f3a.42:1"


@pytest.mark.parametrize(
    "incoming",
    ["", "has space", "x" * 129, "semi;colon", "<script>", "ünïcode"],
)
def test_insane_request_id_is_replaced(client: FlaskClient, incoming: str) -> None:
    response = client.get("/health", headers={"X-Request-ID": incoming})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_request_id_is_generated_when_missing_and_unique(client: FlaskClient) -> None:
    ids = {client.get("/health").headers["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize("path", ["/health", "/api/bookmarks", "/nowhere", "/api/openapi.json"])
def test_security_headers_on_every_response(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_api_responses_are_not_cacheable(client: FlaskClient, auth: dict[str, str]) -> None:
    assert client.get("/api/bookmarks", headers=auth).headers["Cache-Control"] == "no-store"


def test_exactly_one_proxy_hop_is_trusted(app: Flask) -> None:
    @app.get("/whoami")
    def whoami() -> dict[str, str]:
        return {"addr": request.remote_addr or "", "scheme": request.scheme, "host": request.host}

    response = app.test_client().get(
        "/whoami",
        headers={
            "X-Forwarded-For": "6.6.6.6, 203.0.113.9",  # a client-supplied hop, then nginx's
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "bookmarks.example.org",
        },
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    )
    assert response.json == {
        "addr": "203.0.113.9",
        "scheme": "https",
        "host": "bookmarks.example.org",
    }


def test_session_cookie_is_still_verified_when_sent(app: Flask) -> None:
    """The lazy session interface skips work only for requests without the session cookie."""
    interface = app.session_interface
    signed = interface.get_signing_serializer(app).dumps({"seen": True})
    name = interface.get_cookie_name(app)
    with app.test_request_context(headers={"Cookie": f"{name}={signed}"}) as ctx:
        assert dict(interface.open_session(app, ctx.request)) == {"seen": True}
    with app.test_request_context(headers={"Cookie": f"{name}=forged.value"}) as ctx:
        assert dict(interface.open_session(app, ctx.request)) == {}
    with app.test_request_context() as ctx:
        assert dict(interface.open_session(app, ctx.request)) == {}
