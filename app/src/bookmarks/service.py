"""``BookmarkService``: the use cases, with a read cache that is never wrong.

Why the cache is coherent across workers and hosts
--------------------------------------------------
Each user row carries ``data_version``, bumped in the same transaction as every write to that
user's bookmarks (``UserRepository.bump_version``). The check that authenticates a request reads
the token's user row, and that same query returns ``data_version`` (``Principal.data_version``).
Cache keys include it, so after a write a request that learns the new version misses every
entry of the old one; no message has to reach the other workers or hosts, and none can be lost.
Entries of old versions are never read again and leave by LRU or TTL.

That check is answered from a **read lease** (``principals``): for ``READ_LEASE_MS`` (20 ms) after
its query was sent, a worker answers the token from memory, and every write waits that long, a
little more, after its commit and before it answers (``_write``, ``wait_out_leases``; the CLI's
revocation too). So once a write has been acknowledged, no worker anywhere still holds a lease
from before its commit: every request that starts later reads the new version, from a lease taken
after the commit or from a query of its own. Reads cost no round trip while a lease lasts;
writes answer 20 ms later. Concurrent requests of one worker that need the query share it
(``principals.SharedChecks``), only ever one that starts after they arrived.

A reader that looked up version *v* before a write committed may store what it read under *v*;
that entry is only ever served to requests that also hold *v*, i.e. that overlap the write, so
no request that starts after a write has been acknowledged sees data older than that write.

The cached single reads of leased tokens are answered below Flask (``cached_reads``), from the
same lease and the same cache keys, so everything above holds for them too.

LISTEN/NOTIFY was the alternative: it needs a listener thread per worker with its own
connection, and leaves a window between commit and delivery, of no known bound (a busy worker
may not run its listener for a while), in which another worker still serves the old value. A
lease has a bound, and the writer waits it out.

The cache is a ``cachetools.TTLCache`` (LRU eviction plus per-entry time-to-live), sized from
``config.get_cache_config()`` (the seeds' hard-coded 256 entries was a defect), and guarded by a
lock because gthread workers share it between threads. It holds frozen dataclasses, never ORM
objects, so a cached value cannot be changed by, or keep alive, a database session.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from cachetools import TTLCache
from sqlalchemy.orm import Session

from bookmarks.auth import Principal
from bookmarks.config import CacheConfig
from bookmarks.errors import NotFoundError
from bookmarks.metrics import CACHE_HITS, CACHE_MISSES
from bookmarks.models import Bookmark
from bookmarks.principals import wait_out_leases
from bookmarks.repository import (
    BookmarkRepository,
    UserRepository,
    once_more_if_disconnected,
    transaction,
)
from bookmarks.search import SearchIndex

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BookmarkRecord:
    """An immutable copy of a bookmark, safe to cache and to share between threads."""

    id: int
    url: str
    title: str
    notes: str
    tags: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    rank: float | None = None

    @classmethod
    def from_model(cls, bookmark: Bookmark, rank: float | None = None) -> BookmarkRecord:
        """Copy the columns the API shows out of an ORM object."""
        return cls(
            id=bookmark.id,
            url=bookmark.url,
            title=bookmark.title,
            notes=bookmark.notes,
            tags=tuple(bookmark.tags),
            created_at=bookmark.created_at,
            updated_at=bookmark.updated_at,
            rank=rank,
        )


@dataclass(frozen=True, slots=True)
class PageResult:
    """One page of bookmarks and what pagination links need."""

    items: tuple[BookmarkRecord, ...]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        """Number of pages (at least 1, so an empty collection still has a first page)."""
        return max(1, -(-self.total // self.per_page))


_MISSING = object()


class VersionedCache:
    """A thread-safe ``TTLCache`` whose keys carry the user's ``data_version``."""

    def __init__(self, config: CacheConfig) -> None:
        if config["eviction"] != "lru":
            raise ValueError(f"unsupported cache eviction {config['eviction']!r}; only 'lru'")
        self.maxsize = config["max_entries"]
        self.ttl = config["ttl_seconds"]
        self._cache: TTLCache[Hashable, Any] = TTLCache(maxsize=self.maxsize, ttl=self.ttl)
        self._lock = threading.Lock()

    def get_or_load(self, key: Hashable, load: Callable[[], T]) -> T:
        """Return the cached value for ``key`` or load, store and return it.

        Loading happens outside the lock: two threads may load the same key at once, which costs
        a query but never blocks readers of other keys behind a slow database.
        """
        with self._lock:
            value = self._cache.get(key, _MISSING)
        if value is not _MISSING:
            CACHE_HITS.inc()
            return value  # type: ignore[return-value]
        CACHE_MISSES.inc()
        value = load()
        with self._lock:
            self._cache[key] = value
        return value

    def get_cached(self, key: Hashable) -> Any:
        """The cached value for ``key`` (counted as a hit), or ``None`` if there is none.

        A cached ``None`` also gives ``None`` and is not counted: the caller then asks
        ``get_or_load``, which counts it.
        """
        with self._lock:
            value = self._cache.get(key)
        if value is not None:
            CACHE_HITS.inc()
        return value

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    def clear(self) -> None:
        """Drop everything (tests and operators; correctness never depends on it)."""
        with self._lock:
            self._cache.clear()


class BookmarkService:
    """Create, read, list, search, update and delete one user's bookmarks."""

    def __init__(
        self, session: Session, cache_config: CacheConfig, *, read_lease: float = 0.0
    ) -> None:
        self._session = session
        self._read_lease = read_lease
        self._users = UserRepository(session)
        self._repo = BookmarkRepository(session)
        self._search = SearchIndex(session)
        self.cache = VersionedCache(cache_config)

    # -- reads (cached, keyed by the caller's data_version) ----------------------------------
    def get(self, principal: Principal, bookmark_id: int) -> BookmarkRecord:
        """Return one bookmark of the caller, or raise ``NotFoundError``."""

        def load() -> BookmarkRecord | None:
            bookmark = self._repo.get(principal.user_id, bookmark_id)
            return BookmarkRecord.from_model(bookmark) if bookmark else None

        record = self.cache.get_or_load(self._key(principal, "get", bookmark_id), self._read(load))
        if record is None:
            raise NotFoundError("bookmark not found")
        return record

    def cached_get(self, principal: Principal, bookmark_id: int) -> BookmarkRecord | None:
        """The bookmark ``get`` would return, if the cache already holds it; else ``None``."""
        return self.cache.get_cached(self._key(principal, "get", bookmark_id))

    def list(
        self, principal: Principal, *, page: int, per_page: int, tag: str | None = None
    ) -> PageResult:
        """Return one page of the caller's bookmarks, newest first."""

        def load() -> PageResult:
            rows, total = self._repo.page(
                principal.user_id, offset=(page - 1) * per_page, limit=per_page, tag=tag
            )
            items = tuple(BookmarkRecord.from_model(row) for row in rows)
            return PageResult(items=items, total=total, page=page, per_page=per_page)

        key = self._key(principal, "list", page, per_page, tag)
        return self.cache.get_or_load(key, self._read(load))

    def search(
        self, principal: Principal, text: str, *, page: int, per_page: int, tag: str | None = None
    ) -> PageResult:
        """Return one page of the caller's bookmarks matching ``text``, best match first."""

        def load() -> PageResult:
            hits, total = self._search.search(
                principal.user_id, text, offset=(page - 1) * per_page, limit=per_page, tag=tag
            )
            items = tuple(BookmarkRecord.from_model(row, rank) for row, rank in hits)
            return PageResult(items=items, total=total, page=page, per_page=per_page)

        key = self._key(principal, "search", text, page, per_page, tag)
        return self.cache.get_or_load(key, self._read(load))

    # -- writes (bump the version in the same transaction) ------------------------------------
    def create(self, principal: Principal, values: Mapping[str, Any]) -> BookmarkRecord:
        """Add a bookmark for the caller."""
        with self._write(principal):
            return BookmarkRecord.from_model(self._repo.add(principal.user_id, values))

    def update(
        self, principal: Principal, bookmark_id: int, values: Mapping[str, Any]
    ) -> BookmarkRecord:
        """Change some or all editable fields of one of the caller's bookmarks."""
        with self._write(principal):
            bookmark = self._repo.get(principal.user_id, bookmark_id)
            if bookmark is None:
                raise NotFoundError("bookmark not found")
            return BookmarkRecord.from_model(self._repo.update(bookmark, values))

    def delete(self, principal: Principal, bookmark_id: int) -> None:
        """Delete one of the caller's bookmarks."""
        with self._write(principal):
            bookmark = self._repo.get(principal.user_id, bookmark_id)
            if bookmark is None:
                raise NotFoundError("bookmark not found")
            self._repo.delete(bookmark)

    @contextmanager
    def _write(self, principal: Principal) -> Iterator[None]:
        """One transaction: bump the caller's version, run the change, commit both or neither.

        Then wait out the read leases (``principals``) before the caller may acknowledge it, so
        no worker anywhere still answers from a check that predates the commit.
        """
        with transaction(self._session):
            # First statement of the write: the row lock orders concurrent writes of this user.
            self._users.bump_version(principal.user_id)
            yield
        wait_out_leases(self._read_lease)

    def _read(self, load: Callable[[], T]) -> Callable[[], T]:
        """``load``, run once more if its pooled connection was dead (reads are safe to repeat)."""
        return lambda: once_more_if_disconnected(self._session, load)

    @staticmethod
    def _key(principal: Principal, *parts: Hashable) -> tuple[Hashable, ...]:
        return (principal.user_id, principal.data_version, *parts)
