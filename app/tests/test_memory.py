"""Memory is bounded by bytes: a worker's read cache cannot grow past its budget.

A page of search results weighs about a megabyte here and every distinct ``q`` is a new entry, so
a cache bounded by entries alone (4096 in production) would grow to gigabytes per worker. Real
gunicorn worker processes, the production config, their resident memory read from ``/proc``.
"""

from __future__ import annotations

import random
import secrets
import string
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from flask import Flask

from conftest import Served, gunicorn_workers, libpq_url

MIB = 1024 * 1024
WORKERS = 2
BUDGET = 8 * MIB  # CACHE_MAX_BYTES
BODIES_BUDGET = 2 * MIB  # RECORD_BODIES_MAX_BYTES
# What a worker may hold beyond its budgets: requests in flight (4 threads, each building a page of
# 100 ORM objects, their records and a 1 MiB JSON body) and the allocator's slack.
MARGIN = 24 * MIB
BOOKMARKS = 100
NOTES = 9_000  # characters of notes per bookmark, near the 10 000 allowed
SEARCHES = 240  # distinct searches, each a page of every bookmark: ~240 MiB if nothing bounded it


def resident(pid: int) -> int:
    """A process's resident memory, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture
def heavy_user(app: Flask, token: str, database_url: str) -> str:
    """Alice, with BOOKMARKS bookmarks of ~9 KB each that every search below matches."""
    del app
    words = random.Random(16)  # noqa: S311 - test data, the same every run
    with psycopg.connect(libpq_url(database_url)) as connection:
        user_id = connection.execute("SELECT id FROM users WHERE name = 'alice'").fetchone()[0]
        for n in range(BOOKMARKS):
            notes = " ".join(
                "".join(words.choices(string.ascii_lowercase, k=8)) for _ in range(NOTES // 9)
            )
            connection.execute(
                "INSERT INTO bookmarks (user_id, url, title, notes) VALUES (%s, %s, %s, %s)",
                (user_id, f"https://{n}.example/", f"common {n}", notes),
            )
    return token


@pytest.fixture
def production(app: Flask, database_url: str, tmp_path: Path) -> Iterator[Served]:
    del app  # empties the tables after the test (gunicorn is stopped first)
    env = {
        "BOOKMARKS_CONFIG": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "CACHE_MAX_BYTES": str(BUDGET),
        "RECORD_BODIES_MAX_BYTES": str(BODIES_BUDGET),
        "GUNICORN_THREADS": "4",
    }
    with gunicorn_workers(database_url, tmp_path, WORKERS, **env) as served:
        yield served


def search_everywhere(served: Served, token: str, terms: range) -> dict[int, int]:
    """Run one distinct search per term (4 at a time); how many each worker answered."""

    def one(n: int) -> int:
        status, body, pid = served.call(f"/api/bookmarks?q=common+-zz{n}x&per_page=100", token)
        assert (status, len(body["items"])) == (200, BOOKMARKS)
        return pid

    counts: dict[int, int] = {}
    with ThreadPoolExecutor(4) as pool:
        for pid in pool.map(one, terms):
            counts[pid] = counts.get(pid, 0) + 1
    return counts


def test_distinct_searches_of_large_bookmarks_keep_each_worker_within_its_budget(
    production: Served, heavy_user: str
) -> None:
    # Warm up: every worker has loaded its code, its connections and a few pages' worth of
    # allocator arenas before its baseline is taken.
    warm = search_everywhere(production, heavy_user, range(-24, 0))
    assert len(warm) == WORKERS
    baseline = {pid: resident(pid) for pid in warm}
    answered = search_everywhere(production, heavy_user, range(SEARCHES))
    grown = {pid: resident(pid) - baseline[pid] for pid in baseline}
    print(
        "resident growth per worker (MiB):",
        {pid: round(growth / MIB, 1) for pid, growth in grown.items()},
        "searches per worker:",
        answered,
        f"bound: {(BUDGET + BODIES_BUDGET + MARGIN) / MIB:.0f} MiB",
    )
    for pid, count in answered.items():
        # Each worker alone saw far more than its budget: unbounded, it would have kept it all.
        assert count * BOOKMARKS * NOTES > 4 * (BUDGET + BODIES_BUDGET), pid
    for pid, growth in grown.items():
        assert growth <= BUDGET + BODIES_BUDGET + MARGIN, (
            f"worker {pid} grew {growth / MIB:.1f} MiB"
        )
