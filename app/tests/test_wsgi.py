"""The WSGI module gunicorn loads builds its app from the environment."""

from __future__ import annotations

import importlib
import sys

import pytest

from bookmarks.config import ConfigError


def _import_wsgi():
    sys.modules.pop("bookmarks.wsgi", None)
    return importlib.import_module("bookmarks.wsgi")


def test_wsgi_app_uses_the_configured_environment(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    monkeypatch.setenv("BOOKMARKS_CONFIG", "testing")
    monkeypatch.setenv("DATABASE_URL", database_url)
    module = _import_wsgi()
    assert module.app.config["CONFIG_NAME"] == "testing"


def test_wsgi_defaults_to_production_and_refuses_to_start_without_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("BOOKMARKS_CONFIG", "FLASK_CONFIG", "SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=r"ProductionConfig.*SECRET_KEY is not set"):
        _import_wsgi()
