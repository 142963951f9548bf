"""BookmarkService: a configured cache that stays coherent across app instances (workers, hosts).

Two ``create_app()`` objects stand for two gunicorn workers or two hosts: separate processes share
nothing but the database, and separate apps here share nothing but the database either.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text

from bookmarks import create_app
from bookmarks.api import BODIES_KEY, SERVICE_KEY
from bookmarks.config import ProductionConfig
from bookmarks.extensions import db
from bookmarks.models import User
from bookmarks.repository import UserRepository, transaction
from bookmarks.service import (
    BookmarkRecord,
    BookmarkService,
    PageResult,
    VersionedCache,
    entry_size,
)
from conftest import acknowledge, cache_hits, libpq_url

Create = Callable[..., dict[str, Any]]


def cache_of(app: Flask) -> VersionedCache:
    return app.extensions[SERVICE_KEY].cache


@pytest.fixture
def other(app_factory: Callable[..., Flask]) -> FlaskClient:
    """A client of a second app instance: its own cache, the same database."""
    return app_factory().test_client()


def test_production_service_uses_the_configured_cache_not_256(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SECRET_KEY", "n8Zq4vW1xLr7Tk2Pj9Hc5Bm3Yf6Ds0Ga-Ue_Qw")
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u@127.0.0.1/db")
    cache = cache_of(create_app(ProductionConfig))
    assert (cache.maxsize, cache.ttl) == (4096, 600)


def test_testing_service_uses_development_numbers(app: Flask) -> None:
    assert (cache_of(app).maxsize, cache_of(app).ttl) == (128, 30)


def test_non_lru_eviction_is_refused(app: Flask) -> None:
    with pytest.raises(ValueError, match="only 'lru'"):
        BookmarkService(db.session, {"ttl_seconds": 1, "max_entries": 1, "eviction": "fifo"})
    del app


def test_repeated_reads_are_served_from_the_cache(
    app: Flask, client: FlaskClient, auth: dict[str, str], create: Create
) -> None:
    bookmark = create()
    before = cache_hits()
    for _ in range(3):
        assert client.get(f"/api/bookmarks/{bookmark['id']}", headers=auth).status_code == 200
    assert cache_hits() - before == 2
    # Proof the second and third reads did not query: a change that bypasses the triggers (and so
    # keeps data_version) is invisible to this app until the next real write.
    with app.app_context(), transaction(db.session) as session:
        session.execute(text("SET LOCAL session_replication_role = replica"))
        session.execute(text("UPDATE bookmarks SET title = 'sneaky'"))
    assert client.get(f"/api/bookmarks/{bookmark['id']}", headers=auth).json["title"] == ""


def test_get_is_coherent_across_instances(
    client: FlaskClient, other: FlaskClient, auth: dict[str, str], create: Create
) -> None:
    bookmark = create(title="v1")
    path = f"/api/bookmarks/{bookmark['id']}"
    assert other.get(path, headers=auth).json["title"] == "v1"  # cached in the other instance
    assert other.get(path, headers=auth).json["title"] == "v1"
    assert client.patch(path, json={"title": "v2"}, headers=auth).status_code == 200
    assert other.get(path, headers=auth).json["title"] == "v2"
    assert client.put(path, json={"url": "https://v3.example/"}, headers=auth).status_code == 200
    assert other.get(path, headers=auth).json["url"] == "https://v3.example/"
    assert client.delete(path, headers=auth).status_code == 204
    assert other.get(path, headers=auth).status_code == 404


def test_a_write_committed_by_any_database_client_is_seen_by_the_next_read(
    client: FlaskClient, auth: dict[str, str], create: Create, database_url: str
) -> None:
    """Coherence needs nothing from the writer but its commit and the lease's wait: no message."""
    bookmark = create(title="v1")
    path = f"/api/bookmarks/{bookmark['id']}"
    assert client.get(path, headers=auth).json["title"] == "v1"
    assert client.get(path, headers=auth).json["title"] == "v1"  # served from the cache
    with psycopg.connect(libpq_url(database_url)) as writer:  # commits when the block ends
        writer.execute("UPDATE bookmarks SET title = 'v2' WHERE id = %s", (bookmark["id"],))
        writer.execute("UPDATE users SET data_version = data_version + 1 WHERE name = 'alice'")
    acknowledge(client.application)
    assert client.get(path, headers=auth).json["title"] == "v2"


def test_list_is_coherent_across_instances(
    client: FlaskClient, other: FlaskClient, auth: dict[str, str], create: Create
) -> None:
    create("https://1.example/")
    assert other.get("/api/bookmarks", headers=auth).json["total"] == 1
    create("https://2.example/")
    assert other.get("/api/bookmarks", headers=auth).json["total"] == 2


def test_search_is_coherent_across_instances(
    client: FlaskClient, other: FlaskClient, auth: dict[str, str], create: Create
) -> None:
    bookmark = create(title="coherent caches")
    assert other.get("/api/bookmarks?q=coherent", headers=auth).json["total"] == 1
    client.patch(f"/api/bookmarks/{bookmark['id']}", json={"title": "stale"}, headers=auth)
    assert other.get("/api/bookmarks?q=coherent", headers=auth).json["total"] == 0
    assert other.get("/api/bookmarks?q=stale", headers=auth).json["total"] == 1


def test_missing_is_not_remembered_after_a_create_elsewhere(
    client: FlaskClient, other: FlaskClient, auth: dict[str, str], create: Create
) -> None:
    assert other.get("/api/bookmarks/1", headers=auth).status_code == 404
    create()
    assert other.get("/api/bookmarks/1", headers=auth).status_code == 200


def test_writes_by_one_user_keep_other_users_cache(
    app: Flask,
    client: FlaskClient,
    auth: dict[str, str],
    create: Create,
    make_user: Callable[[str], str],
) -> None:
    bob = {"Authorization": f"Bearer {make_user('bob')}"}
    client.post("/api/bookmarks", json={"url": "https://bob.example/"}, headers=bob)
    client.get("/api/bookmarks", headers=bob)
    before = cache_hits()
    create("https://alice.example/")
    client.get("/api/bookmarks", headers=bob)
    assert cache_hits() - before == 1


def test_each_write_gives_a_new_version_and_a_failed_write_none(
    app: Flask, client: FlaskClient, auth: dict[str, str], create: Create
) -> None:
    def version() -> int:
        with app.app_context():
            return db.session.execute(
                select(User.data_version).where(User.name == "alice")
            ).scalar_one()

    seen = [version()]
    bookmark = create("https://a.example/")
    seen.append(version())
    client.patch(f"/api/bookmarks/{bookmark['id']}", json={"notes": "x"}, headers=auth)
    seen.append(version())
    assert len(set(seen)) == 3, "every write, a version never seen before"
    assert (
        client.post("/api/bookmarks", json={"url": "https://a.example/"}, headers=auth).status_code
        == 409
    )
    assert client.delete("/api/bookmarks/999", headers=auth).status_code == 404
    assert version() == seen[-1]


def test_concurrent_writers_serialise_and_every_write_lands(
    app_factory: Callable[..., Flask], auth: dict[str, str], client: FlaskClient
) -> None:
    apps = [app_factory() for _ in range(4)]
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            writer = apps[n % len(apps)].test_client()
            for i in range(5):
                response = writer.post(
                    "/api/bookmarks", json={"url": f"https://{n}-{i}.example/"}, headers=auth
                )
                assert response.status_code == 201
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert client.get("/api/bookmarks", headers=auth).json["total"] == 20
    for made in apps:
        assert made.test_client().get("/api/bookmarks", headers=auth).json["total"] == 20


def test_cache_is_thread_safe_under_concurrent_loads() -> None:
    cache = VersionedCache(
        {"ttl_seconds": 60, "max_entries": 16, "max_bytes": 1 << 20, "eviction": "lru"}
    )
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(2000):
                key = (n, 0, i % 40)
                assert cache.get_or_load(key, lambda key=key: (0, key)) == key
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache) <= 16


def _page(notes: int, items: int = 10) -> PageResult:
    now = datetime.now(UTC)
    record = BookmarkRecord(1, "https://a.example/", "t", "n" * notes, ("x",), now, now)
    return PageResult(items=(record,) * items, total=items, page=1, per_page=items)


def test_the_cache_is_bounded_by_bytes_as_well_as_entries() -> None:
    budget = 200_000
    cache = VersionedCache(
        {"ttl_seconds": 60, "max_entries": 1000, "max_bytes": budget, "eviction": "lru"}
    )
    page = _page(notes=5_000)  # ~50 KB as entry_size weighs it
    assert 50_000 < entry_size((1, 1, "search", "q"), page) < 60_000
    for n in range(20):
        assert cache.get_or_load((1, 1, "search", f"q{n}"), lambda: (1, page)) is page
    assert cache.currsize <= budget
    assert len(cache) == 3, "the most recent that fit"
    small = VersionedCache(
        {"ttl_seconds": 60, "max_entries": 4, "max_bytes": budget, "eviction": "lru"}
    )
    for n in range(20):
        small.get_or_load((n, 1), lambda: (1, None))
    assert len(small) == 4, "and by entries"


def test_an_entry_larger_than_the_whole_budget_is_served_but_not_kept() -> None:
    cache = VersionedCache(
        {"ttl_seconds": 60, "max_entries": 10, "max_bytes": 10_000, "eviction": "lru"}
    )
    page = _page(notes=5_000)
    assert cache.get_or_load((1, 1, "big"), lambda: (1, page)) is page
    assert len(cache) == 0
    assert cache.get_cached((1, 1, "big")) is None


def test_remembered_bodies_are_bounded_by_bytes_and_entries(app: Flask) -> None:
    bodies = app.extensions[BODIES_KEY]
    assert bodies.max_entries == app.config["RECORD_BODIES_CACHED"]
    now = datetime.now(UTC)
    for n in range(200):
        record = BookmarkRecord(n, f"https://{n}.example/", "t", "n" * 9_000, (), now, now)
        assert f"https://{n}.example/" in bodies(record).decode()
    assert 0 < bodies.currsize <= app.config["RECORD_BODIES_MAX_BYTES"]


def test_an_entry_is_kept_under_the_version_its_data_was_read_at(
    app: Flask, client: FlaskClient, auth: dict[str, str], token: str, create: Create
) -> None:
    """A request that checked its version before a write and read after it: a restore of the
    older version must not find the newer data cached under it."""
    bookmark = create(title="A")
    path = f"/api/bookmarks/{bookmark['id']}"
    with app.app_context():
        checked = UserRepository(db.session).principal_for_token(token)
    assert client.patch(path, json={"title": "B"}, headers=auth).status_code == 200
    service = app.extensions[SERVICE_KEY]
    service.cache.clear()
    with app.app_context():
        now = UserRepository(db.session).principal_for_token(token)
        assert service.get(checked, bookmark["id"]).title == "B"  # read after the write
        assert service.list(checked, page=1, per_page=5).items[0].title == "B"
        assert service.cached_get(checked, bookmark["id"]) is None, "not under the old version"
        assert service.cached_get(now, bookmark["id"]).title == "B"
        db.session.remove()
