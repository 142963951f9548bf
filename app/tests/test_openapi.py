"""The OpenAPI document matches the real behaviour: schemathesis fuzzes every operation with it.

Every built-in check runs, including "a schema-valid request is accepted" and "a schema-violating
request is rejected", so a limit that is enforced but not published (or the reverse) fails here.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from bookmarks.config import MAX_PAGE_SIZE

# JSON Schema has no "url" format; teach the generator what the API documents: absolute http(s).
schemathesis.openapi.format(
    "url",
    st.builds(
        "{}://{}.{}/{}".format,
        st.sampled_from(["http", "https"]),
        st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
        st.sampled_from(["example", "org", "dev"]),
        st.from_regex(r"[A-Za-z0-9._~/-]{0,40}", fullmatch=True),
    ),
)


@schemathesis.hook
def filter_query(context: Any, query: dict[str, Any] | None) -> bool:
    """Skip generated queries that cannot survive URL encoding.

    A query string has no empty names, objects or empty lists: requests drops them, so such a
    "schema-violating" query reaches the server valid and its acceptance is no finding.
    """
    del context
    return not query or all(
        key != "" and not isinstance(value, dict) and value not in (None, [])
        for key, value in query.items()
    )


def test_document_is_served_and_describes_the_api(client: FlaskClient) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    spec = response.json
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {"/api/bookmarks", "/api/bookmarks/{bookmark_id}"}
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert spec["security"] == [{"bearerAuth": []}]
    params = {p["name"]: p for p in spec["paths"]["/api/bookmarks"]["get"]["parameters"]}
    assert params["per_page"]["schema"]["maximum"] == MAX_PAGE_SIZE
    assert params["per_page"]["schema"]["minimum"] == 1
    item = spec["paths"]["/api/bookmarks/{bookmark_id}"]
    assert set(item) >= {"get", "put", "patch", "delete"}
    assert "404" in item["get"]["responses"]
    body = spec["components"]["schemas"]["BookmarkIn"]["properties"]
    assert body["url"]["maxLength"] == 2048
    assert body["title"]["maxLength"] == 500
    assert spec["components"]["schemas"]["Error"]["required"] == ["code", "message", "status"]


@pytest.fixture
def api_schema(app: Flask) -> Any:
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_document(case: Any, auth: dict[str, str]) -> None:
    case.call_and_validate(headers=auth)
