"""Configuration classes, chosen by class or by name, validated before the app serves anything.

The seeds describe ``BaseConfig`` / ``DevelopmentConfig`` / ``ProductionConfig`` dataclasses with a
``get_cache_config()`` built by ``_build_cache_config`` and a ``_validate()`` that nobody called.
Here ``create_app`` always calls ``_validate()``, production has no fallback for ``SECRET_KEY`` or
``DATABASE_URL``, and every problem names the environment variable to fix, so a bad deployment
fails at start instead of at the first request.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields
from importlib import metadata
from typing import Any, ClassVar, TypedDict

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# Writes wait the read lease out: a second is already far more than any write should take.
MAX_LEASE_MS = 1000
MIN_SECRET_LENGTH = 32
MIN_SECRET_DISTINCT_CHARS = 8  # same rule as the app role's pre-deploy check
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MIB = 1024 * 1024

# Values that show up in tutorials, templates and .env examples. A secret equal to (or built around)
# one of them was copied, not generated.
WEAK_SECRET_MARKERS = (
    "changeme",
    "change-me",
    "change_me",
    "replaceme",
    "replace-me",
    "your-highly-secure",
    "secret-key",
    "secretkey",
    "example",
    "insecure",
    "password",
    "default",
    "dev-key",
)

CONFIG_ENV_VARS = ("BOOKMARKS_CONFIG", "FLASK_CONFIG")


class CacheConfig(TypedDict):
    """What ``BookmarkService`` needs to size its cache (entries and bytes, both bound it)."""

    ttl_seconds: int
    max_entries: int
    max_bytes: int
    eviction: str


class ConfigError(RuntimeError):
    """A configuration that must not serve traffic; the message names every variable to fix."""

    def __init__(self, config_name: str, problems: list[str]) -> None:
        self.config_name = config_name
        self.problems = problems
        super().__init__(f"invalid configuration ({config_name}): " + "; ".join(problems))


def _build_cache_config(ttl: int, max_size: int, max_bytes: int) -> CacheConfig:
    """Build cache settings in one place: production and development differ only in numbers."""
    return {"ttl_seconds": ttl, "max_entries": max_size, "max_bytes": max_bytes, "eviction": "lru"}


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _env_int(name: str, default: int) -> int | str:
    """Read an integer; a non-integer is returned as text so ``_validate`` can name it."""
    raw = _env(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        return raw


def _env_switch(name: str, default: bool) -> bool | str:
    """Read ``on``/``off`` (or 1/0, true/false, yes/no); anything else is returned as text."""
    raw = _env(name).lower()
    if not raw:
        return default
    if raw in ("1", "on", "true", "yes"):
        return True
    if raw in ("0", "off", "false", "no"):
        return False
    return raw


def _package_version() -> str:
    try:
        return metadata.version("bookmarks")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def normalize_database_url(raw: str) -> str:
    """Return ``raw`` with the psycopg 3 driver named explicitly.

    SQLAlchemy maps a bare ``postgresql://`` to psycopg2, which is not installed; operators copy
    URLs from ``psql`` habits, so the two PostgreSQL spellings are accepted and made explicit.
    """
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg://" + raw[len(prefix) :]
    return raw


def secret_problems(secret: str, *, strict: bool) -> list[str]:
    """Explain why ``secret`` must not sign production sessions (empty list: it may).

    ``strict`` adds the production rules: length, variety and no well-known placeholder. The value
    itself never appears in a message, so the errors are safe to log.
    """
    if not secret:
        return ["SECRET_KEY is not set"]
    if not strict:
        return []
    problems = []
    if len(secret) < MIN_SECRET_LENGTH:
        problems.append(
            f"SECRET_KEY is too short ({len(secret)} characters, at least {MIN_SECRET_LENGTH}); "
            'generate one with: python3 -c "import secrets; print(secrets.token_urlsafe(48))"'
        )
    if len(set(secret)) < MIN_SECRET_DISTINCT_CHARS:
        problems.append("SECRET_KEY is too repetitive to be random")
    lowered = secret.lower()
    if any(marker in lowered for marker in WEAK_SECRET_MARKERS):
        problems.append("SECRET_KEY is a placeholder or well-known value")
    return problems


@dataclass
class BaseConfig:
    """Settings shared by every environment; subclasses change defaults, never the names.

    Field names are the Flask config keys. Environment variables are read when an instance is made
    (``default_factory``), so tests build instances with explicit values instead of patching the
    environment.
    """

    NAME: ClassVar[str] = "base"
    # Production refuses weak secrets and insecure cookies; other environments only need a value.
    STRICT: ClassVar[bool] = False

    SECRET_KEY: str = ""
    DATABASE_URL: str = ""
    PAGE_SIZE: int = field(default_factory=lambda: _env_int("PAGE_SIZE", DEFAULT_PAGE_SIZE))  # type: ignore[arg-type]
    MAX_PAGE_SIZE: int = MAX_PAGE_SIZE
    LOG_LEVEL: str = field(default_factory=lambda: _env("LOG_LEVEL", "INFO").upper())
    DEBUG: bool = False
    TESTING: bool = False
    # Bodies are small JSON documents: 64 KiB is generous, and a slow upload cannot pin a worker.
    MAX_CONTENT_LENGTH: int = 64 * 1024
    SESSION_COOKIE_SECURE: bool = True
    SESSION_COOKIE_HTTPONLY: bool = True
    SESSION_COOKIE_SAMESITE: str = "Lax"
    PREFERRED_URL_SCHEME: str = "https"
    # Database pool per worker process, sized for gthread workers (threads <= size + overflow).
    DB_POOL_SIZE: int = field(default_factory=lambda: _env_int("DB_POOL_SIZE", 5))  # type: ignore[arg-type]
    DB_MAX_OVERFLOW: int = field(default_factory=lambda: _env_int("DB_MAX_OVERFLOW", 5))  # type: ignore[arg-type]
    DB_CONNECT_TIMEOUT: int = 3
    # The fast path (``bookmarks.fastpath``): read leases, cached single reads below Flask, a held
    # connection for the token check. Off, every request takes the plain Flask path (the
    # reference): a token query through SQLAlchemy per API request, no lease, no commit wait.
    FASTPATH: bool = field(default_factory=lambda: _env_switch("FASTPATH", True))  # type: ignore[arg-type]
    # A pooled connection unused for this long is pinged before it is handed out
    # (``repository.ping_idle_connections``); busier ones are proven alive by use.
    DB_PING_IDLE_SECONDS: int = 10
    DB_STATEMENT_TIMEOUT_MS: int = 5000
    # With the fast path, how long a worker may answer a token's check from memory; every commit
    # waits this long (a little more) before it returns (``repository``'s commit wait). The same
    # on every host that shares the database; 0 checks the database on every request.
    READ_LEASE_MS: int = field(default_factory=lambda: _env_int("READ_LEASE_MS", 20))  # type: ignore[arg-type]
    READINESS_TIMEOUT_MS: int = 1000
    # What the read cache and the remembered JSON bodies of single bookmarks may hold per worker
    # process, in bytes as ``service.entry_size`` counts them (entries are capped too, by
    # ``get_cache_config``): a page of search results can weigh megabytes, so entries alone do
    # not bound memory.
    CACHE_MAX_BYTES: int = field(default_factory=lambda: _env_int("CACHE_MAX_BYTES", 8 * MIB))  # type: ignore[arg-type]
    RECORD_BODIES_CACHED: int = 4096
    RECORD_BODIES_MAX_BYTES: int = field(
        default_factory=lambda: _env_int("RECORD_BODIES_MAX_BYTES", 2 * MIB)  # type: ignore[arg-type]
    )
    # A migration waits at most this long for a lock (then fails, and the deploy stops) instead
    # of queueing every request behind it; and no statement of it runs longer than the second.
    MIGRATION_LOCK_TIMEOUT_MS: int = field(
        default_factory=lambda: _env_int("MIGRATION_LOCK_TIMEOUT_MS", 5000)  # type: ignore[arg-type]
    )
    MIGRATION_STATEMENT_TIMEOUT_MS: int = field(
        default_factory=lambda: _env_int("MIGRATION_STATEMENT_TIMEOUT_MS", 15 * 60 * 1000)  # type: ignore[arg-type]
    )
    VERSION: str = field(default_factory=lambda: _env("BOOKMARKS_VERSION") or _package_version())
    RELEASE_ID: str = field(default_factory=lambda: _env("BOOKMARKS_RELEASE_ID", "unknown"))
    GIT_SHA: str = field(default_factory=lambda: _env("BOOKMARKS_GIT_SHA", "unknown"))

    def __post_init__(self) -> None:
        """Make the database URL explicit about its driver before anyone reads it."""
        self.DATABASE_URL = normalize_database_url(self.DATABASE_URL)

    def get_cache_config(self) -> CacheConfig:
        """Cache settings for ``BookmarkService`` (development numbers unless a subclass tunes)."""
        return _build_cache_config(ttl=30, max_size=128, max_bytes=self.CACHE_MAX_BYTES)

    def _validate(self) -> None:
        """Raise ``ConfigError`` listing every problem, each naming the variable to fix."""
        problems = secret_problems(self.SECRET_KEY, strict=self.STRICT)
        problems += self._database_problems()
        if not isinstance(self.PAGE_SIZE, int) or isinstance(self.PAGE_SIZE, bool):
            problems.append(f"PAGE_SIZE must be an integer, got {self.PAGE_SIZE!r}")
        elif not 1 <= self.PAGE_SIZE <= self.MAX_PAGE_SIZE:
            problems.append(
                f"PAGE_SIZE must be between 1 and MAX_PAGE_SIZE={self.MAX_PAGE_SIZE}, "
                f"got {self.PAGE_SIZE}"
            )
        if self.LOG_LEVEL not in LOG_LEVELS:
            problems.append(
                f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {self.LOG_LEVEL!r}"
            )
        for name in ("DB_POOL_SIZE", "DB_MAX_OVERFLOW"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                problems.append(f"{name} must be a non-negative integer, got {value!r}")
        for name in (
            "CACHE_MAX_BYTES",
            "RECORD_BODIES_CACHED",
            "RECORD_BODIES_MAX_BYTES",
            "MIGRATION_LOCK_TIMEOUT_MS",
            "MIGRATION_STATEMENT_TIMEOUT_MS",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        lease = self.READ_LEASE_MS
        if not isinstance(lease, int) or isinstance(lease, bool) or not 0 <= lease <= MAX_LEASE_MS:
            problems.append(
                f"READ_LEASE_MS must be an integer from 0 to {MAX_LEASE_MS} (every write waits"
                f" it out), got {lease!r}"
            )
        if not isinstance(self.FASTPATH, bool):
            problems.append(f"FASTPATH must be on or off, got {self.FASTPATH!r}")
        problems += self._strict_problems()
        if problems:
            raise ConfigError(type(self).__name__, problems)

    def _strict_problems(self) -> list[str]:
        problems = []
        if self.STRICT:
            if self.DEBUG:
                problems.append("DEBUG must be off in production")
            if not self.SESSION_COOKIE_SECURE:
                problems.append("SESSION_COOKIE_SECURE must be on in production")
        return problems

    def _database_problems(self) -> list[str]:
        if not self.DATABASE_URL:
            return ["DATABASE_URL is not set (postgresql+psycopg://USER:PASSWORD@HOST/DB)"]
        try:
            url = make_url(self.DATABASE_URL)
        except ArgumentError:
            return ["DATABASE_URL is not a valid SQLAlchemy URL"]
        if url.get_backend_name() != "postgresql":
            # Full-text search, arrays and the migrations are PostgreSQL's; SQLite would half-work.
            return [f"DATABASE_URL must point to PostgreSQL, not {url.get_backend_name()}"]
        if url.get_driver_name() != "psycopg":
            return [f"DATABASE_URL must use the psycopg driver, not {url.get_driver_name()}"]
        return []

    @property
    def database_url(self) -> URL:
        """The parsed database URL (valid only after ``_validate``)."""
        return make_url(self.DATABASE_URL)

    def flask_config(self) -> dict[str, Any]:
        """Everything Flask and its extensions read from ``app.config``."""
        values: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        values["CONFIG_NAME"] = self.NAME
        # The lease in force: none without the fast path (so no commit waits either).
        values["READ_LEASE_SECONDS"] = self.READ_LEASE_MS / 1000 if self.FASTPATH is True else 0.0
        values["SQLALCHEMY_DATABASE_URI"] = self.DATABASE_URL
        values["SQLALCHEMY_ENGINE_OPTIONS"] = self.engine_options()
        values["MIGRATION_ENGINE_OPTIONS"] = self.migration_engine_options()
        values["READINESS_ENGINE_OPTIONS"] = self.readiness_engine_options()
        values["SQLALCHEMY_TRACK_MODIFICATIONS"] = False
        values.update(
            API_TITLE="Bookmarks API",
            API_VERSION=self.VERSION,
            OPENAPI_VERSION="3.0.3",
            OPENAPI_URL_PREFIX="/api",
            OPENAPI_JSON_PATH="openapi.json",
        )
        return values

    def engine_options(self) -> dict[str, Any]:
        """SQLAlchemy pool settings.

        A connection killed by a database restart becomes a reconnect, not an error, on both paths.
        Not by SQLAlchemy's ``pool_pre_ping``: a ping on every checkout is a round trip per
        request, and ``bench/app-bench.sh`` measured it above the 10 % of the plain path's cached
        reads that would let it stay (app/README.md, Benchmark). Instead connections idle for
        ``DB_PING_IDLE_SECONDS`` are pinged (``repository.ping_idle_connections``, installed by
        ``create_app``), and the token query that starts every API request, a service read and a
        write transaction each recover from a dead connection by running once more
        (``repository``). ``pool_recycle`` stays under typical firewall idle timeouts;
        ``connect_timeout`` and ``statement_timeout`` bound how long a sick database can hold a
        worker thread.

        Connections are in autocommit mode: a read request runs one or two single statements, and
        wrapping them in a transaction costs a BEGIN and a ROLLBACK round trip each time (half of a
        cached read's database time, measured). Writes open an explicit READ COMMITTED transaction
        (``repository.transaction``): a change and the new ``data_version`` its triggers give the
        user commit together.
        """
        return {
            "isolation_level": "AUTOCOMMIT",
            "pool_pre_ping": False,
            "pool_size": self.DB_POOL_SIZE,
            "max_overflow": self.DB_MAX_OVERFLOW,
            "pool_timeout": 5,
            "pool_recycle": 1800,
            "connect_args": {
                "connect_timeout": self.DB_CONNECT_TIMEOUT,
                "application_name": "bookmarks",
                "options": f"-c statement_timeout={self.DB_STATEMENT_TIMEOUT_MS}",
            },
        }

    def readiness_engine_options(self) -> dict[str, Any]:
        """The readiness check's own engine (``ops``): one connection, bounded waits.

        Not the app's pool: when requests hold all of its connections, ``/health/ready`` would
        wait the pool's 5 s for one and answer late. Its own pool of one, pinged on checkout (a
        probe is rare), waits at most ``READINESS_TIMEOUT_MS`` for its connection, and the
        statement gets the same timeout.
        """
        return {
            "isolation_level": "AUTOCOMMIT",
            "pool_size": 1,
            "max_overflow": 0,
            "pool_timeout": self.READINESS_TIMEOUT_MS / 1000,
            "pool_pre_ping": True,
            "connect_args": {
                "connect_timeout": self.DB_CONNECT_TIMEOUT,
                "application_name": "bookmarks-ready",
                "options": f"-c statement_timeout={self.READINESS_TIMEOUT_MS}",
            },
        }

    def migration_engine_options(self) -> dict[str, Any]:
        """The engine migrations run on (``migrations/env.py``): one connection, then gone.

        Its own connection, so the timeouts hold for every statement, also those a migration runs
        outside its transaction (``CREATE INDEX CONCURRENTLY``), and never reach the app's pool.
        """
        options = (
            f"-c lock_timeout={self.MIGRATION_LOCK_TIMEOUT_MS}"
            f" -c statement_timeout={self.MIGRATION_STATEMENT_TIMEOUT_MS}"
        )
        return {
            "poolclass": NullPool,
            "connect_args": {
                "connect_timeout": self.DB_CONNECT_TIMEOUT,
                "application_name": "bookmarks-migrate",
                "options": options,
            },
        }


@dataclass
class DevelopmentConfig(BaseConfig):
    """A laptop: local database by socket, debug on, a random secret per process (no constant)."""

    NAME: ClassVar[str] = "development"

    SECRET_KEY: str = field(default_factory=lambda: _env("SECRET_KEY") or secrets.token_urlsafe(48))
    DATABASE_URL: str = field(
        default_factory=lambda: _env("DATABASE_URL", "postgresql+psycopg:///bookmarks")
    )
    DEBUG: bool = True
    SESSION_COOKIE_SECURE: bool = False
    PREFERRED_URL_SCHEME: str = "http"


@dataclass
class TestingConfig(BaseConfig):
    """The test suite: a real PostgreSQL named by ``DATABASE_URL`` (the tests never fake it)."""

    NAME: ClassVar[str] = "testing"
    __test__: ClassVar[bool] = False  # not a pytest test class, despite the name

    SECRET_KEY: str = field(default_factory=lambda: _env("SECRET_KEY") or secrets.token_urlsafe(48))
    DATABASE_URL: str = field(default_factory=lambda: _env("DATABASE_URL"))
    TESTING: bool = True
    SESSION_COOKIE_SECURE: bool = False
    PREFERRED_URL_SCHEME: str = "http"
    DB_POOL_SIZE: int = 2
    DB_MAX_OVERFLOW: int = 2

    def get_cache_config(self) -> CacheConfig:
        """Development numbers: tests must prove coherence, not rely on a short TTL hiding bugs."""
        return _build_cache_config(ttl=30, max_size=128, max_bytes=self.CACHE_MAX_BYTES)


@dataclass
class ProductionConfig(BaseConfig):
    """Production: secrets and database from the environment, no fallback, strict validation."""

    NAME: ClassVar[str] = "production"
    STRICT: ClassVar[bool] = True

    # Empty when missing, so ``_validate`` reports every missing variable at once by name.
    SECRET_KEY: str = field(default_factory=lambda: _env("SECRET_KEY"))
    DATABASE_URL: str = field(default_factory=lambda: _env("DATABASE_URL"))
    CACHE_MAX_BYTES: int = field(default_factory=lambda: _env_int("CACHE_MAX_BYTES", 32 * MIB))  # type: ignore[arg-type]
    RECORD_BODIES_MAX_BYTES: int = field(
        default_factory=lambda: _env_int("RECORD_BODIES_MAX_BYTES", 8 * MIB)  # type: ignore[arg-type]
    )

    def get_cache_config(self) -> CacheConfig:
        """Production numbers from the seeds (10 minutes, 4096 entries, LRU), and a byte budget."""
        return _build_cache_config(ttl=600, max_size=4096, max_bytes=self.CACHE_MAX_BYTES)


CONFIGS: dict[str, type[BaseConfig]] = {
    cls.NAME: cls for cls in (DevelopmentConfig, TestingConfig, ProductionConfig)
}


def config_class_from_env() -> type[BaseConfig]:
    """Pick the config class named by ``BOOKMARKS_CONFIG`` (or ``FLASK_CONFIG``).

    Unset means production: a server that forgot the variable gets strict checks, not debug mode.
    """
    for var in CONFIG_ENV_VARS:
        name = _env(var).lower()
        if name:
            try:
                return CONFIGS[name]
            except KeyError:
                known = ", ".join(sorted(CONFIGS))
                raise ConfigError(var, [f"{var}={name!r} is not one of {known}"]) from None
    return ProductionConfig
