"""The fast path's database connection for the token check: held, and a prepared statement.

On the plain path every token check checks a connection out of the pool and runs the query
through SQLAlchemy. Here the checks of one worker run one round at a time
(``leases.SharedChecks``), so ``PrincipalQuery`` keeps one pooled connection for them and runs the
query as a server-side prepared statement straight on psycopg.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any

import psycopg
from sqlalchemy import Engine, bindparam, event, select
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from bookmarks.auth import Principal
from bookmarks.models import ApiToken, User
from bookmarks.repository import PRINCIPALS_BY_TOKEN_HASHES, principal_rows, principals_of

# The token check as psycopg's SQL text (no SQLAlchemy Connection in the way), and its form for a
# single hash (the usual round: binding an array costs a fifth of the query).
_PRINCIPALS_BY_TOKEN_HASHES_SQL = str(
    PRINCIPALS_BY_TOKEN_HASHES.compile(dialect=PGDialect_psycopg())
)
_PRINCIPALS_BY_TOKEN_HASH_SQL = str(
    select(ApiToken.token_hash, User.id, User.name, User.data_version)
    .join(ApiToken, ApiToken.user_id == User.id)
    .where(ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None))
    .compile(dialect=PGDialect_psycopg())
)
# How long ``PrincipalQuery`` keeps one pooled connection before handing it back for a fresh
# checkout (which applies the pool's recycling, invalidation and idle ping).
HOLD_SECONDS = 1.0


def lookup_principals_raw(engine: Engine, token_hashes: Collection[str]) -> dict[str, Principal]:
    """``repository.lookup_principals`` as a prepared statement on a pooled psycopg connection.

    For the checks a request runs on its own (``SharedChecks``' ``check_alone``). A dead
    connection is thrown away and the query runs again through SQLAlchemy, which invalidates every
    pooled connection older than it and retries once on a fresh one.
    """
    params = {"token_hashes": list(token_hashes)}
    try:
        rows = _principal_rows_raw(engine, params)
    except psycopg.Error:
        rows = principal_rows(engine, params)
    return principals_of(rows)


def _principal_rows_raw(engine: Engine, params: dict[str, list[str]]) -> Sequence[Any]:
    connection = engine.raw_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(_PRINCIPALS_BY_TOKEN_HASHES_SQL, params, prepare=True)
            return cursor.fetchall()
    except psycopg.Error:
        connection.invalidate()  # rare; whatever went wrong, never hand this one out again
        raise
    finally:
        connection.close()


class PrincipalQuery:
    """``lookup_principals`` on a pooled connection it keeps, for a caller that runs one at a time.

    ``leases.SharedChecks`` runs one round of checks at a time per worker, so one connection
    serves all its rounds. Keeping it skips the pool's checkout and checkin (with its reset and
    events) on every round. It goes back to the pool every ``HOLD_SECONDS`` and is checked out
    again, so the pool's recycling, invalidation after a disconnect and idle ping still apply to
    it; a dead one is invalidated and the round runs again through SQLAlchemy, exactly as in
    ``lookup_principals_raw``. Not thread-safe, by design.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._held: Any = None  # the pool's connection proxy
        self._cursor: Any = None
        self._until = 0.0
        event.listen(engine, "engine_disposed", lambda _engine: self.release())

    def __call__(self, token_hashes: Collection[str]) -> dict[str, Principal]:
        """Resolve token hashes as ``repository.lookup_principals`` does."""
        if len(token_hashes) == 1:
            sql, params = _PRINCIPALS_BY_TOKEN_HASH_SQL, {"token_hash": next(iter(token_hashes))}
        else:
            sql, params = _PRINCIPALS_BY_TOKEN_HASHES_SQL, {"token_hashes": list(token_hashes)}
        try:
            cursor = self._cursor if time.monotonic() < self._until else self._checkout()
            cursor.execute(sql, params, prepare=True)
            rows = cursor.fetchall()
        except psycopg.Error:
            self.release(invalidate=True)  # whatever went wrong, never use this one again
            rows = principal_rows(self._engine, {"token_hashes": list(token_hashes)})
        return principals_of(rows)

    def _checkout(self) -> Any:
        self.release()
        self._held = self._engine.raw_connection()
        self._cursor = self._held.dbapi_connection.cursor()
        self._until = time.monotonic() + HOLD_SECONDS
        return self._cursor

    def release(self, *, invalidate: bool = False) -> None:
        """Give the connection back to the pool (or throw it away); the next call takes another."""
        held, self._held, self._cursor, self._until = self._held, None, None, 0.0
        if held is None:
            return
        if invalidate:
            held.invalidate()
        held.close()
