"""The per-request token and version check, shared by the concurrent requests of one worker.

Every API request must learn, from the database, who its token belongs to and that user's
current ``data_version`` (the cache's coherence and a revocation's immediate effect both rest on
it, see ``service.py``). Under load the threads of a gthread worker ask the same question many
times per millisecond, and the round trip, not the query, is what it costs. ``SharedChecks``
runs the check in rounds: one round is in flight at a time; a request that arrives while one
is in flight waits for it to end and then goes with the *next* round, together with every other
request that arrived meanwhile, whatever their tokens (one query, ``token_hash = ANY(...)``).

Why this stays strict: a request only ever joins a round that has not started yet, so the
round's query is sent, and its snapshot taken, after the request arrived. Anything committed
before a request started (a write and its version bump, a revocation) was committed before the
query of its round began, so that query sees it, exactly as a query of its own would. A round
that was already in flight when a request arrived is never shared with it, even though its
answer would come sooner: its snapshot may predate the request.

A failed round (database down, pool exhausted) raises in the request that ran it; every other
member then runs a check of its own (``check_alone``, through the pool), so each request fails or
succeeds on its own and with its own error, as it would without sharing.

Rounds never overlap, so they can all run on one connection that the worker keeps
(``repository.PrincipalQuery``); checks of their own take one from the pool.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection

from bookmarks.auth import Principal, hash_token

Check = Callable[[Collection[str]], dict[str, Principal]]


class _Round:
    """One query's worth of token hashes, and its answer once it has run."""

    __slots__ = ("done", "failed", "found", "hashes")

    def __init__(self) -> None:
        self.hashes: set[str] = set()
        self.found: dict[str, Principal] = {}
        self.done = False
        self.failed = False


class SharedChecks:
    """Resolve tokens with ``check``, one round at a time (``check_alone`` after a failed round).

    ``check`` is never called by two threads at once; ``check_alone`` may be. Both take token
    hashes and return the principals of the valid ones (``repository.lookup_principals``). One
    instance per app (a gunicorn worker has one app), shared by its threads.
    """

    def __init__(self, check: Check, check_alone: Check | None = None) -> None:
        self._check = check
        self._check_alone = check_alone or check
        self._lock = threading.Condition(threading.Lock())
        self._open: _Round | None = None  # collecting members; not started
        self._running = False  # a round's query is in flight
        # Read by the tests: how many rounds ran, and how many requests they served.
        self.rounds = 0
        self.requests = 0

    def principal(self, token: str) -> Principal | None:
        """The token's user and current ``data_version`` as of a moment after this call began."""
        token_hash = hash_token(token)
        with self._lock:
            self.requests += 1
            joined = self._open
            if joined is None:
                joined = self._open = _Round()
            joined.hashes.add(token_hash)
            while self._running and not joined.done:
                self._lock.wait()
            if not joined.done:
                # Nothing in flight and our round has not run: it starts now, with us.
                self._open = None
                self._running = True
                self.rounds += 1
                lead = True
            else:
                lead = False
        if lead:
            return self._run(joined).get(token_hash)
        if joined.failed:
            return self._check_alone((token_hash,)).get(token_hash)
        return joined.found.get(token_hash)

    def _run(self, joined: _Round) -> dict[str, Principal]:
        # No one can join any more (the round is no longer open): its hashes are fixed.
        try:
            joined.found = self._check(joined.hashes)
        except BaseException:
            joined.failed = True
            raise
        finally:
            with self._lock:
                joined.done = True
                self._running = False
                self._lock.notify_all()
        return joined.found
