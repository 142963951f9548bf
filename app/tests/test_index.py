"""``/``: a small JSON index whose every link answers, with nothing about the build or host."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conftest import answered_below_flask


def test_index_links_the_api_its_document_and_the_health_checks(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.json == {
        "service": "bookmarks",
        "api": "/api/bookmarks",
        "openapi": "/api/openapi.json",
        "health": {"live": "/health", "ready": "/health/ready"},
    }


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/openapi.json", 200),
        ("/health", 200),
        ("/health/ready", 200),
        # The API itself asks for a token, and says so.
        ("/api/bookmarks", 401),
    ],
)
def test_index_links_answer(client: FlaskClient, path: str, status: int) -> None:
    index = client.get("/").json
    links = [index["api"], index["openapi"], *index["health"].values()]
    assert path in links
    assert client.get(path).status_code == status


def test_index_names_no_version_release_or_host(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(VERSION="9.8.7", RELEASE_ID="20261201T0000Z-feedbee", GIT_SHA="feedbee")
    response = app.test_client().get("/", headers={"Host": "internal.example"})
    body = response.get_data(as_text=True)
    for detail in ("9.8.7", "20261201T0000Z-feedbee", "feedbee", "internal.example", "localhost"):
        assert detail not in body


def test_index_is_answered_by_flask_with_the_usual_headers(app: Flask, client: FlaskClient) -> None:
    response = client.get("/", headers={"X-Request-ID": "index-1"})
    assert response.headers["X-Request-ID"] == "index-1"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert answered_below_flask(app) == 0
