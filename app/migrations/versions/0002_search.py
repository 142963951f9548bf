"""Full-text search: a ranked, GIN-indexed tsvector computed by PostgreSQL.

Revision ID: 0002_search
Revises: 0001_core
Create Date: 2026-11-22

The document is built by an IMMUTABLE SQL function because a generated column may only call
immutable functions and ``array_to_string`` is merely stable. Url words are split on punctuation
first (the parser would keep a url as one token). Everything in it is schema-qualified,
so a caller's ``search_path`` cannot change what gets indexed. Downgrading drops the column, the
index and the function; upgrading again recomputes the column from the rows, so nothing is lost.
"""

from alembic import op

revision = "0002_search"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION bookmarks_search_document(title text, tags text[], notes text, url text)
        RETURNS tsvector
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$
            SELECT pg_catalog.setweight(
                       pg_catalog.to_tsvector('pg_catalog.english', coalesce(title, '')), 'A')
                || pg_catalog.setweight(
                       pg_catalog.to_tsvector('pg_catalog.english',
                                              coalesce(pg_catalog.array_to_string(tags, ' '), '')),
                       'B')
                || pg_catalog.setweight(
                       pg_catalog.to_tsvector('pg_catalog.english', coalesce(notes, '')), 'C')
                || pg_catalog.setweight(
                       pg_catalog.to_tsvector('pg_catalog.english',
                           pg_catalog.regexp_replace(coalesce(url, ''), '[^[:alnum:]]+', ' ', 'g')),
                       'D')
        $$
        """
    )
    op.execute(
        """
        ALTER TABLE bookmarks ADD COLUMN search_vector tsvector NOT NULL
        GENERATED ALWAYS AS (bookmarks_search_document(title, tags, notes, url)) STORED
        """
    )
    op.create_index(
        "ix_bookmarks_search_vector", "bookmarks", ["search_vector"], postgresql_using="gin"
    )


def downgrade() -> None:
    op.drop_index("ix_bookmarks_search_vector", table_name="bookmarks")
    op.drop_column("bookmarks", "search_vector")
    op.execute("DROP FUNCTION bookmarks_search_document(text, text[], text, text)")
