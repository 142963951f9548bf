"""Repositories: user-scoped queries, token lookup, versions, unique urls, the commit wait."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bookmarks import repository
from bookmarks.auth import hash_token
from bookmarks.errors import ConflictError
from bookmarks.extensions import db
from bookmarks.fastpath import connections
from bookmarks.fastpath.connections import PrincipalQuery
from bookmarks.ops import check_database
from bookmarks.repository import (
    MAX_ID,
    BookmarkRepository,
    UserRepository,
    lease_wait,
    lookup_principal,
    transaction,
)
from conftest import libpq_url


@pytest.fixture
def session(app: Flask) -> Iterator[Session]:
    with app.app_context():
        yield db.session
        db.session.rollback()


def test_token_resolves_to_its_user_and_version(session: Session) -> None:
    users = UserRepository(session)
    user = users.create("dora")
    issued = users.issue_token(user)
    principal = users.principal_for_token(issued.token)
    assert principal is not None
    assert (principal.user_id, principal.name) == (user.id, "dora")
    BookmarkRepository(session).add(user.id, {"url": "https://dora.example/"})
    assert users.principal_for_token(issued.token).data_version != principal.data_version


def test_unknown_and_revoked_tokens_resolve_to_nobody(session: Session) -> None:
    users = UserRepository(session)
    user = users.create("erin")
    keep, revoke = users.issue_token(user), users.issue_token(user)
    assert users.principal_for_token("bm_" + "x" * 43) is None
    assert users.revoke_tokens(user, prefix=revoke.prefix) == 1
    assert users.principal_for_token(revoke.token) is None
    assert users.principal_for_token(keep.token) is not None
    assert users.revoke_tokens(user) == 1
    assert users.principal_for_token(keep.token) is None


def test_bookmarks_are_scoped_to_their_user(session: Session) -> None:
    users, repo = UserRepository(session), BookmarkRepository(session)
    alice, bob = users.create("alice"), users.create("bob")
    mine = repo.add(alice.id, {"url": "https://a.example/"})
    assert repo.get(alice.id, mine.id) is mine
    assert repo.get(bob.id, mine.id) is None
    assert repo.page(bob.id, offset=0, limit=10)[:2] == ([], 0)


@pytest.mark.parametrize("bookmark_id", [0, -1, MAX_ID + 1])
def test_impossible_ids_are_not_queried(session: Session, bookmark_id: int) -> None:
    assert BookmarkRepository(session).get(1, bookmark_id) is None


def test_same_url_twice_is_a_conflict(session: Session) -> None:
    users, repo = UserRepository(session), BookmarkRepository(session)
    user = users.create("fred")
    repo.add(user.id, {"url": "https://dup.example/"})
    with pytest.raises(ConflictError):
        repo.add(user.id, {"url": "https://dup.example/"})


def test_only_editable_fields_are_written(session: Session) -> None:
    users, repo = UserRepository(session), BookmarkRepository(session)
    user = users.create("gina")
    with pytest.raises(ValueError, match="not editable: user_id"):
        repo.add(user.id, {"url": "https://x.example/", "user_id": 99})


def test_transaction_commits_atomically_and_gives_back_an_autocommit_connection(
    app: Flask,
) -> None:
    def create_user_with_a_duplicate() -> None:
        with transaction(db.session) as session:
            user = UserRepository(session).create("ivan")
            BookmarkRepository(session).add(user.id, {"url": "https://x.example/"})
            BookmarkRepository(session).add(user.id, {"url": "https://x.example/"})

    with app.app_context():
        with pytest.raises(ConflictError):
            create_user_with_a_duplicate()
        assert UserRepository(db.session).get_by_name("ivan") is None, "rolled back as one"
        raw = db.session.connection().connection.dbapi_connection
        assert raw.autocommit is True, "the pool restores autocommit after a write"


def terminate_other_connections(database_url: str) -> int:
    """Close every server connection to the test database but this one, as a restart would."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as admin:
        return len(
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        )


def test_lookup_principal_reads_what_is_committed(
    app: Flask, make_user: Callable[[str], str]
) -> None:
    token = make_user("fay")
    with app.app_context():
        found = lookup_principal(db.engine, token)
        assert found is not None
        assert found.name == "fay"
        assert lookup_principal(db.engine, "bm_" + "x" * 43) is None
        users = UserRepository(db.session)
        with transaction(db.session):
            BookmarkRepository(db.session).add(found.user_id, {"url": "https://fay.example/"})
            # Not committed yet: another connection (another request, worker or host) sees the
            # old version, never a value that may still roll back.
            assert lookup_principal(db.engine, token).data_version == found.data_version
        assert lookup_principal(db.engine, token).data_version != found.data_version
        with transaction(db.session):
            users.revoke_tokens(users.get_by_name("fay"))
            assert lookup_principal(db.engine, token) is not None
        assert lookup_principal(db.engine, token) is None


def test_requests_survive_connections_closed_by_the_database(
    app: Flask, client: FlaskClient, auth: dict[str, str], database_url: str
) -> None:
    # Not idle long enough to be pinged: the token query meets the dead connections and recovers.
    assert app.config["DB_PING_IDLE_SECONDS"] >= 10
    created = client.post("/api/bookmarks", json={"url": "https://a.example/"}, headers=auth)
    assert client.get("/api/bookmarks", headers=auth).json["total"] == 1
    assert terminate_other_connections(database_url) >= 1
    assert client.get(f"/api/bookmarks/{created.json['id']}", headers=auth).status_code == 200
    assert terminate_other_connections(database_url) >= 1
    response = client.post("/api/bookmarks", json={"url": "https://b.example/"}, headers=auth)
    assert response.status_code == 201
    assert client.get("/api/bookmarks", headers=auth).json["total"] == 2


def test_idle_connections_are_pinged_and_replaced(
    app_factory: Callable[..., Flask], database_url: str
) -> None:
    app = app_factory(DB_PING_IDLE_SECONDS=0)  # every connection counts as idle
    with app.app_context():
        assert check_database(db.engine, 1000) is None
        assert terminate_other_connections(database_url) >= 1
        # The check runs no token query: only the ping finds the dead connection.
        assert check_database(db.engine, 1000) is None


def test_without_the_idle_ping_a_dead_connection_fails_one_check(
    app_factory: Callable[..., Flask], database_url: str
) -> None:
    """The counterpart of the test above: proof that the ping is what replaced the connection."""
    app = app_factory(DB_PING_IDLE_SECONDS=3600)
    with app.app_context():
        assert check_database(db.engine, 1000) is None
        assert terminate_other_connections(database_url) >= 1
        assert check_database(db.engine, 1000) is not None
        assert check_database(db.engine, 1000) is None  # SQLAlchemy dropped the stale pool


def test_principal_query_keeps_one_connection_and_survives_the_server_killing_it(
    app: Flask, make_user: Callable[[str], str], database_url: str
) -> None:
    hashes = [hash_token(make_user(name)) for name in ("gus", "hal")]
    with app.app_context():
        query = PrincipalQuery(db.engine)
        assert {p.name for p in query(hashes).values()} == {"gus", "hal"}
        assert [p.name for p in query(hashes[:1]).values()] == ["gus"]
        assert db.engine.pool.checkedout() == 1, "one connection, kept between calls"
        assert terminate_other_connections(database_url) >= 1
        assert [p.name for p in query(hashes[1:]).values()] == ["hal"], "no error"
        assert query([hash_token("bm_" + "x" * 43)]) == {}
        db.engine.dispose()
        assert db.engine.pool.checkedout() == 0, "disposing the engine releases it"


def test_principal_query_hands_its_connection_back_to_the_pool_now_and_then(
    app: Flask, make_user: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked in and out again, so the pool's recycling, invalidation and idle ping apply."""
    token_hash = hash_token(make_user("ida"))
    with app.app_context():
        checkouts: list[object] = []
        event.listen(db.engine, "checkout", lambda *args: checkouts.append(args[1]))
        query = PrincipalQuery(db.engine)
        for _ in range(3):
            assert [p.name for p in query([token_hash]).values()] == ["ida"]
        assert len(checkouts) == 1, "kept for HOLD_SECONDS"
        monkeypatch.setattr(connections, "HOLD_SECONDS", 0.0)
        query.release()
        for _ in range(3):
            assert [p.name for p in query([token_hash]).values()] == ["ida"]
        assert len(checkouts) == 4, "handed back and taken again on every call"
        assert db.engine.pool.checkedout() == 1
        query.release()
        assert db.engine.pool.checkedout() == 0


def test_a_page_and_its_total_come_from_one_statement(session: Session) -> None:
    user = UserRepository(session).create("gil")
    repo = BookmarkRepository(session)
    for n in range(3):
        repo.add(user.id, {"url": f"https://{n}.example/", "tags": ["t"]})
    statements: list[str] = []

    def note(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        rows, total, _ = repo.page(user.id, offset=1, limit=1, tag="t")
        assert (len(rows), total) == (1, 3)
        assert len(statements) == 1
        assert "count(*) OVER ()" in statements[0]
        statements.clear()
        assert repo.page(user.id, offset=5, limit=1)[:2] == ([], 3), "past the end, counted"
    finally:
        event.remove(db.engine, "before_cursor_execute", note)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The commit waits (``time.sleep`` recorded instead of slept)."""
    recorded: list[float] = []
    monkeypatch.setattr(repository.time, "sleep", recorded.append)
    return recorded


def test_every_commit_of_a_session_waits_out_the_lease_once(
    app_factory: Callable[..., Flask], waits: list[float]
) -> None:
    app = app_factory(FASTPATH=True, READ_LEASE_MS=50)
    with app.app_context():
        UserRepository(db.session).create("hal")
        db.session.commit()  # a plain commit, as a later module might write one
        assert waits == [lease_wait(0.05)]
        with transaction(db.session) as session:
            UserRepository(session).create("ida")
        assert waits == [lease_wait(0.05)] * 2
        with pytest.raises(IntegrityError), transaction(db.session) as session:
            session.execute(text("INSERT INTO users (name) VALUES ('hal')"))
        UserRepository(db.session).get_by_name("hal")  # a read
        db.session.remove()
        assert waits == [lease_wait(0.05)] * 2, "a rollback or a read waits for nothing"


def test_the_cli_revocation_waits_through_the_same_commit(
    app_factory: Callable[..., Flask], waits: list[float]
) -> None:
    app = app_factory(FASTPATH=True, READ_LEASE_MS=50)
    runner = app.test_cli_runner()
    assert runner.invoke(args=["users", "create", "kim"]).exit_code == 0
    waits.clear()
    assert runner.invoke(args=["users", "revoke", "kim"]).exit_code == 0
    assert waits == [lease_wait(0.05)]
