"""Database tables, as the migrations leave them at head.

The schema is created only by Alembic (``app/migrations``); these classes describe it for queries,
and a test compares them with the migrated database so the two cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column, relationship

from bookmarks.extensions import db

URL_MAX_LENGTH = 2048
TITLE_MAX_LENGTH = 500
NOTES_MAX_LENGTH = 10_000
TAG_MAX_LENGTH = 64
TAGS_MAX_COUNT = 32
USER_NAME_MAX_LENGTH = 64

# The document the full-text index is built from: title weighs most, then tags, notes, url words.
# It is a SQL function created by migration 0002 (a generated column may only call IMMUTABLE
# functions, and array_to_string is not marked so), called here by name so model and migration
# agree.
SEARCH_DOCUMENT_SQL = "bookmarks_search_document(title, tags, notes, url)"
# The name of the unique index that keeps one bookmark per url and user; repository.py maps a
# violation of it to 409 Conflict.
UNIQUE_URL_INDEX = "uq_bookmarks_user_id_url"


class User(db.Model):
    """An API user; ``data_version`` is the per-user cache generation (see ``service.py``)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(USER_NAME_MAX_LENGTH), unique=True)
    # Bumped in the same transaction as every write to this user's bookmarks.
    data_version: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class ApiToken(db.Model):
    """A bearer token, stored as its SHA-256 only: a leaked database does not leak credentials.

    Tokens carry 256 random bits, so a fast hash is enough (no password-style stretching needed),
    and looking one up is a single index probe on ``token_hash``.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the token, enough for an operator to tell tokens apart when revoking.
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship(back_populates="tokens")


class Bookmark(db.Model):
    """One saved url of one user."""

    __tablename__ = "bookmarks"
    __table_args__ = (
        # md5(url): a 2048-character url may not fit a btree entry, its digest always does.
        Index(UNIQUE_URL_INDEX, "user_id", func.md5(text("url")), unique=True),
        Index("ix_bookmarks_user_id_created_at", "user_id", "created_at", "id"),
        Index("ix_bookmarks_tags", "tags", postgresql_using="gin"),
        Index("ix_bookmarks_search_vector", "search_vector", postgresql_using="gin"),
        CheckConstraint(f"char_length(url) <= {URL_MAX_LENGTH}", name="url_length"),
        CheckConstraint(f"char_length(title) <= {TITLE_MAX_LENGTH}", name="title_length"),
        CheckConstraint(f"char_length(notes) <= {NOTES_MAX_LENGTH}", name="notes_length"),
        CheckConstraint(
            f"coalesce(array_length(tags, 1), 0) <= {TAGS_MAX_COUNT}", name="tags_count"
        ),
    )
    # Fetch server-side defaults (created_at, updated_at) by RETURNING in the INSERT/UPDATE itself.
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 (SQLAlchemy reads a plain dict)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text, server_default=text("''"))
    notes: Mapped[str] = mapped_column(Text, server_default=text("''"))
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    search_vector: Mapped[str] = mapped_column(
        TSVECTOR, Computed(SEARCH_DOCUMENT_SQL, persisted=True), deferred=True
    )
