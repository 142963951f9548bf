"""Authentication: bearer tokens stored as hashes; a user sees and changes only their own data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import select

from bookmarks.auth import bearer_token, generate_token, hash_token
from bookmarks.extensions import db
from bookmarks.models import ApiToken
from bookmarks.repository import UserRepository
from conftest import acknowledge


def test_no_token_is_401_with_a_bearer_challenge(client: FlaskClient) -> None:
    response = client.get("/api/bookmarks")
    assert response.status_code == 401
    assert response.json["message"].startswith("authentication required")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="bookmarks"'


@pytest.mark.parametrize(
    "header",
    [
        "Bearer " + generate_token(),  # well formed, never issued
        "Bearer bm_short",
        "Basic YWxpY2U6c2VjcmV0",
        "Bearer",
        "Bearer " + "x" * 600,
        "bm_" + "a" * 43,  # no scheme
    ],
)
def test_wrong_or_malformed_token_is_401(client: FlaskClient, header: str) -> None:
    response = client.get("/api/bookmarks", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json["message"] == "invalid or revoked token"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_scheme_is_case_insensitive(client: FlaskClient, token: str) -> None:
    response = client.get("/api/bookmarks", headers={"Authorization": f"bearer {token}"})
    assert response.status_code == 200


def test_revoked_token_is_refused_on_the_next_request(
    app: Flask, client: FlaskClient, token: str, auth: dict[str, str]
) -> None:
    assert client.get("/api/bookmarks", headers=auth).status_code == 200
    with app.app_context():
        users = UserRepository(db.session)
        users.revoke_tokens(users.get_by_name("alice"))
        db.session.commit()
    acknowledge(app)
    assert client.get("/api/bookmarks", headers=auth).status_code == 401


def test_revocation_reaches_every_instance_on_its_next_request(
    app_factory: Callable[..., Flask], runner: FlaskCliRunner, auth: dict[str, str]
) -> None:
    # A worker answers a token from memory for a read lease at most; `users revoke` waits the
    # lease out before it returns, so from then on no worker accepts the token.
    other = app_factory().test_client()  # another worker or host
    assert other.get("/api/bookmarks", headers=auth).status_code == 200
    assert other.get("/api/bookmarks", headers=auth).status_code == 200  # a cached page
    assert runner.invoke(args=["users", "revoke", "alice"]).exit_code == 0
    assert other.get("/api/bookmarks", headers=auth).status_code == 401


def test_only_the_token_hash_is_stored(app: Flask, token: str) -> None:
    with app.app_context():
        stored = db.session.execute(select(ApiToken.token_hash, ApiToken.prefix)).one()
    assert stored.token_hash == hash_token(token)
    assert token not in stored
    assert token.startswith(stored.prefix)


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("get", None),
        ("put", {"url": "https://evil.example/"}),
        ("patch", {"title": "x"}),
        ("delete", None),
    ],
)
def test_other_users_bookmark_is_404(
    client: FlaskClient,
    create: Callable[..., dict[str, Any]],
    make_user: Callable[[str], str],
    method: str,
    body: dict[str, Any] | None,
) -> None:
    bookmark = create("https://alice.example/")
    bob = {"Authorization": f"Bearer {make_user('bob')}"}
    response = getattr(client, method)(f"/api/bookmarks/{bookmark['id']}", json=body, headers=bob)
    assert response.status_code == 404
    assert response.json["message"] == "bookmark not found"


def test_other_users_bookmarks_are_not_listed_or_found(
    client: FlaskClient, create: Callable[..., dict[str, Any]], make_user: Callable[[str], str]
) -> None:
    create("https://alice.example/", title="alice secret plans")
    bob = {"Authorization": f"Bearer {make_user('bob')}"}
    assert client.get("/api/bookmarks", headers=bob).json["total"] == 0
    assert client.get("/api/bookmarks?q=secret", headers=bob).json["total"] == 0


def test_same_url_may_be_saved_by_two_users(
    client: FlaskClient, create: Callable[..., dict[str, Any]], make_user: Callable[[str], str]
) -> None:
    create("https://shared.example/")
    bob = {"Authorization": f"Bearer {make_user('bob')}"}
    response = client.post("/api/bookmarks", json={"url": "https://shared.example/"}, headers=bob)
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("Bearer  bm_" + "A" * 43 + "  ", "bm_" + "A" * 43),
        ("Token bm_" + "A" * 43, None),
        ("Bearer bm_" + "A" * 42 + "!", None),
    ],
)
def test_bearer_token_parsing(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


def test_tokens_are_unique_and_well_formed() -> None:
    tokens = {generate_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(bearer_token(f"Bearer {t}") == t for t in tokens)
