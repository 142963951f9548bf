"""Data access: every SQL statement the service runs, scoped to one user.

Each query takes ``user_id`` and filters on it, so per-user isolation is not something a caller can
forget. Transactions belong to the caller (``service.py`` and ``cli.py``, through ``transaction``):
the repository flushes but never commits. The database itself gives a user a new ``data_version``
whenever their bookmarks or tokens change (migration ``0003``), in the writing transaction.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from sqlalchemy import ARRAY, Engine, String, any_, bindparam, event, func, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, InvalidatePoolError
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.pool import ConnectionPoolEntry

from bookmarks.auth import Principal, display_prefix, generate_token, hash_token
from bookmarks.errors import ConflictError
from bookmarks.models import UNIQUE_URL_INDEX, ApiToken, Bookmark, User

# PostgreSQL's bigint range: an id outside it cannot exist, and sending it would raise an error
# from the driver instead of a clean 404.
MAX_ID = 2**63 - 1
EDITABLE_FIELDS = frozenset({"url", "title", "notes", "tags"})
T = TypeVar("T")


# Built once: constructing a select costs more than running it from psycopg's prepared-statement
# cache, and this one runs on every authenticated request.
_PRINCIPAL_BY_TOKEN_HASH = (
    select(User.id, User.name, User.data_version)
    .join(ApiToken, ApiToken.user_id == User.id)
    .where(ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None))
)
# The per-request check (``lookup_principals``): the same join for one or several token hashes at
# once, so concurrent requests of a worker can share one round trip (``fastpath.leases``).
PRINCIPALS_BY_TOKEN_HASHES = (
    select(ApiToken.token_hash, User.id, User.name, User.data_version)
    .join(ApiToken, ApiToken.user_id == User.id)
    .where(
        ApiToken.token_hash == any_(bindparam("token_hashes", type_=ARRAY(String))),
        ApiToken.revoked_at.is_(None),
    )
)
# A writer waits out a lease of L seconds for L * (1 + DRIFT) + SLACK seconds: 1 % is twenty
# times the largest rate error NTP lets a clock have (500 ppm), and SLACK covers the clock's
# resolution and the moments between reading it and acting on it.
DRIFT = 0.01
SLACK = 0.001


# Where the pool notes when a connection was last given back (see ``ping_idle_connections``).
_IDLE_SINCE = "bookmarks_idle_since"
# The read lease of each app's engine (``wait_out_leases_after_commits``), and where a session
# notes the engines its transaction wrote through.
_READ_LEASES: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()
_ENGINES_USED = "bookmarks_engines_used"
_COMMITTED_ON = "bookmarks_committed_on"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly issued token: the only moment the clear text exists."""

    user_id: int
    token: str
    prefix: str


@contextmanager
def transaction(session: Session) -> Iterator[Session]:
    """Run the block in one READ COMMITTED transaction: commit on success, roll back on error.

    The engine runs in autocommit mode for cheap reads (see ``BaseConfig.engine_options``), so a
    write must ask for a transaction explicitly. The session first gives back the autocommit
    connection it may hold (no round trip), then checks one out with the isolation level set for
    this transaction only; the pool restores autocommit when it comes back.

    Its first statement is a ping, retried once on a fresh connection if the first one was dead
    (the database restarted, or an admin killed it): the failure also drops every older pooled
    connection. A request answered from a read lease has not run the token query that would have
    found out first, and a write already waits out the leases, so a round trip here costs little.
    """
    session.close()

    def begin() -> None:
        connection = session.connection(execution_options={"isolation_level": "READ COMMITTED"})
        connection.exec_driver_sql("SELECT 1")

    once_more_if_disconnected(session, begin)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def lease_wait(lease: float) -> float:
    """How long a writer waits after its commit, so every lease taken before it has ended."""
    return lease * (1 + DRIFT) + SLACK if lease > 0 else 0.0


def wait_out_leases(lease: float) -> None:
    """Call after a commit and before acknowledging it (``lease``: the readers' lease, seconds)."""
    if lease > 0:
        time.sleep(lease_wait(lease))


def wait_out_leases_after_commits(engine: Engine, lease: float) -> None:
    """Make every commit of a session on ``engine`` wait out the readers' ``lease`` (seconds).

    The one place where writes wait (``fastpath.leases``: read leases): a commit through any session
    (``transaction``, the CLI, a test's ``db.session.commit()``) returns only once no worker
    anywhere can still answer from a check that predates it. The wait comes after the session
    has given its connection back, so a waiting writer holds no connection.
    """
    _READ_LEASES[engine] = lease


@event.listens_for(Session, "after_begin")
def _note_engine(session: Session, transaction: SessionTransaction, connection: Any) -> None:
    del transaction
    session.info.setdefault(_ENGINES_USED, set()).add(connection.engine)


@event.listens_for(Session, "after_commit")
def _note_commit(session: Session) -> None:
    session.info[_COMMITTED_ON] = session.info.pop(_ENGINES_USED, set())


@event.listens_for(Session, "after_transaction_end")
def _wait_after_commit(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return  # a savepoint or subtransaction: the outermost one commits
    session.info.pop(_ENGINES_USED, None)  # a transaction that did not commit waits for nothing
    committed = session.info.pop(_COMMITTED_ON, ())
    lease = max((_READ_LEASES.get(engine, 0.0) for engine in committed), default=0.0)
    wait_out_leases(lease)


def lookup_principal(engine: Engine, token: str) -> Principal | None:
    """Resolve one token to its user and current ``data_version`` (see ``lookup_principals``)."""
    token_hash = hash_token(token)
    return lookup_principals(engine, (token_hash,)).get(token_hash)


def lookup_principals(engine: Engine, token_hashes: Collection[str]) -> dict[str, Principal]:
    """Resolve token hashes to their users and current ``data_version``s: one query, no session.

    The check that starts every API request on the plain path (the fast path shares it between
    concurrent requests and leases it, ``fastpath.leases``). It reads committed data only (the
    pool's connections autocommit), so a revocation or a write committed anywhere before the query
    starts is seen by it. Unknown and revoked tokens are simply absent from the result. A
    connection found dead is replaced and the query runs once more (``principal_rows``).
    """
    return principals_of(principal_rows(engine, {"token_hashes": list(token_hashes)}))


def principals_of(rows: Sequence[Any]) -> dict[str, Principal]:
    """Token hash -> principal, from rows of ``PRINCIPALS_BY_TOKEN_HASHES``."""
    return {row[0]: Principal(user_id=row[1], name=row[2], data_version=row[3]) for row in rows}


def principal_rows(engine: Engine, params: dict[str, list[str]]) -> Sequence[Any]:
    """Rows of ``PRINCIPALS_BY_TOKEN_HASHES``; once more on a fresh connection after a dead one."""
    for attempt in (1, 2):
        try:
            with engine.connect() as connection:
                return connection.execute(PRINCIPALS_BY_TOKEN_HASHES, params).all()
        except DBAPIError as error:
            if attempt == 2 or not error.connection_invalidated:
                raise
    return ()  # not reached: the second attempt returns or raises


def once_more_if_disconnected(session: Session, read: Callable[[], T]) -> T:
    """Run ``read``; if its connection turns out dead, run it once more on a fresh one.

    For reads only (running one twice changes nothing). SQLAlchemy's optimistic disconnect
    handling: the failed statement invalidates the connection and every older pooled one, and
    the retry checks out a new one.
    """
    try:
        return read()
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
        session.rollback()
    return read()


def ping_idle_connections(engine: Engine, idle_seconds: float) -> None:
    """Ping a pooled connection on checkout only if it sat unused for ``idle_seconds`` or more.

    ``pool_pre_ping`` pings on every checkout: one extra round trip per request, as much as the
    token query itself. A connection used a moment ago is known to be alive, and in an API request
    the token query (``lookup_principals``, the fast path's ``PrincipalQuery``) proves it anyway
    and recovers from a dead one; a connection that has been idle longer (after a quiet spell,
    for the CLI) may have been closed by a database restart and is pinged first. A failed ping
    invalidates every pooled connection from before it, and the pool connects afresh
    (SQLAlchemy's pessimistic disconnect handling through its documented ``checkout`` event).
    """

    @event.listens_for(engine, "checkin")
    def _note_idle(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        if dbapi_connection is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        del proxy
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except psycopg.Error as error:
            raise InvalidatePoolError("idle connection failed its ping") from error


def version_of(user_id: int) -> Any:
    """The user's ``data_version`` as a column of a data statement.

    Read in the same statement as the data, so in the same snapshot, it names exactly the state
    the data comes from (``service.VersionedCache`` stores the data under it).
    """
    return select(User.data_version).where(User.id == user_id).scalar_subquery()


def _is_unique_url_violation(error: IntegrityError) -> bool:
    diag = getattr(error.orig, "diag", None)
    return getattr(diag, "constraint_name", None) == UNIQUE_URL_INDEX


def valid_id(bookmark_id: int) -> bool:
    """Whether ``bookmark_id`` could be a row id at all (positive bigint)."""
    return 0 < bookmark_id <= MAX_ID


class UserRepository:
    """Users, their tokens and their data version."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def principal_for_token(self, token: str) -> Principal | None:
        """Resolve a token to its user and current ``data_version`` inside this session.

        Sees the session's own uncommitted changes (the CLI and tests use it); API requests use
        ``lookup_principal``, the same query without a session.
        """
        row = self._session.execute(
            _PRINCIPAL_BY_TOKEN_HASH, {"token_hash": hash_token(token)}
        ).one_or_none()
        if row is None:
            return None
        return Principal(user_id=row.id, name=row.name, data_version=row.data_version)

    def get_by_name(self, name: str) -> User | None:
        """Return the user called ``name``, if any."""
        return self._session.execute(select(User).where(User.name == name)).scalar_one_or_none()

    def create(self, name: str) -> User:
        """Add a user (the caller commits)."""
        user = User(name=name)
        self._session.add(user)
        self._session.flush()
        return user

    def issue_token(self, user: User) -> IssuedToken:
        """Store the hash of a new token for ``user`` and return the clear text once."""
        token = generate_token()
        prefix = display_prefix(token)
        self._session.add(ApiToken(user_id=user.id, token_hash=hash_token(token), prefix=prefix))
        self._session.flush()
        return IssuedToken(user_id=user.id, token=token, prefix=prefix)

    def revoke_tokens(self, user: User, prefix: str | None = None) -> int:
        """Revoke the user's active tokens (or the one with ``prefix``); return how many."""
        statement = (
            update(ApiToken)
            .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=func.now())
        )
        if prefix:
            statement = statement.where(ApiToken.prefix == prefix)
        return self._session.execute(statement).rowcount  # type: ignore[attr-defined]

    def list_with_token_counts(self) -> Sequence[Any]:
        """Rows of (name, created_at, active token count), for ``users list``."""
        active = func.count(ApiToken.id).filter(ApiToken.revoked_at.is_(None))
        return self._session.execute(
            select(User.name, User.created_at, active.label("active_tokens"))
            .outerjoin(ApiToken, ApiToken.user_id == User.id)
            .group_by(User.id)
            .order_by(User.name)
        ).all()


class BookmarkRepository:
    """Bookmarks of one user at a time."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, user_id: int, bookmark_id: int) -> Bookmark | None:
        """Return the bookmark if it exists and belongs to ``user_id``."""
        if not valid_id(bookmark_id):
            return None
        return self._session.execute(
            select(Bookmark).where(Bookmark.id == bookmark_id, Bookmark.user_id == user_id)
        ).scalar_one_or_none()

    def get_versioned(self, user_id: int, bookmark_id: int) -> tuple[int | None, Bookmark | None]:
        """``get``, and the user's ``data_version`` in the same snapshot (``None``: no user)."""
        if not valid_id(bookmark_id):
            bookmark_id = 0  # matches no row; the version is still read
        row = self._session.execute(
            select(User.data_version, Bookmark)
            .select_from(User)
            .outerjoin(Bookmark, (Bookmark.user_id == User.id) & (Bookmark.id == bookmark_id))
            .where(User.id == user_id)
        ).one_or_none()
        return (None, None) if row is None else (row.data_version, row.Bookmark)

    def page(
        self, user_id: int, *, offset: int, limit: int, tag: str | None = None
    ) -> tuple[list[Bookmark], int, int | None]:
        """Newest first, with the total count for pagination links and the user's version.

        The items, the total and the version come from one statement (a window count), so one
        snapshot: a page never disagrees with its total while writes go on. Past the last page
        there is no row to carry them, and a second statement counts (``empty_page``).
        """
        where = [Bookmark.user_id == user_id]
        if tag:
            where.append(Bookmark.tags.contains([tag]))
        rows = self._session.execute(
            select(
                Bookmark,
                func.count().over().label("total"),
                version_of(user_id).label("data_version"),
            )
            .where(*where)
            .order_by(Bookmark.created_at.desc(), Bookmark.id.desc())
            .offset(offset)
            .limit(limit)
        ).all()
        if rows:
            return [row.Bookmark for row in rows], rows[0].total, rows[0].data_version
        return empty_page(self._session, user_id, where, offset)

    def add(self, user_id: int, values: Mapping[str, Any]) -> Bookmark:
        """Insert a bookmark; a second one with the same url raises ``ConflictError``."""
        bookmark = Bookmark(user_id=user_id, **_editable(values))
        self._session.add(bookmark)
        self._flush_or_conflict()
        return bookmark

    def update(self, bookmark: Bookmark, values: Mapping[str, Any]) -> Bookmark:
        """Apply changes to a bookmark the caller already looked up for this user."""
        for name, value in _editable(values).items():
            setattr(bookmark, name, value)
        self._flush_or_conflict()
        return bookmark

    def delete(self, bookmark: Bookmark) -> None:
        """Delete a bookmark the caller already looked up for this user."""
        self._session.delete(bookmark)
        self._session.flush()

    def _flush_or_conflict(self) -> None:
        try:
            self._session.flush()
        except IntegrityError as error:
            if _is_unique_url_violation(error):
                raise ConflictError(
                    "a bookmark with this url already exists",
                    errors={"json": {"url": ["already bookmarked"]}},
                ) from None
            raise


def empty_page(
    session: Session, user_id: int, where: Sequence[Any], offset: int
) -> tuple[list[Any], int, int | None]:
    """A page that came back empty: the total, and the version if the page is still empty.

    This is a second statement, so a second snapshot: if rows reached the page in between, the
    empty page is not the state of this version, and it gets none (it is not cached).
    """
    total, version = session.execute(
        select(func.count(), version_of(user_id)).select_from(Bookmark).where(*where)
    ).one()
    return [], total, version if total <= offset else None


def _editable(values: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(values) - EDITABLE_FIELDS
    if unknown:  # schemas reject these first; this guards other callers
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    return dict(values)
