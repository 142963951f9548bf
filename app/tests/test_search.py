"""SearchIndex: PostgreSQL full-text search, ranked, scoped to the caller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bookmarks.extensions import db
from bookmarks.search import SearchIndex

Create = Callable[..., dict[str, Any]]


def search(client: FlaskClient, auth: dict[str, str], query: str, **params: Any) -> dict[str, Any]:
    response = client.get("/api/bookmarks", query_string={"q": query, **params}, headers=auth)
    assert response.status_code == 200, response.json
    return response.json


def urls(body: dict[str, Any]) -> list[str]:
    return [item["url"] for item in body["items"]]


def test_title_match_ranks_above_tags_above_notes_above_url(
    client: FlaskClient, auth: dict[str, str], create: Create
) -> None:
    create("https://a.example/postgres", title="unrelated")
    create("https://b.example/", notes="we tuned postgres today")
    create("https://c.example/", title="Postgres internals")
    create("https://d.example/", tags=["postgres"])
    create("https://e.example/", title="nothing to see")
    body = search(client, auth, "postgres")
    assert urls(body) == [
        "https://c.example/",
        "https://d.example/",
        "https://b.example/",
        "https://a.example/postgres",
    ]
    ranks = [item["rank"] for item in body["items"]]
    assert ranks == sorted(ranks, reverse=True)
    assert all(0 < rank < 1 for rank in ranks)
    assert body["total"] == 4


def test_more_matching_terms_rank_higher(
    client: FlaskClient, auth: dict[str, str], create: Create
) -> None:
    create("https://one.example/", title="flask")
    create("https://both.example/", title="flask gunicorn deployment")
    assert urls(search(client, auth, "flask gunicorn")) == ["https://both.example/"]
    assert urls(search(client, auth, "flask or gunicorn"))[0] == "https://both.example/"


def test_stemming_matches_word_forms(
    client: FlaskClient, auth: dict[str, str], create: Create
) -> None:
    create("https://run.example/", title="Running services in production")
    assert urls(search(client, auth, "run")) == ["https://run.example/"]
    assert urls(search(client, auth, "serviced")) == ["https://run.example/"]


def test_web_search_syntax(client: FlaskClient, auth: dict[str, str], create: Create) -> None:
    create("https://1.example/", title="connection pool tuning")
    create("https://2.example/", title="pool of connection strings")
    assert urls(search(client, auth, '"connection pool"')) == ["https://1.example/"]
    assert urls(search(client, auth, "pool -strings")) == ["https://1.example/"]


@pytest.mark.parametrize(
    "query", ["the", "!!!", "a & | ! ( ) :* <->", "'", '"unclosed', "ä ö ü 中文"]
)
def test_odd_queries_return_results_not_errors(
    client: FlaskClient, auth: dict[str, str], create: Create, query: str
) -> None:
    create("https://x.example/", title="the quick fox")
    body = search(client, auth, query)
    assert body["total"] == len(body["items"])


def test_search_combines_with_tag_and_keeps_both_in_links(
    client: FlaskClient, auth: dict[str, str], create: Create
) -> None:
    create("https://py.example/", title="testing tools", tags=["python"])
    create("https://rs.example/", title="testing tools", tags=["rust"])
    body = search(client, auth, "testing", tag="rust", per_page=5)
    assert urls(body) == ["https://rs.example/"]
    assert body["links"]["self"] == "/api/bookmarks?page=1&per_page=5&q=testing&tag=rust"


def test_search_pages(client: FlaskClient, auth: dict[str, str], create: Create) -> None:
    for n in range(7):
        create(f"https://{n}.example/", title=f"gunicorn note {n}")
    first = search(client, auth, "gunicorn", per_page=3)
    assert (first["total"], first["pages"], len(first["items"])) == (7, 3, 3)
    last = client.get(first["links"]["last"], headers=auth).json
    assert len(last["items"]) == 1
    everything = (
        urls(first) + urls(client.get(first["links"]["next"], headers=auth).json) + urls(last)
    )
    assert len(set(everything)) == 7


def test_index_follows_updates_immediately(
    client: FlaskClient, auth: dict[str, str], create: Create
) -> None:
    bookmark = create("https://x.example/", title="alpha")
    assert search(client, auth, "alpha")["total"] == 1
    client.patch(f"/api/bookmarks/{bookmark['id']}", json={"title": "beta"}, headers=auth)
    assert search(client, auth, "alpha")["total"] == 0
    assert search(client, auth, "beta")["total"] == 1


def test_search_index_directly(app: Flask, create: Create) -> None:
    create("https://x.example/", title="direct hit")
    with app.app_context():
        hits, total, _ = SearchIndex(db.session).search(1, "direct", offset=0, limit=10)
    assert total == 1
    bookmark, rank = hits[0]
    assert bookmark.url == "https://x.example/"
    assert 0 < rank < 1
