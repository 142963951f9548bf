"""``BookmarkService``: the use cases, with a read cache that is never wrong.

Why the cache is coherent across workers and hosts
--------------------------------------------------
Each user row carries ``data_version``, and the database itself gives it a new random 64-bit value
in every transaction that changes the user's bookmarks or tokens (triggers, migration ``0003``):
the service's writes, the CLI, a ``psql`` session and a restore script alike, none of which has to
know. The check that authenticates a request reads the token's user row, and that same query
returns ``data_version`` (``Principal.data_version``). Cache keys include it, so after a write a
request that learns the new version misses every entry of the old one; no message has to reach
the other workers or hosts, and none can be lost. Entries of old versions are never read again
and leave by LRU or TTL. A version is never issued twice (random, not a counter), so a database
restored to an older state, or a failover to a replica that missed the last commits, cannot make
a later write reuse a version whose entries some worker still holds.

With the fast path on, that check is answered from a **read lease** (``fastpath.leases``): for
``READ_LEASE_MS`` (20 ms) after its query was sent, a worker answers the token from memory, and
every commit waits that long, a little more, before it returns
(``repository.wait_out_leases_after_commits``: one session event that every write of the app goes
through). So once a write has been acknowledged, no worker anywhere still holds a lease from
before its commit: every request that starts later reads the new version, from a lease taken after
the commit or from a query of its own. Reads cost no round trip while a lease lasts; writes answer
20 ms later. A writer outside the app needs no version bump, but its change reaches readers that
hold a lease only once the lease has ended (at most ``READ_LEASE_MS`` after its commit; at once
with ``READ_LEASE_MS=0`` or ``FASTPATH=off``). Concurrent requests of one worker that need the
query share it (``fastpath.leases.SharedChecks``), only ever one that starts after they arrived.

An entry is stored under the version read **in the same statement as its data** (one snapshot),
not under the version the request's check saw: a reader that checked version *v* and then read
after a write committed stores what it read under the write's version. So an entry under *v* is
exactly the state *v* names, and a database restored to *v* is served exactly what it holds.

The cached single reads of leased tokens are answered below Flask (``fastpath.cached_reads``),
from the same lease and the same cache keys, so everything above holds for them too.

LISTEN/NOTIFY was the alternative: it needs a listener thread per worker with its own
connection, and leaves a window between commit and delivery, of no known bound (a busy worker
may not run its listener for a while), in which another worker still serves the old value. A
lease has a bound, and the writer waits it out.

The cache is a ``cachetools.TTLCache`` (LRU eviction plus per-entry time-to-live), sized from
``config.get_cache_config()`` (the seeds' hard-coded 256 entries was a defect) in entries *and*
bytes: a page of search results can weigh a megabyte and every distinct query is a new key, so a
count of entries alone lets one user fill a worker's memory. Each entry is weighed by
``entry_size`` (its key, its value and the cache's bookkeeping), and the least recently used go
until both bounds hold; an entry larger than the whole budget is served but not kept. It is
guarded by a lock because gthread workers share it between threads. It holds frozen dataclasses,
never ORM objects, so a cached value cannot be changed by, or keep alive, a database session.
"""

from __future__ import annotations

import sys
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
from bookmarks.repository import BookmarkRepository, once_more_if_disconnected, transaction
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
# What a cache entry costs beyond its key and value: TTLCache's dict slot, LRU and expiry links
# and our (value, size) pair, rounded up.
ENTRY_OVERHEAD = 400
_DATETIME_SIZE = sys.getsizeof(datetime.min)
_FLOAT_SIZE = sys.getsizeof(0.0)


def record_size(record: BookmarkRecord) -> int:
    """Bytes a record holds: itself, its strings, its tags and its timestamps."""
    return (
        sys.getsizeof(record)
        + sys.getsizeof(record.url)
        + sys.getsizeof(record.title)
        + sys.getsizeof(record.notes)
        + sys.getsizeof(record.tags)
        + sum(sys.getsizeof(tag) for tag in record.tags)
        + 2 * _DATETIME_SIZE
        + (_FLOAT_SIZE if record.rank is not None else 0)
    )


def entry_size(key: Hashable, value: object) -> int:
    """What caching ``value`` under ``key`` costs, in bytes (the budget's unit)."""
    size = ENTRY_OVERHEAD + sys.getsizeof(key)
    if isinstance(key, tuple):
        size += sum(sys.getsizeof(part) for part in key)
    if isinstance(value, BookmarkRecord):
        return size + record_size(value)
    if isinstance(value, PageResult):
        items = sys.getsizeof(value) + sys.getsizeof(value.items)
        return size + items + sum(record_size(item) for item in value.items)
    return size + sys.getsizeof(value)


class VersionedCache:
    """A thread-safe ``TTLCache`` whose keys carry the user's ``data_version``.

    Bounded twice: ``max_entries`` entries and ``max_bytes`` bytes as ``entry_size`` counts them.
    """

    def __init__(self, config: CacheConfig) -> None:
        if config["eviction"] != "lru":
            raise ValueError(f"unsupported cache eviction {config['eviction']!r}; only 'lru'")
        self.maxsize = config["max_entries"]
        self.max_bytes = config["max_bytes"]
        self.ttl = config["ttl_seconds"]
        # Values are stored as (value, size): cachetools weighs values only, and a key (a search
        # text) weighs too.
        self._cache: TTLCache[Hashable, tuple[Any, int]] = TTLCache(
            maxsize=self.max_bytes, ttl=self.ttl, getsizeof=lambda entry: entry[1]
        )
        self._lock = threading.Lock()

    def get_or_load(self, key: tuple[Hashable, ...], load: Callable[[], tuple[int | None, T]]) -> T:
        """Return the cached value for ``key`` or load, store and return it.

        ``key`` is ``(user_id, data_version, *parts)``; ``load`` returns the version its data was
        read at (in the same snapshot) and the data, which is stored under that version (none:
        not stored). Loading happens outside the lock: two threads may load the same key at once,
        which costs a query but never blocks readers of other keys behind a slow database.
        """
        with self._lock:
            entry = self._cache.get(key, _MISSING)
        if entry is not _MISSING:
            CACHE_HITS.inc()
            return entry[0]  # type: ignore[index]
        CACHE_MISSES.inc()
        version, value = load()
        if version is not None:
            self._store((key[0], version, *key[2:]), value)
        return value

    def _store(self, key: Hashable, value: object) -> None:
        size = entry_size(key, value)
        if size > self.max_bytes:
            return  # larger than the whole budget: served, never kept
        with self._lock:
            cache = self._cache
            cache[key] = (value, size)  # evicts least recently used entries to fit the bytes
            while len(cache) > self.maxsize:
                cache.popitem()

    @property
    def currsize(self) -> int:
        """Bytes held, as ``entry_size`` counts them."""
        with self._lock:
            return int(self._cache.currsize)

    def get_cached(self, key: Hashable) -> Any:
        """The cached value for ``key`` (counted as a hit), or ``None`` if there is none.

        A cached ``None`` also gives ``None`` and is not counted: the caller then asks
        ``get_or_load``, which counts it.
        """
        with self._lock:
            entry = self._cache.get(key)
        value = entry[0] if entry is not None else None
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

    def __init__(self, session: Session, cache_config: CacheConfig) -> None:
        self._session = session
        self._repo = BookmarkRepository(session)
        self._search = SearchIndex(session)
        self.cache = VersionedCache(cache_config)

    # -- reads (cached, keyed by the caller's data_version) ----------------------------------
    def get(self, principal: Principal, bookmark_id: int) -> BookmarkRecord:
        """Return one bookmark of the caller, or raise ``NotFoundError``."""

        def load() -> tuple[int | None, BookmarkRecord | None]:
            version, bookmark = self._repo.get_versioned(principal.user_id, bookmark_id)
            return version, BookmarkRecord.from_model(bookmark) if bookmark else None

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

        def load() -> tuple[int | None, PageResult]:
            rows, total, version = self._repo.page(
                principal.user_id, offset=(page - 1) * per_page, limit=per_page, tag=tag
            )
            items = tuple(BookmarkRecord.from_model(row) for row in rows)
            return version, PageResult(items=items, total=total, page=page, per_page=per_page)

        key = self._key(principal, "list", page, per_page, tag)
        return self.cache.get_or_load(key, self._read(load))

    def search(
        self, principal: Principal, text: str, *, page: int, per_page: int, tag: str | None = None
    ) -> PageResult:
        """Return one page of the caller's bookmarks matching ``text``, best match first."""

        def load() -> tuple[int | None, PageResult]:
            hits, total, version = self._search.search(
                principal.user_id, text, offset=(page - 1) * per_page, limit=per_page, tag=tag
            )
            items = tuple(BookmarkRecord.from_model(row, rank) for row, rank in hits)
            return version, PageResult(items=items, total=total, page=page, per_page=per_page)

        key = self._key(principal, "search", text, page, per_page, tag)
        return self.cache.get_or_load(key, self._read(load))

    # -- writes (the database gives the user a new version in the same transaction) ----------
    def create(self, principal: Principal, values: Mapping[str, Any]) -> BookmarkRecord:
        """Add a bookmark for the caller."""
        with self._write():
            return BookmarkRecord.from_model(self._repo.add(principal.user_id, values))

    def update(
        self, principal: Principal, bookmark_id: int, values: Mapping[str, Any]
    ) -> BookmarkRecord:
        """Change some or all editable fields of one of the caller's bookmarks."""
        with self._write():
            bookmark = self._repo.get(principal.user_id, bookmark_id)
            if bookmark is None:
                raise NotFoundError("bookmark not found")
            return BookmarkRecord.from_model(self._repo.update(bookmark, values))

    def delete(self, principal: Principal, bookmark_id: int) -> None:
        """Delete one of the caller's bookmarks."""
        with self._write():
            bookmark = self._repo.get(principal.user_id, bookmark_id)
            if bookmark is None:
                raise NotFoundError("bookmark not found")
            self._repo.delete(bookmark)

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One transaction: the change and (by trigger) the caller's new version, or neither.

        Its commit returns once the read leases are over (``wait_out_leases_after_commits``), so
        no worker anywhere still answers from a check that predates it.
        """
        with transaction(self._session):
            yield

    def _read(self, load: Callable[[], T]) -> Callable[[], T]:
        """``load``, run once more if its pooled connection was dead (reads are safe to repeat)."""
        return lambda: once_more_if_disconnected(self._session, load)

    @staticmethod
    def _key(principal: Principal, *parts: Hashable) -> tuple[Hashable, ...]:
        return (principal.user_id, principal.data_version, *parts)
