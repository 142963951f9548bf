"""``SearchIndex``: ranked full-text search in PostgreSQL.

The index is the GIN-indexed ``bookmarks.search_vector`` column that PostgreSQL computes on every
write, so every worker and every host searches the same, always current index; there is nothing to
rebuild or warm in the app. Queries use ``websearch_to_tsquery``, which accepts what people type
(quoted phrases, ``or``, ``-word``) and never raises a syntax error on user input.
"""

from __future__ import annotations

from sqlalchemy import Float, cast, func, literal, select
from sqlalchemy.dialects.postgresql import REGCONFIG
from sqlalchemy.orm import Session

from bookmarks.models import Bookmark
from bookmarks.repository import empty_page, version_of

TEXT_SEARCH_CONFIG = "english"
# ts_rank_cd normalisation 32 maps a rank to rank / (rank + 1): comparable scores in [0, 1).
RANK_NORMALIZATION = 32


class SearchIndex:
    """Ranked search over one user's bookmarks."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def search(
        self, user_id: int, text: str, *, offset: int, limit: int, tag: str | None = None
    ) -> tuple[list[tuple[Bookmark, float]], int, int | None]:
        """Return (bookmark, rank) best first, how many match in total, and the user's version.

        All three from one statement, so one snapshot (see ``BookmarkRepository.page``).
        """
        query = func.websearch_to_tsquery(literal(TEXT_SEARCH_CONFIG, type_=REGCONFIG), text)
        where = [Bookmark.user_id == user_id, Bookmark.search_vector.bool_op("@@")(query)]
        if tag:
            where.append(Bookmark.tags.contains([tag]))
        rank = cast(func.ts_rank_cd(Bookmark.search_vector, query, RANK_NORMALIZATION), Float)
        # Ranking must visit every match anyway, so the total rides along as a window count
        # instead of a second pass over the index.
        rows = self._session.execute(
            select(
                Bookmark,
                rank.label("rank"),
                func.count().over().label("total"),
                version_of(user_id).label("data_version"),
            )
            .where(*where)
            .order_by(rank.desc(), Bookmark.updated_at.desc(), Bookmark.id.desc())
            .offset(offset)
            .limit(limit)
        ).all()
        if not rows:  # past the last page (or no match): count without ranking
            return empty_page(self._session, user_id, where, offset)
        hits = [(row.Bookmark, float(row.rank)) for row in rows]
        return hits, rows[0].total, rows[0].data_version
