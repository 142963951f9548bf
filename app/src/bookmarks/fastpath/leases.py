"""Read leases: the token and version check, shared by one worker's requests and leased.

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
(``connections.PrincipalQuery``); checks of their own take one from the pool.

Read leases: a check is good for a moment, and writers wait that moment out
-------------------------------------------------------------------------------------
Even shared, a round trip per request is most of what a cached read costs. So an answer is
*leased*: for ``lease`` seconds, counted from the moment its round's query was **sent** (before
its snapshot was taken), the worker answers that token from memory. In exchange every writer
waits, after its commit and before it acknowledges the write, for ``repository.lease_wait``: a
little longer than any lease can last (``DRIFT`` and ``SLACK`` cover clocks of different hosts
running at slightly different rates). The guarantee is unchanged for every write the service
acknowledges: a lease that missed the write was taken before the commit, so it ended before the
acknowledgement, and a request that starts after the acknowledgement either holds a lease taken
after the commit (which saw it) or runs a round of its own. This is the "commit wait" that
lease-based caches and Spanner use: the cost moves from every read to every write (a write
answers ``lease_wait`` later; reads need no round trip while a lease lasts).

Only found tokens are leased: an unknown token is asked about every time, so a new token works
at once. The leases use ``CLOCK_BOOTTIME``, which keeps counting while a machine is suspended, so
a lease cannot outlive its time on a host that slept. ``lease=0`` turns leases off: every request
then checks the database (strictly linearizable: no read can see a write that a later read
misses, which leases allow only for reads that overlap the write's wait).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection

from bookmarks.auth import Principal, hash_token

Check = Callable[[Collection[str]], dict[str, Principal]]


def lease_clock() -> float:
    """Seconds on a clock that never goes back and keeps counting through a suspend."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


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
    hashes and return the principals of the valid ones (``connections.PrincipalQuery``). One
    instance per app (a gunicorn worker has one app), shared by its threads. A round's answers
    are leased for ``lease`` seconds (at most ``max_leases`` tokens; beyond that the leases that
    end soonest go first); writers must then ``repository.wait_out_leases(lease)`` before
    acknowledging a commit.
    """

    def __init__(
        self,
        check: Check,
        check_alone: Check | None = None,
        *,
        lease: float = 0.0,
        max_leases: int = 4096,
        clock: Callable[[], float] = lease_clock,
    ) -> None:
        self._check = check
        self._check_alone = check_alone or check
        self._lock = threading.Condition(threading.Lock())
        self._open: _Round | None = None  # collecting members; not started
        self._running = False  # a round's query is in flight
        self.lease = lease
        self._clock = clock
        # token hash -> (principal, when its lease ends); in the order the leases were taken, so
        # the first one ends first. Read without the lock (one dict lookup is atomic).
        self._leases: dict[str, tuple[Principal, float]] = {}
        self._max_leases = max_leases
        # Read by the tests: how many rounds ran, how many requests needed a check, and how many
        # a lease answered (counted without a lock: exact only when requests do not overlap).
        self.rounds = 0
        self.requests = 0
        self.leased = 0

    def principal(self, token: str) -> Principal | None:
        """The token's user and current ``data_version`` as of a moment after this call began.

        Or, within a lease, as of a moment less than ``lease`` before it: a moment after every
        write that was acknowledged before this call began (writers wait the lease out).
        """
        token_hash = hash_token(token)
        leased = self.from_lease(token_hash)
        if leased is not None:
            return leased
        with self._lock:
            self.requests += 1
            joined = self._open
            if joined is None:
                joined = self._open = _Round()
            joined.hashes.add(token_hash)
            while self._running and not joined.done:
                self._lock.wait()
                # The round that just ended may have leased this token. Its query started before
                # this request, but within the lease, which is all a lease needs: no need to run
                # ours (the token stays in it, harmlessly, if someone else does).
                leased = self._lease_of(token_hash)
                if leased is not None:
                    return leased
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

    def from_lease(self, token_hash: str) -> Principal | None:
        """The principal of a token hash while its lease lasts, else ``None`` (no query)."""
        leased = self._lease_of(token_hash)
        if leased is not None:
            self.leased += 1
        return leased

    def _lease_of(self, token_hash: str) -> Principal | None:
        leased = self._leases.get(token_hash)
        return leased[0] if leased is not None and self._clock() < leased[1] else None

    def _run(self, joined: _Round) -> dict[str, Principal]:
        # No one can join any more (the round is no longer open): its hashes are fixed.
        # The lease counts from before the query is sent, so from before its snapshot.
        sent = self._clock()
        try:
            joined.found = self._check(joined.hashes)
        except BaseException:
            joined.failed = True
            raise
        finally:
            with self._lock:
                if self.lease > 0 and not joined.failed:
                    self._lease_answers(joined, sent + self.lease)
                joined.done = True
                self._running = False
                self._lock.notify_all()
        return joined.found

    def _lease_answers(self, joined: _Round, expires: float) -> None:
        # Called with the lock held. A token the round did not find (revoked) loses any lease;
        # a renewed one moves to the end, so the order stays the order in which leases end.
        leases = self._leases
        for token_hash in joined.hashes:
            leases.pop(token_hash, None)
            found = joined.found.get(token_hash)
            if found is not None:
                leases[token_hash] = (found, expires)
        if len(leases) > self._max_leases:
            self._drop_leases(len(leases) - self._max_leases)

    def _drop_leases(self, excess: int) -> None:
        # The ended leases go, and if that is not enough, those that end soonest.
        now = self._clock()
        leases = self._leases
        for token_hash, (_, expires) in list(leases.items()):
            if excess <= 0 and expires > now:
                break
            del leases[token_hash]
            excess -= 1
