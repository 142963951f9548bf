"""The fast path: one switch, and never beside a request hook it does not honour."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, g

from bookmarks import api, create_app, fastpath
from bookmarks.api import CHECKS_KEY, TokenChecks
from bookmarks.config import ConfigError, ProductionConfig
from bookmarks.errors import AuthError
from bookmarks.extensions import db
from bookmarks.repository import UserRepository
from conftest import answered_below_flask, cached_reads_of

STRONG_SECRET = "n8Zq4vW1xLr7Tk2Pj9Hc5Bm3Yf6Ds0Ga-Ue_Qw"


def read_twice(app: Flask, create: Callable[..., dict[str, Any]], auth: dict[str, str]) -> None:
    """Read one bookmark twice on ``app``: the second read is cached and its token leased."""
    path = f"/api/bookmarks/{create()['id']}"
    client = app.test_client()
    for _ in range(2):
        assert client.get(path, headers=auth).status_code == 200


def test_the_fast_path_knows_every_request_hook_of_the_app(
    app_factory: Callable[..., Flask], create: Callable[..., dict[str, Any]], auth: dict[str, str]
) -> None:
    """Fails when a hook is added (a scope check, an audit) that the fast path would skip."""
    app = app_factory(FASTPATH=True, READ_LEASE_MS=1000)
    read_twice(app, create, auth)  # after a first request no hook can be added any more
    assert fastpath.unknown_hooks(app) == []
    assert answered_below_flask(app) == 1, "so the fast path answered the cached read"


def test_a_hook_added_after_create_app_turns_the_fast_path_off(
    app_factory: Callable[..., Flask], create: Callable[..., dict[str, Any]], auth: dict[str, str]
) -> None:
    app = app_factory(FASTPATH=True, READ_LEASE_MS=1000)
    audited: list[str] = []

    @app.before_request
    def audit() -> None:
        audited.append(g.get("request_id") or "")

    read_twice(app, create, auth)
    assert len(audited) == 2, "the hook saw every read"
    assert answered_below_flask(app) == 0


def test_an_auth_rule_added_to_the_api_holds_for_reads_below_flask_too(
    app_factory: Callable[..., Flask],
    create: Callable[..., dict[str, Any]],
    auth: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = app_factory(FASTPATH=True, READ_LEASE_MS=1000)
    path = f"/api/bookmarks/{create()['id']}"
    client = app.test_client()
    for _ in range(2):
        assert client.get(path, headers=auth).status_code == 200
    assert answered_below_flask(app) == 1, "cached and leased: answered below Flask"
    original, disabled = api.caller, {"alice"}

    def caller_refusing_disabled_users(header: str | None, lookup: Any) -> Any:
        found = original(header, lookup)
        if found.name in disabled:
            raise AuthError("this user is disabled")
        return found

    monkeypatch.setattr(api, "caller", caller_refusing_disabled_users)
    assert client.get(path, headers=auth).status_code == 401
    assert client.get(path, headers=auth).status_code == 401
    assert answered_below_flask(app) == 1, "the refusal came from Flask"


def test_the_fast_path_refuses_to_install_beside_a_hook_it_does_not_know(
    app_factory: Callable[..., Flask],
) -> None:
    app = app_factory(FASTPATH=False)

    @app.before_request
    def check_scopes() -> None:
        """A new auth rule the fast path knows nothing of."""

    app.config["FASTPATH"] = True
    with pytest.raises(ConfigError, match="check_scopes"):
        fastpath.init_app(app)


def test_off_the_app_takes_the_plain_flask_path(
    app_factory: Callable[..., Flask], create: Callable[..., dict[str, Any]], auth: dict[str, str]
) -> None:
    app = app_factory(FASTPATH=False, READ_LEASE_MS=1000)
    assert cached_reads_of(app) is None
    assert isinstance(app.extensions[CHECKS_KEY], TokenChecks)
    assert app.config["READ_LEASE_SECONDS"] == 0, "no lease, so no commit waits for one"
    read_twice(app, create, auth)
    assert answered_below_flask(app) == 0


def test_off_commits_wait_for_nothing(
    app_factory: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = app_factory(FASTPATH=False, READ_LEASE_MS=1000)
    waits: list[float] = []
    monkeypatch.setattr("time.sleep", waits.append)
    with app.app_context():
        UserRepository(db.session).create("nia")
        db.session.commit()
    assert waits == []


@pytest.mark.parametrize(("value", "expected"), [("off", False), ("0", False), ("on", True)])
def test_fastpath_is_one_setting(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("FASTPATH", value)
    config = ProductionConfig(SECRET_KEY=STRONG_SECRET, DATABASE_URL="postgresql:///x")
    assert config.FASTPATH is expected


def test_a_bad_fastpath_value_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTPATH", "maybe")
    config = ProductionConfig(SECRET_KEY=STRONG_SECRET, DATABASE_URL="postgresql:///x")
    with pytest.raises(ConfigError, match="FASTPATH must be on or off, got 'maybe'"):
        create_app(config)
