"""/api/bookmarks: create, read, list with pagination, update, delete."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

Create = Callable[..., dict[str, Any]]


def test_create_returns_the_bookmark_and_its_location(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    response = client.post(
        "/api/bookmarks",
        json={
            "url": "https://flask.palletsprojects.com/",
            "title": "Flask",
            "tags": ["Python", "web", "python"],
        },
        headers=auth,
    )
    assert response.status_code == 201
    body = response.json
    assert response.headers["Location"] == f"/api/bookmarks/{body['id']}"
    assert body["url"] == "https://flask.palletsprojects.com/"
    assert body["title"] == "Flask"
    assert body["notes"] == ""
    assert body["tags"] == ["python", "web"]
    assert body["created_at"] == body["updated_at"]
    assert body["rank"] is None


def test_get_returns_what_was_created(
    client: FlaskClient, auth: dict[str, str], create: Create
) -> None:
    created = create("https://example.org/a", title="A", notes="n", tags=["t"])
    response = client.get(f"/api/bookmarks/{created['id']}", headers=auth)
    assert response.status_code == 200
    assert response.json == created


def test_put_replaces_every_field(
    client: FlaskClient, auth: dict[str, str], create: Create
) -> None:
    created = create("https://example.org/a", title="A", notes="n", tags=["t"])
    response = client.put(
        f"/api/bookmarks/{created['id']}", json={"url": "https://example.org/b"}, headers=auth
    )
    assert response.status_code == 200
    assert response.json["url"] == "https://example.org/b"
    assert (response.json["title"], response.json["notes"], response.json["tags"]) == ("", "", [])
    assert response.json["updated_at"] > created["updated_at"]


def test_patch_changes_only_the_given_fields(
    client: FlaskClient, auth: dict[str, str], create: Create
) -> None:
    created = create("https://example.org/a", title="A", notes="keep", tags=["t"])
    response = client.patch(f"/api/bookmarks/{created['id']}", json={"title": "B"}, headers=auth)
    assert response.status_code == 200
    assert response.json["title"] == "B"
    assert response.json["notes"] == "keep"
    assert response.json["tags"] == ["t"]
    assert response.json["created_at"] == created["created_at"]
    assert response.json["updated_at"] > created["updated_at"]


def test_delete_removes_the_bookmark(
    client: FlaskClient, auth: dict[str, str], create: Create
) -> None:
    created = create()
    response = client.delete(f"/api/bookmarks/{created['id']}", headers=auth)
    assert response.status_code == 204
    assert response.data == b""
    assert client.get(f"/api/bookmarks/{created['id']}", headers=auth).status_code == 404
    assert client.delete(f"/api/bookmarks/{created['id']}", headers=auth).status_code == 404


def test_duplicate_url_is_409(client: FlaskClient, auth: dict[str, str], create: Create) -> None:
    create("https://example.org/same")
    response = client.post("/api/bookmarks", json={"url": "https://example.org/same"}, headers=auth)
    assert response.status_code == 409
    assert response.json["errors"] == {"json": {"url": ["already bookmarked"]}}


def test_changing_url_to_an_existing_one_is_409_and_changes_nothing(
    client: FlaskClient, auth: dict[str, str], create: Create
) -> None:
    create("https://example.org/one")
    two = create("https://example.org/two")
    response = client.patch(
        f"/api/bookmarks/{two['id']}", json={"url": "https://example.org/one"}, headers=auth
    )
    assert response.status_code == 409
    assert client.get(f"/api/bookmarks/{two['id']}", headers=auth).json == two


def test_long_url_is_unique_too(client: FlaskClient, auth: dict[str, str], create: Create) -> None:
    url = "https://example.org/" + "é" * 2000  # larger than a btree entry in UTF-8
    create(url)
    assert client.post("/api/bookmarks", json={"url": url}, headers=auth).status_code == 409


def test_list_is_newest_first(client: FlaskClient, auth: dict[str, str], create: Create) -> None:
    ids = [create(f"https://example.org/{n}")["id"] for n in range(3)]
    body = client.get("/api/bookmarks", headers=auth).json
    assert [item["id"] for item in body["items"]] == ids[::-1]
    assert body["total"] == 3


def test_list_filters_by_tag(client: FlaskClient, auth: dict[str, str], create: Create) -> None:
    create("https://example.org/1", tags=["python"])
    create("https://example.org/2", tags=["rust"])
    body = client.get("/api/bookmarks?tag=Python", headers=auth).json
    assert [item["url"] for item in body["items"]] == ["https://example.org/1"]
    assert body["links"]["self"] == "/api/bookmarks?page=1&per_page=20&tag=python"


@pytest.fixture
def twenty_five(create: Create) -> list[int]:
    return [create(f"https://example.org/{n}")["id"] for n in range(25)]


def test_pagination_links_and_counts(
    client: FlaskClient, auth: dict[str, str], twenty_five: list[int]
) -> None:
    first = client.get("/api/bookmarks?per_page=10", headers=auth).json
    assert (first["page"], first["per_page"], first["total"], first["pages"]) == (1, 10, 25, 3)
    assert first["links"] == {
        "self": "/api/bookmarks?page=1&per_page=10",
        "first": "/api/bookmarks?page=1&per_page=10",
        "last": "/api/bookmarks?page=3&per_page=10",
        "next": "/api/bookmarks?page=2&per_page=10",
        "prev": None,
    }
    last = client.get(first["links"]["last"], headers=auth).json
    assert len(last["items"]) == 5
    assert last["links"]["next"] is None
    assert last["links"]["prev"] == "/api/bookmarks?page=2&per_page=10"
    seen = []
    link = first["links"]["self"]
    while link:
        page = client.get(link, headers=auth).json
        seen += [item["id"] for item in page["items"]]
        link = page["links"]["next"]
    assert sorted(seen) == sorted(twenty_five)


def test_page_past_the_end_is_empty_and_links_back(
    client: FlaskClient, auth: dict[str, str], twenty_five: list[int]
) -> None:
    body = client.get("/api/bookmarks?per_page=10&page=9", headers=auth).json
    assert body["items"] == []
    assert body["links"]["prev"] == "/api/bookmarks?page=3&per_page=10"
    assert body["links"]["next"] is None


def test_empty_collection_has_one_page(client: FlaskClient, auth: dict[str, str]) -> None:
    body = client.get("/api/bookmarks", headers=auth).json
    assert (body["items"], body["total"], body["pages"]) == ([], 0, 1)


def test_per_page_defaults_to_page_size(
    app_factory: Callable[..., Flask], auth: dict[str, str]
) -> None:
    small_pages = app_factory(PAGE_SIZE=7)
    assert small_pages.test_client().get("/api/bookmarks", headers=auth).json["per_page"] == 7


def test_per_page_at_the_cap_is_accepted(
    client: FlaskClient, auth: dict[str, str], twenty_five: list[int]
) -> None:
    body = client.get("/api/bookmarks?per_page=100", headers=auth).json
    assert (body["per_page"], len(body["items"])) == (100, 25)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("per_page=101", "per_page"),
        ("per_page=10000", "per_page"),
        ("per_page=0", "per_page"),
        ("per_page=-1", "per_page"),
        ("per_page=ten", "per_page"),
        ("page=0", "page"),
        ("page=99999999999999999999", "page"),
        ("q=", "q"),
        ("tag=has%20space", "tag"),
    ],
)
def test_bad_query_parameters_are_422_naming_the_parameter(
    client: FlaskClient, auth: dict[str, str], query: str, field: str
) -> None:
    response = client.get(f"/api/bookmarks?{query}", headers=auth)
    assert response.status_code == 422
    assert field in response.json["errors"]["query"]
