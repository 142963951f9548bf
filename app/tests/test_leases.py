"""Read leases (``fastpath.leases``): requests share the token check, and it stays strict.

The first tests drive the rounds with a fake check whose "snapshot" is the value of a counter
when the check starts, as a query's snapshot is taken when it starts (and the read leases with a
fake clock); the last ones run real requests on two app instances while a writer that shares
nothing with them but the database commits (and waits out the leases, as the service's writes
do), and check every answer against the moment its write was acknowledged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from bookmarks.api import CHECKS_KEY
from bookmarks.auth import Principal, hash_token
from bookmarks.fastpath.leases import SharedChecks
from bookmarks.repository import lease_wait
from conftest import acknowledge, answered_below_flask, libpq_url

TOKENS = [f"bm_{n:043d}" for n in range(4)]
WAIT = 10  # seconds; a generous bound, only reached if the code under test is broken


class FakeDatabase:
    """A check whose answer is the committed version at the moment the check starts.

    The first ``hold`` checks block after taking their snapshot until ``release`` is called, so
    a test can commit, and start requests, while a check is in flight.
    """

    def __init__(self, hold: int = 1, fail_on: Collection[int] = ()) -> None:
        self.version = 1
        self.calls: list[frozenset[str]] = []
        self.hold = hold
        self.fail_on = set(fail_on)
        self.started = threading.Event()
        self.released = threading.Event()

    def check(self, token_hashes: Collection[str]) -> dict[str, Principal]:
        snapshot = self.version
        self.calls.append(frozenset(token_hashes))
        number = len(self.calls)
        if number <= self.hold:
            self.started.set()
            assert self.released.wait(WAIT)
        if number in self.fail_on:
            raise RuntimeError(f"check {number} failed")
        return {h: Principal(user_id=1, name="alice", data_version=snapshot) for h in token_hashes}

    def release(self) -> None:
        self.released.set()


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``target`` in a thread; the dict gets its ``result`` or its ``error``."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = target()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_an_uncontended_request_runs_its_own_check() -> None:
    database = FakeDatabase(hold=0)
    checks = SharedChecks(database.check)
    assert checks.principal(TOKENS[0]).data_version == 1
    database.version = 2
    assert checks.principal(TOKENS[0]).data_version == 2
    assert database.calls == [frozenset({hash_token(TOKENS[0])})] * 2
    assert (checks.rounds, checks.requests) == (2, 2)


def test_a_request_never_joins_a_check_already_in_flight() -> None:
    database = FakeDatabase(hold=1)
    checks = SharedChecks(database.check)
    first, first_outcome = in_thread(lambda: checks.principal(TOKENS[0]))
    assert database.started.wait(WAIT)  # its snapshot is taken: version 1
    database.version = 2  # a write commits while that check is in flight
    later, later_outcome = in_thread(lambda: checks.principal(TOKENS[0]))
    wait_for(lambda: checks.requests == 2)
    database.release()
    first.join(WAIT)
    later.join(WAIT)
    assert first_outcome["result"].data_version == 1  # started before the commit: either is right
    assert later_outcome["result"].data_version == 2  # started after it: only the new version
    assert len(database.calls) == 2


def test_requests_arriving_during_a_check_share_the_next_one_whatever_their_tokens() -> None:
    database = FakeDatabase(hold=1)
    checks = SharedChecks(database.check)
    first, _ = in_thread(lambda: checks.principal(TOKENS[0]))
    assert database.started.wait(WAIT)
    database.version = 2
    waiting = [in_thread(lambda token=token: checks.principal(token)) for token in TOKENS]
    wait_for(lambda: checks.requests == 1 + len(TOKENS))
    database.release()
    first.join(WAIT)
    for thread, outcome in waiting:
        thread.join(WAIT)
        assert outcome["result"].data_version == 2
    assert database.calls[1] == frozenset(hash_token(token) for token in TOKENS)
    assert (checks.rounds, checks.requests) == (2, 5)


def test_an_unknown_or_revoked_token_gets_none_in_a_shared_round() -> None:
    known = hash_token(TOKENS[0])

    def check(token_hashes: Collection[str]) -> dict[str, Principal]:
        return {h: Principal(1, "alice", 1) for h in token_hashes if h == known}

    checks = SharedChecks(check)
    assert checks.principal(TOKENS[0]) is not None
    assert checks.principal(TOKENS[1]) is None


def test_a_failed_round_fails_only_the_request_that_ran_it() -> None:
    # Check 1 holds while two requests queue up; check 2, their shared one, fails; the member
    # that did not run it runs check 3 of its own and gets its answer.
    database = FakeDatabase(hold=1, fail_on={2})
    checks = SharedChecks(database.check)
    first, first_outcome = in_thread(lambda: checks.principal(TOKENS[0]))
    assert database.started.wait(WAIT)
    waiting = [in_thread(lambda token=token: checks.principal(token)) for token in TOKENS[1:3]]
    wait_for(lambda: checks.requests == 3)
    database.release()
    first.join(WAIT)
    outcomes = []
    for thread, outcome in waiting:
        thread.join(WAIT)
        outcomes.append(outcome)
    assert first_outcome["result"].data_version == 1
    errors = [o["error"] for o in outcomes if "error" in o]
    assert [str(e) for e in errors] == ["check 2 failed"]
    assert sum("result" in o for o in outcomes) == 1
    assert len(database.calls) == 3
    assert len(database.calls[2]) == 1  # its own check, for its own token only
    # The checks work again afterwards.
    assert checks.principal(TOKENS[0]).data_version == 1


def test_many_threads_share_rounds_and_each_sees_a_snapshot_from_after_it_arrived() -> None:
    """Randomised: versions commit continuously; every answer must be at least the version
    committed before its request began."""
    lock = threading.Lock()
    state = {"version": 0}

    def check(token_hashes: Collection[str]) -> dict[str, Principal]:
        snapshot = state["version"]
        time.sleep(0.0005)  # the round trip, during which commits go on
        return {h: Principal(1, "alice", snapshot) for h in token_hashes}

    checks = SharedChecks(check)
    stop = threading.Event()
    violations: list[tuple[int, int]] = []

    def commit() -> None:
        while not stop.is_set():
            with lock:
                state["version"] += 1
            time.sleep(0.0002)

    def read() -> None:
        while not stop.is_set():
            committed = state["version"]  # committed before this request starts
            seen = checks.principal(TOKENS[0]).data_version
            if seen < committed:
                violations.append((committed, seen))

    threads = [threading.Thread(target=commit)] + [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    stop.set()
    for thread in threads:
        thread.join(WAIT)
    assert violations == []
    assert checks.rounds < checks.requests, "the rounds were shared"


# -- read leases ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_answer_is_leased_from_the_moment_its_query_was_sent() -> None:
    clock = FakeClock()
    database = FakeDatabase(hold=0)

    def slow_check(token_hashes: Collection[str]) -> dict[str, Principal]:
        clock.now += 0.4  # the round trip: the lease is already running
        return database.check(token_hashes)

    checks = SharedChecks(slow_check, lease=1.0, clock=clock)
    assert checks.principal(TOKENS[0]).data_version == 1  # sent at 100.0, back at 100.4
    database.version = 2
    clock.now = 100.99
    assert checks.principal(TOKENS[0]).data_version == 1  # leased: no query
    assert (len(database.calls), checks.leased) == (1, 1)
    clock.now = 101.0  # one lease after the query was sent, not after it came back
    assert checks.principal(TOKENS[0]).data_version == 2
    assert len(database.calls) == 2


def test_leases_are_per_token_and_never_for_unknown_or_revoked_tokens() -> None:
    clock = FakeClock()
    valid = {hash_token(TOKENS[0]), hash_token(TOKENS[1])}
    calls: list[frozenset[str]] = []

    def check(token_hashes: Collection[str]) -> dict[str, Principal]:
        calls.append(frozenset(token_hashes))
        return {h: Principal(1, "alice", 1) for h in token_hashes if h in valid}

    checks = SharedChecks(check, lease=1.0, clock=clock)
    assert checks.principal(TOKENS[0]) is not None
    assert checks.principal(TOKENS[1]) is not None  # its own check: leases are per token
    assert checks.principal(TOKENS[2]) is None
    assert checks.principal(TOKENS[2]) is None  # asked again: a new token must work at once
    assert len(calls) == 4
    valid.discard(hash_token(TOKENS[0]))  # revoked; the revoker waits the lease out
    clock.now += 1.0
    assert checks.principal(TOKENS[0]) is None
    assert checks.principal(TOKENS[0]) is None
    assert len(calls) == 6, "a revoked token is asked about every time, like an unknown one"


@pytest.mark.parametrize(
    ("lease", "queries"),
    [(60.0, 1), (0, 2)],
    ids=["the lease it leaves answers them", "without a lease, one more round for the three"],
)
def test_requests_that_waited_for_a_round(lease: float, queries: int) -> None:
    database = FakeDatabase(hold=1)
    checks = SharedChecks(database.check, lease=lease)
    first, first_outcome = in_thread(lambda: checks.principal(TOKENS[0]))
    assert database.started.wait(WAIT)
    waiting = [in_thread(lambda: checks.principal(TOKENS[0])) for _ in range(3)]
    wait_for(lambda: checks.requests == 4)
    database.release()
    first.join(WAIT)
    for thread, outcome in waiting:
        thread.join(WAIT)
        assert outcome["result"] == first_outcome["result"]  # nothing committed meanwhile
    assert len(database.calls) == queries


def test_beyond_max_leases_the_lease_that_ends_first_goes() -> None:
    clock = FakeClock()
    database = FakeDatabase(hold=0)
    checks = SharedChecks(database.check, lease=1.0, max_leases=2, clock=clock)
    for token in TOKENS[:3]:  # three leases, taken in turn: the first one ends first
        checks.principal(token)
        clock.now += 0.1
    assert len(database.calls) == 3
    checks.principal(TOKENS[2])
    checks.principal(TOKENS[1])
    assert len(database.calls) == 3, "the two newest leases are kept"
    checks.principal(TOKENS[0])
    assert len(database.calls) == 4, "the first lease was dropped"


def test_without_a_lease_every_request_checks() -> None:
    database = FakeDatabase(hold=0)
    checks = SharedChecks(database.check, lease=0)
    for _ in range(3):
        checks.principal(TOKENS[0])
    assert (len(database.calls), checks.leased) == (3, 0)


def test_lease_wait_outlasts_the_lease_on_a_clock_running_slightly_fast() -> None:
    assert lease_wait(0) == 0
    assert lease_wait(0.02) >= 0.02 * (1 + 500e-6) + 0.0005
    assert lease_wait(1.0) > 1.0


def test_writes_through_the_service_are_answered_only_after_the_lease(
    app_factory: Callable[..., Flask],
    auth: dict[str, str],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The write waits the lease out after its commit and before its answer; a read never waits.

    The waits are recorded, not timed: each one notes whether the write was already visible to
    another connection (committed) and whether the response had been sent.
    """
    client = app_factory(FASTPATH=True, READ_LEASE_MS=1000).test_client()
    answered = False
    waits: list[tuple[float, int, bool]] = []

    def sleep(seconds: float) -> None:
        with psycopg.connect(libpq_url(database_url)) as other:
            visible = other.execute("SELECT count(*) FROM bookmarks").fetchone()[0]
        waits.append((seconds, visible, answered))

    monkeypatch.setattr(time, "sleep", sleep)
    created = client.post("/api/bookmarks", json={"url": "https://a.example/"}, headers=auth)
    answered = True
    assert created.status_code == 201
    assert waits == [(lease_wait(1.0), 1, False)], "one wait, after the commit, before the answer"
    waits.clear()
    path = f"/api/bookmarks/{created.json['id']}"
    assert client.get(path, headers=auth).status_code == 200
    assert client.get("/api/bookmarks", headers=auth).status_code == 200
    assert waits == [], "reads do not wait"


def test_the_wait_is_what_keeps_a_leased_reader_coherent(
    app_factory: Callable[..., Flask], auth: dict[str, str], database_url: str
) -> None:
    """The counterpart of the coherence tests: a writer that skips the wait can be read stale."""
    writer_app, reader_app = (app_factory(FASTPATH=True, READ_LEASE_MS=1000) for _ in range(2))
    created = writer_app.test_client().post(
        "/api/bookmarks", json={"url": "https://a.example/", "title": "old"}, headers=auth
    )
    path = f"/api/bookmarks/{created.json['id']}"
    reader = reader_app.test_client()
    assert reader.get(path, headers=auth).json["title"] == "old"  # leased from now on
    with psycopg.connect(libpq_url(database_url)) as writer:  # commits, does not wait
        writer.execute("UPDATE bookmarks SET title = 'new'")
        writer.execute("UPDATE users SET data_version = data_version + 1")
    assert reader.get(path, headers=auth).json["title"] == "old", "served within its lease"
    acknowledge(reader_app)
    assert reader.get(path, headers=auth).json["title"] == "new"


# -- real requests, two app instances, a writer that shares only the database ------------------


@pytest.fixture
def instances(app: Flask, app_factory: Callable[..., Flask]) -> list[Flask]:
    """Two app instances (two workers or hosts): separate caches and checks, one database."""
    return [app, app_factory()]


def run_readers(
    instances: list[Flask],
    read: Callable[[FlaskClient], Any],
    write: Callable[[], None],
    *,
    threads_per_instance: int = 4,
) -> list[tuple[float, Any]]:
    """Readers on every instance until ``write`` returns; each read with its start time."""
    stop = threading.Event()
    seen: list[tuple[float, Any]] = []
    errors: list[BaseException] = []

    def reader(app: Flask) -> None:
        client = app.test_client()
        try:
            while not stop.is_set():
                started = time.monotonic()
                seen.append((started, read(client)))
        except BaseException as error:
            errors.append(error)

    readers = [
        threading.Thread(target=reader, args=(app,))
        for app in instances
        for _ in range(threads_per_instance)
    ]
    for thread in readers:
        thread.start()
    try:
        write()
    finally:
        stop.set()
        for thread in readers:
            thread.join(WAIT)
    assert errors == []
    return seen


def test_concurrent_reads_on_two_instances_never_predate_a_write_committed_before_them(
    instances: list[Flask], auth: dict[str, str], create: Callable[..., Any], database_url: str
) -> None:
    bookmark = create(title="0")
    path = f"/api/bookmarks/{bookmark['id']}"
    committed: list[tuple[float, int]] = []  # (when the commit had returned, title)

    def write() -> None:
        with psycopg.connect(libpq_url(database_url), autocommit=True) as writer:
            for version in range(1, 61):
                with writer.transaction():
                    writer.execute("UPDATE bookmarks SET title = %s", (str(version),))
                    writer.execute("UPDATE users SET data_version = data_version + 1")
                acknowledge(instances[0])  # as the service's writes do before they answer
                committed.append((time.monotonic(), version))
                time.sleep(0.005)

    def read(client: FlaskClient) -> int:
        response = client.get(path, headers=auth)
        assert response.status_code == 200
        return int(response.json["title"])

    seen = run_readers(instances, read, write)
    late = [
        (started, title, newest)
        for started, title in seen
        if title < (newest := max((v for t, v in committed if t < started), default=0))
    ]
    assert late == [], "a read returned a value older than a write committed before it began"
    assert len(seen) > 100
    if instances[0].config["FASTPATH"]:
        checks = [app.extensions[CHECKS_KEY] for app in instances]
        served = sum(c.requests + c.leased for c in checks)
        assert sum(c.rounds for c in checks) < served, "rounds were shared, or leases answered"
        # The proof covers the reads answered below Flask too (``cached_reads``).
        assert sum(answered_below_flask(app) for app in instances) > 0


def test_under_concurrent_load_a_revoked_token_is_refused_from_the_next_request_on(
    instances: list[Flask], auth: dict[str, str], create: Callable[..., Any], database_url: str
) -> None:
    create()
    revoked_at: list[float] = []

    def write() -> None:
        time.sleep(0.2)  # let the readers get going (and the caches warm)
        with psycopg.connect(libpq_url(database_url), autocommit=True) as admin:
            admin.execute("UPDATE api_tokens SET revoked_at = now()")
        acknowledge(instances[0])  # as `users revoke` does before it returns
        revoked_at.append(time.monotonic())
        time.sleep(0.2)

    def read(client: FlaskClient) -> int:
        return client.get("/api/bookmarks", headers=auth).status_code

    seen = run_readers(instances, read, write)
    assert {status for _, status in seen} <= {200, 401}
    assert any(status == 200 for _, status in seen)
    after = [status for started, status in seen if started > revoked_at[0]]
    assert after, "some requests started after the revocation"
    assert set(after) == {401}


def test_connections_killed_by_the_server_under_concurrent_load_are_never_an_error(
    instances: list[Flask], auth: dict[str, str], create: Callable[..., Any], database_url: str
) -> None:
    """No ping on every checkout (see the README): the shared check recovers from dead ones."""
    bookmark = create()
    path = f"/api/bookmarks/{bookmark['id']}"
    killed: list[int] = []

    def write() -> None:
        with psycopg.connect(libpq_url(database_url), autocommit=True) as admin:
            for _ in range(5):
                # One outage at a time: a request recovers from one (it retries once on a fresh
                # connection); rounds 0.1 s apart could kill the fresh one too on a loaded
                # machine, where a connection takes that long to open.
                time.sleep(0.3)
                rows = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchall()
                killed.append(len(rows))
            time.sleep(0.1)

    seen = run_readers(instances, lambda client: client.get(path, headers=auth).status_code, write)
    assert min(killed) >= 1, "every round killed the app's connections"
    assert {status for _, status in seen} == {200}
