"""Request validation: bad input is a 4xx JSON error naming the problem, never a 5xx."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from bookmarks.schemas import normalize_tags

Create = Callable[..., dict[str, Any]]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({}, "url", "Missing data for required field."),
        ({"url": 42}, "url", "Not a valid string."),
        ({"url": "not a url"}, "url", "Not a valid URL"),
        ({"url": "ftp://example.org/file"}, "url", "Not a valid URL"),
        ({"url": "javascript:alert(1)"}, "url", "Not a valid URL"),
        ({"url": "https://example.org/" + "a" * 2100}, "url", "Length must be between 1 and 2048."),
        (
            {"url": "https://example.org/", "title": "t" * 501},
            "title",
            "Longer than maximum length 500.",
        ),
        (
            {"url": "https://example.org/", "notes": "n" * 10_001},
            "notes",
            "Longer than maximum length 10000.",
        ),
        (
            {"url": "https://example.org/", "title": "nul\x00byte"},
            "title",
            "must not contain NUL characters",
        ),
        ({"url": "https://example.org/", "tags": "python"}, "tags", "Not a valid list."),
        ({"url": "https://example.org/", "tags": ["a b"]}, "tags", None),
        ({"url": "https://example.org/", "tags": [""]}, "tags", None),
        (
            {"url": "https://example.org/", "tags": [f"t{n}" for n in range(33)]},
            "tags",
            "Longer than maximum length 32.",
        ),
        ({"url": "https://user:pw@example.org/"}, "url", "Not a valid URL"),
        ({"url": "https://exa mple.org/"}, "url", "Not a valid URL"),
        ({"url": "https://-bad-.example/"}, "url", "Not a valid URL"),
        ({"url": ""}, "url", "Length must be between 1 and 2048."),
        ({"url": "https://example.org/", "owner": "bob"}, "owner", "Unknown field."),
        ({"url": "https://example.org/", "id": 7}, "id", "Unknown field."),
    ],
)
def test_invalid_body_is_422_naming_the_field(
    client: FlaskClient, auth: dict[str, str], body: dict[str, Any], field: str, message: str | None
) -> None:
    response = client.post("/api/bookmarks", json=body, headers=auth)
    assert response.status_code == 422
    assert response.json["code"] == 422
    errors = response.json["errors"]["json"]
    assert field in errors
    if message:
        assert message in str(errors[field])


def test_malformed_json_is_400(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/api/bookmarks", data='{"url": ', content_type="application/json", headers=auth
    )
    assert response.status_code == 400
    assert response.json["errors"] == {"json": ["Invalid JSON body."]}


def test_json_that_is_not_an_object_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post("/api/bookmarks", json=["https://example.org/"], headers=auth)
    assert response.status_code == 422


def test_body_without_json_content_type_is_refused(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    response = client.post("/api/bookmarks", data="url=https://example.org/", headers=auth)
    assert response.status_code in {415, 422}
    assert response.is_json


def test_huge_body_is_413(client: FlaskClient, auth: dict[str, str]) -> None:
    body = '{"url": "https://example.org/", "notes": "' + "n" * 70_000 + '"}'
    response = client.post(
        "/api/bookmarks", data=body, content_type="application/json", headers=auth
    )
    assert response.status_code == 413
    assert response.json["code"] == 413


def test_empty_patch_is_422(client: FlaskClient, auth: dict[str, str], create: Create) -> None:
    bookmark = create()
    response = client.patch(f"/api/bookmarks/{bookmark['id']}", json={}, headers=auth)
    assert response.status_code == 422
    assert "give at least one of" in str(response.json["errors"])


def test_patch_cannot_null_a_field(
    client: FlaskClient, auth: dict[str, str], create: Create
) -> None:
    bookmark = create()
    response = client.patch(f"/api/bookmarks/{bookmark['id']}", json={"title": None}, headers=auth)
    assert response.status_code == 422
    assert "title" in response.json["errors"]["json"]


@pytest.mark.parametrize("bookmark_id", ["0", "9223372036854775808", "99999999999999999999999"])
def test_ids_outside_bigint_are_404_not_500(
    client: FlaskClient, auth: dict[str, str], bookmark_id: str
) -> None:
    assert client.get(f"/api/bookmarks/{bookmark_id}", headers=auth).status_code == 404
    assert client.delete(f"/api/bookmarks/{bookmark_id}", headers=auth).status_code == 404


@pytest.mark.parametrize("bookmark_id", ["abc", "-1", "1.5"])
def test_non_integer_ids_are_404(
    client: FlaskClient, auth: dict[str, str], bookmark_id: str
) -> None:
    response = client.get(f"/api/bookmarks/{bookmark_id}", headers=auth)
    assert response.status_code == 404
    assert response.is_json


@pytest.mark.parametrize("field", ["url", "title", "notes", "tags"])
def test_lone_surrogates_are_422_not_500(
    client: FlaskClient, auth: dict[str, str], field: str
) -> None:
    value = '["bad\\udc00"]' if field == "tags" else '"bad\\udc00"'
    url = "" if field == "url" else '"url": "https://example.org/", '
    body = "{" + url + f'"{field}": {value}' + "}"
    response = client.post(
        "/api/bookmarks", data=body, content_type="application/json", headers=auth
    )
    assert response.status_code == 422
    assert response.json["errors"]["json"][field] == ["must be valid Unicode text"]


def test_emoji_and_other_scripts_are_fine(client: FlaskClient, auth: dict[str, str]) -> None:
    body = {"url": "https://example.org/", "title": "😍 日本語 Ελληνικά", "tags": ["café", "😀"]}
    response = client.post("/api/bookmarks", json=body, headers=auth)
    assert response.status_code == 201
    assert response.json["title"] == body["title"]


def test_nul_in_search_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.get("/api/bookmarks?q=a%00b", headers=auth)
    assert response.status_code == 422
    assert "q" in response.json["errors"]["query"]


def test_authentication_comes_before_validation(client: FlaskClient) -> None:
    assert client.post("/api/bookmarks", json={"bad": True}).status_code == 401


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost",
        "https://example.org:8443/a/b?c=d&e=f#g",
        "http://[::1]:8000/",
        "http://192.168.0.1/x",
        "https://xn--bcher-kva.example/",
        "https://example.org/päth?q=ünïcode",
    ],
)
def test_valid_urls_are_accepted(client: FlaskClient, auth: dict[str, str], url: str) -> None:
    response = client.post("/api/bookmarks", json={"url": url}, headers=auth)
    assert response.status_code == 201, response.json
    assert response.json["url"] == url


def test_tags_are_lowercased_and_deduplicated_in_order() -> None:
    assert normalize_tags(["Web", "python", "web", "PYTHON", "flask"]) == ["web", "python", "flask"]


@pytest.mark.parametrize(
    "body",
    [
        {"url": "https://example.org/", "tags": ["abc\n"]},
        {"url": "https://example.org/\n"},
        {"url": "https://example.org/", "tags": ["ok", "two\nlines"]},
    ],
)
def test_a_trailing_newline_is_not_a_valid_tag_or_url(
    client: FlaskClient, auth: dict[str, str], body: dict[str, Any]
) -> None:
    response = client.post("/api/bookmarks", json=body, headers=auth)
    assert response.status_code == 422
    assert set(response.json["errors"]["json"]) <= {"tags", "url"}


def test_a_trailing_newline_is_not_a_valid_tag_filter(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    response = client.get("/api/bookmarks", query_string={"tag": "abc\n"}, headers=auth)
    assert response.status_code == 422
    assert "tag" in response.json["errors"]["query"]


def test_tags_are_normalized_alike_in_a_body_and_in_a_filter(
    client: FlaskClient, auth: dict[str, str], create: Create
) -> None:
    decomposed, composed = "Cafe\u0301", "caf\u00e9"
    saved = create("https://cafe.example/", tags=[decomposed, composed])
    assert saved["tags"] == [composed]
    response = client.get("/api/bookmarks", query_string={"tag": decomposed}, headers=auth)
    assert [item["url"] for item in response.json["items"]] == ["https://cafe.example/"]


@pytest.mark.parametrize(
    "tag",
    [
        "\u00a0",  # a no-break space alone: normalized (stripped) to nothing
        "\u2003\u3000",
        "\u0130" * 64,  # 64 characters given, 128 once lower-cased
    ],
)
def test_a_tag_is_checked_as_it_is_saved_after_normalization(
    client: FlaskClient, auth: dict[str, str], tag: str
) -> None:
    response = client.post(
        "/api/bookmarks", json={"url": "https://example.org/", "tags": [tag]}, headers=auth
    )
    assert response.status_code == 422
    assert set(response.json["errors"]["json"]) == {"tags"}
    response = client.get("/api/bookmarks", query_string={"tag": tag}, headers=auth)
    assert response.status_code == 422
    assert set(response.json["errors"]["query"]) == {"tag"}
