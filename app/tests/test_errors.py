"""Errors are JSON with the right status and a request id, never HTML, never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bookmarks.errors import ConflictError, NotFoundError


def assert_error_shape(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.json
    assert body["code"] == status
    assert isinstance(body["status"], str)
    assert isinstance(body["message"], str)
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body


def test_unknown_path_is_json_404(client: FlaskClient) -> None:
    body = assert_error_shape(client.get("/no/such/page"), 404)
    assert body["status"] == "Not Found"


def test_wrong_method_is_json_405_with_allow(client: FlaskClient) -> None:
    response = client.post("/health")
    assert_error_shape(response, 405)
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "HEAD", "OPTIONS"}


def test_wrong_method_on_the_api_is_405(client: FlaskClient, auth: dict[str, str]) -> None:
    assert_error_shape(client.delete("/api/bookmarks", headers=auth), 405)


def test_validation_error_is_json_422(client: FlaskClient, auth: dict[str, str]) -> None:
    body = assert_error_shape(client.post("/api/bookmarks", json={}, headers=auth), 422)
    assert body["errors"]["json"]["url"] == ["Missing data for required field."]


def test_malformed_json_is_json_400(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/api/bookmarks", data="{", content_type="application/json", headers=auth
    )
    assert_error_shape(response, 400)


def test_too_large_is_json_413(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/api/bookmarks", data="x" * 70_000, content_type="application/json", headers=auth
    )
    assert_error_shape(response, 413)


@pytest.fixture
def broken_app(app: Flask) -> Flask:
    def boom() -> None:
        secret = "hunter2-in-a-local-variable"
        raise RuntimeError(f"database password is {secret}")

    def domain_conflict() -> None:
        raise ConflictError("taken", errors={"json": {"url": ["taken"]}})

    def domain_missing() -> None:
        raise NotFoundError

    app.add_url_rule("/boom", view_func=boom)
    app.add_url_rule("/conflict", view_func=domain_conflict)
    app.add_url_rule("/missing", view_func=domain_missing)
    return app


def test_unexpected_error_is_a_generic_json_500(
    broken_app: Flask, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    response = broken_app.test_client().get("/boom")
    body = assert_error_shape(response, 500)
    assert body["message"] == "internal error; quote the request id when reporting it"
    assert "hunter2" not in response.get_data(as_text=True)
    assert "RuntimeError" not in response.get_data(as_text=True)
    # The traceback is in the log, joined to the request by its id.
    errors = [line for line in log_lines() if line["level"] == "ERROR"]
    assert len(errors) == 1
    assert "RuntimeError" in errors[0]["exc_info"]
    assert errors[0]["request_id"] == body["request_id"]


def test_domain_errors_keep_status_message_and_details(broken_app: Flask) -> None:
    client = broken_app.test_client()
    body = assert_error_shape(client.get("/conflict"), 409)
    assert body["message"] == "taken"
    assert body["errors"] == {"json": {"url": ["taken"]}}
    assert assert_error_shape(client.get("/missing"), 404)["message"] == "not found"
