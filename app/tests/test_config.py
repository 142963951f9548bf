"""Configuration: production fails fast and says what to fix; cache settings from one helper."""

from __future__ import annotations

import pytest

from bookmarks import create_app
from bookmarks.config import (
    MAX_PAGE_SIZE,
    ConfigError,
    DevelopmentConfig,
    ProductionConfig,
    TestingConfig,
    config_class_from_env,
)

STRONG_SECRET = "n8Zq4vW1xLr7Tk2Pj9Hc5Bm3Yf6Ds0Ga-Ue_Qw"
PG_URL = "postgresql+psycopg://bookmarks:pw@127.0.0.1:5432/bookmarks"


@pytest.fixture
def production_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A valid production environment that single tests then break."""
    unset = (
        "PAGE_SIZE",
        "LOG_LEVEL",
        "BOOKMARKS_CONFIG",
        "FLASK_CONFIG",
        "READ_LEASE_MS",
        "FASTPATH",
    )
    for name in unset:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SECRET_KEY", STRONG_SECRET)
    monkeypatch.setenv("DATABASE_URL", PG_URL)
    return monkeypatch


def test_valid_production_config_builds_a_safe_app(production_env: pytest.MonkeyPatch) -> None:
    app = create_app(ProductionConfig)
    assert app.debug is False
    assert app.testing is False
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert app.config["MAX_CONTENT_LENGTH"] == 65536
    assert app.config["FASTPATH"] is True
    # Pinged only after sitting idle (repository.ping_idle_connections), not on every checkout.
    assert app.config["SQLALCHEMY_ENGINE_OPTIONS"]["pool_pre_ping"] is False
    assert app.config["DB_PING_IDLE_SECONDS"] == 10


@pytest.mark.parametrize("variable", ["SECRET_KEY", "DATABASE_URL"])
def test_missing_variable_is_named(production_env: pytest.MonkeyPatch, variable: str) -> None:
    production_env.delenv(variable)
    with pytest.raises(ConfigError, match=f"{variable} is not set"):
        create_app(ProductionConfig)


def test_every_missing_variable_is_reported_at_once(production_env: pytest.MonkeyPatch) -> None:
    production_env.delenv("SECRET_KEY")
    production_env.delenv("DATABASE_URL")
    with pytest.raises(ConfigError) as caught:
        create_app(ProductionConfig)
    assert "SECRET_KEY is not set" in str(caught.value)
    assert "DATABASE_URL is not set" in str(caught.value)


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("short-but-random-Xy7", "too short"),
        ("a" * 64, "too repetitive"),
        ("please-change-me-in-production-please-change-me", "placeholder"),
        ("your-highly-secure-random-string-0123456789", "placeholder"),
        ("changeme" * 5, "placeholder"),
    ],
)
def test_weak_secret_is_refused(
    production_env: pytest.MonkeyPatch, secret: str, reason: str
) -> None:
    production_env.setenv("SECRET_KEY", secret)
    with pytest.raises(ConfigError, match=reason) as caught:
        create_app(ProductionConfig)
    assert secret not in str(caught.value), "the error must not print the secret"


def test_page_size_above_max_is_refused(production_env: pytest.MonkeyPatch) -> None:
    production_env.setenv("PAGE_SIZE", str(MAX_PAGE_SIZE + 1))
    with pytest.raises(ConfigError, match="PAGE_SIZE must be between 1 and MAX_PAGE_SIZE=100"):
        create_app(ProductionConfig)


@pytest.mark.parametrize("value", ["0", "-5", "twenty"])
def test_page_size_must_be_a_positive_integer(
    production_env: pytest.MonkeyPatch, value: str
) -> None:
    production_env.setenv("PAGE_SIZE", value)
    with pytest.raises(ConfigError, match="PAGE_SIZE"):
        create_app(ProductionConfig)


def test_page_size_at_max_is_accepted(production_env: pytest.MonkeyPatch) -> None:
    production_env.setenv("PAGE_SIZE", str(MAX_PAGE_SIZE))
    assert create_app(ProductionConfig).config["PAGE_SIZE"] == MAX_PAGE_SIZE


@pytest.mark.parametrize("value", ["-1", "1001", "0.5", "soon"])
def test_read_lease_must_be_whole_milliseconds_up_to_a_second(
    production_env: pytest.MonkeyPatch, value: str
) -> None:
    production_env.setenv("READ_LEASE_MS", value)
    with pytest.raises(ConfigError, match="READ_LEASE_MS must be an integer from 0 to 1000"):
        create_app(ProductionConfig)


@pytest.mark.parametrize(("value", "seconds"), [(None, 0.02), ("0", 0.0), ("1000", 1.0)])
def test_read_lease_defaults_to_20_ms_and_may_be_turned_off(
    production_env: pytest.MonkeyPatch, value: str | None, seconds: float
) -> None:
    if value is not None:
        production_env.setenv("READ_LEASE_MS", value)
    assert create_app(ProductionConfig).config["READ_LEASE_SECONDS"] == seconds


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("sqlite:///bookmarks.db", "must point to PostgreSQL, not sqlite"),
        ("postgresql+psycopg2://u@h/db", "must use the psycopg driver"),
        ("not a url", "not a valid SQLAlchemy URL"),
    ],
)
def test_database_url_must_be_postgresql_with_psycopg(
    production_env: pytest.MonkeyPatch, url: str, reason: str
) -> None:
    production_env.setenv("DATABASE_URL", url)
    with pytest.raises(ConfigError, match=reason):
        create_app(ProductionConfig)


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_plain_postgresql_urls_get_the_psycopg_driver(
    production_env: pytest.MonkeyPatch, scheme: str
) -> None:
    production_env.setenv("DATABASE_URL", f"{scheme}://u:pw@db.internal/bookmarks")
    assert ProductionConfig().DATABASE_URL == "postgresql+psycopg://u:pw@db.internal/bookmarks"


def test_unknown_log_level_is_refused(production_env: pytest.MonkeyPatch) -> None:
    production_env.setenv("LOG_LEVEL", "LOUD")
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        create_app(ProductionConfig)


def test_debug_is_refused_in_production(production_env: pytest.MonkeyPatch) -> None:
    del production_env
    with pytest.raises(ConfigError, match="DEBUG must be off"):
        ProductionConfig(DEBUG=True)._validate()


def test_production_cache_config() -> None:
    config = ProductionConfig(SECRET_KEY=STRONG_SECRET, DATABASE_URL=PG_URL)
    assert config.get_cache_config() == {
        "ttl_seconds": 600,
        "max_entries": 4096,
        "max_bytes": 32 * 1024 * 1024,
        "eviction": "lru",
    }


@pytest.mark.parametrize("config_class", [DevelopmentConfig, TestingConfig])
def test_development_cache_config(config_class: type) -> None:
    config = config_class(SECRET_KEY=STRONG_SECRET, DATABASE_URL=PG_URL)
    assert config.get_cache_config() == {
        "ttl_seconds": 30,
        "max_entries": 128,
        "max_bytes": 8 * 1024 * 1024,
        "eviction": "lru",
    }


def test_development_secret_is_random_not_a_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SECRET_KEY", raising=False)
    assert DevelopmentConfig().SECRET_KEY != DevelopmentConfig().SECRET_KEY


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ProductionConfig),
        ({"BOOKMARKS_CONFIG": "development"}, DevelopmentConfig),
        ({"FLASK_CONFIG": "testing"}, TestingConfig),
        ({"BOOKMARKS_CONFIG": "production", "FLASK_CONFIG": "development"}, ProductionConfig),
    ],
)
def test_config_chosen_by_name(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: type
) -> None:
    monkeypatch.delenv("BOOKMARKS_CONFIG", raising=False)
    monkeypatch.delenv("FLASK_CONFIG", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert config_class_from_env() is expected


def test_unknown_config_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOKMARKS_CONFIG", "staging")
    with pytest.raises(ConfigError, match="BOOKMARKS_CONFIG='staging' is not one of"):
        config_class_from_env()
