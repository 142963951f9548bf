"""The app factory: several independent apps per process, everything wired."""

from __future__ import annotations

from flask import Flask

from bookmarks import create_app, migrations_dir
from bookmarks.api import SERVICE_KEY
from bookmarks.config import TestingConfig


def test_create_app_is_importable_from_the_package(app: Flask) -> None:
    assert callable(create_app)
    assert app.testing is True


def test_config_instance_or_class_is_accepted(database_url: str) -> None:
    app = create_app(TestingConfig(DATABASE_URL=database_url, PAGE_SIZE=7))
    assert app.config["PAGE_SIZE"] == 7


def test_two_apps_have_separate_services_and_caches(app: Flask, database_url: str) -> None:
    other = create_app(TestingConfig(DATABASE_URL=database_url))
    assert other.extensions[SERVICE_KEY] is not app.extensions[SERVICE_KEY]
    assert other.extensions[SERVICE_KEY].cache is not app.extensions[SERVICE_KEY].cache


def test_routes_are_registered(app: Flask) -> None:
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert {
        "/api/bookmarks",
        "/api/bookmarks/<int:bookmark_id>",
        "/api/openapi.json",
        "/health",
        "/health/ready",
        "/_status",
        "/metrics",
    } <= rules


def test_migrations_are_found_from_a_checkout() -> None:
    assert (migrations_dir() / "env.py").is_file()
    assert (migrations_dir() / "versions").is_dir()
