"""CachedReads: cached single reads answered below Flask, exactly as Flask would answer them.

Each test compares an answer of the middleware with the answer the plain Flask path gives to the
same request (an app with ``FASTPATH=off``), or checks that a request the middleware must not
answer reaches Flask. Every app here has the fast path on, whatever mode the suite runs in.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from prometheus_client import REGISTRY

from bookmarks.api import ITEM_ENDPOINT
from conftest import answered_below_flask, cache_hits


def served(app: Flask) -> int:
    return answered_below_flask(app)


def requests_counted(status: str = "200") -> float:
    labels = {"method": "GET", "endpoint": ITEM_ENDPOINT, "status": status}
    return REGISTRY.get_sample_value("bookmarks_http_requests_total", labels) or 0.0


@pytest.fixture
def access_lines(only_the_json_handler: Callable[[bool], io.StringIO]) -> Callable[[], list]:
    """The access lines the JSON handler writes (the root logger routed to it alone)."""
    buffer = only_the_json_handler(True)
    return lambda: [
        line
        for line in map(json.loads, buffer.getvalue().splitlines())
        if line["logger"] == "bookmarks.access"
    ]


@pytest.fixture
def flask_only(app_factory: Callable[..., Flask]) -> Flask:
    """An instance on the plain path (the reference), so Flask answers every request."""
    return app_factory(FASTPATH=False)


@pytest.fixture
def leased(app_factory: Callable[..., Flask]) -> Flask:
    """An instance whose leases outlast any test (a slow machine must not end them midway)."""
    return app_factory(FASTPATH=True, READ_LEASE_MS=1000)


def test_a_cached_read_is_answered_below_flask_exactly_as_flask_answers_it(
    leased: Flask,
    flask_only: Flask,
    create: Callable[..., dict[str, Any]],
    auth: dict[str, str],
    access_lines: Callable[[], list],
) -> None:
    bookmark = create(title="café ☕", tags=["a", "b"])
    path = f"/api/bookmarks/{bookmark['id']}"
    headers = {**auth, "X-Request-ID": "compare-1"}
    answers = []
    for instance in (flask_only, leased):
        client = instance.test_client()
        client.get(path, headers=auth)  # loads the cache (and, on ``leased``, leases the token)
        counted, hits, before = requests_counted(), cache_hits(), served(instance)
        answers.append(client.get(path, headers=headers))
        assert requests_counted() == counted + 1, "counted once, under the route's label"
        assert cache_hits() == hits + 1
        answers.append(served(instance) - before)
    flask_answer, flask_served, short_answer, short_served = answers
    assert (flask_served, short_served) == (0, 1), "Flask answered one, the middleware the other"
    assert short_answer.status_code == flask_answer.status_code == 200
    assert short_answer.get_data() == flask_answer.get_data()
    assert short_answer.json == bookmark
    assert sorted(short_answer.headers.items()) == sorted(flask_answer.headers.items())
    *_, flask_line, _, short_line = access_lines()
    for line in (flask_line, short_line):
        del line["ts"], line["duration_ms"]
    assert list(short_line.items()) == list(flask_line.items())
    assert short_line["request_id"] == "compare-1"


@pytest.mark.parametrize(
    ("method", "suffix", "query"),
    [
        ("HEAD", "{id}", ""),
        ("GET", "{id}", "fields=title"),
        ("GET", "0{id}", ""),  # leading zero: Flask's route decides
        ("GET", "{id}/", ""),
        ("GET", "\u0661", ""),  # ARABIC-INDIC DIGIT ONE: a digit, not ASCII
    ],
)
def test_requests_not_exactly_a_cached_get_go_to_flask(
    leased: Flask,
    create: Callable[..., dict[str, Any]],
    auth: dict[str, str],
    *,
    method: str,
    suffix: str,
    query: str,
) -> None:
    bookmark = create()
    client = leased.test_client()
    path = f"/api/bookmarks/{bookmark['id']}"
    assert client.get(path, headers=auth).status_code == 200  # cached and leased
    client.open(
        "/api/bookmarks/" + suffix.format(id=bookmark["id"]),
        method=method,
        headers=auth,
        query_string=query,
    )
    assert served(leased) == 0
    assert client.get(path, headers=auth).status_code == 200
    assert served(leased) == 1, "the same read, exactly, is answered below Flask"


def test_tokens_and_bookmarks_it_does_not_know_go_to_flask(
    leased: Flask,
    create: Callable[..., dict[str, Any]],
    auth: dict[str, str],
    make_user: Callable[[str], str],
) -> None:
    bookmark = create()
    client = leased.test_client()
    path = f"/api/bookmarks/{bookmark['id']}"
    assert client.get(path).status_code == 401  # no token
    assert client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
    other_user = {"Authorization": f"Bearer {make_user('bob')}"}
    assert client.get(path, headers=other_user).status_code == 404  # not bob's
    assert client.get(path, headers=other_user).status_code == 404  # cached as missing
    assert client.get(path + "0", headers=auth).status_code == 404
    assert served(leased) == 0
    assert client.get(path, headers=auth).status_code == 200  # Flask: loads it
    assert client.get(path, headers=auth).status_code == 200
    assert served(leased) == 1


def test_an_ended_lease_sends_the_request_to_flask(
    app_factory: Callable[..., Flask], create: Callable[..., dict[str, Any]], auth: dict[str, str]
) -> None:
    bookmark = create()
    instance = app_factory(FASTPATH=True, READ_LEASE_MS=1)
    client = instance.test_client()
    path = f"/api/bookmarks/{bookmark['id']}"
    assert client.get(path, headers=auth).status_code == 200
    time.sleep(0.005)  # a millisecond's lease has ended
    assert client.get(path, headers=auth).status_code == 200
    assert served(instance) == 0
