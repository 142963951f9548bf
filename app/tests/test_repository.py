"""Repositories: user-scoped queries, token lookup, version bumps, unique urls."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from bookmarks.errors import ConflictError
from bookmarks.extensions import db
from bookmarks.repository import MAX_ID, BookmarkRepository, UserRepository, transaction


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
    assert (principal.user_id, principal.name, principal.data_version) == (user.id, "dora", 0)
    assert users.bump_version(user.id) == 1
    assert users.principal_for_token(issued.token).data_version == 1


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
    assert repo.page(bob.id, offset=0, limit=10) == ([], 0)


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
