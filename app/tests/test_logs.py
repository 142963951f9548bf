"""JSON logs: one line per request with its id; tokens and secrets never reach a line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from bookmarks import logs
from bookmarks.auth import generate_token
from bookmarks.fastpath import access_log
from bookmarks.logs import REDACTED, JsonFormatter

Lines = Callable[[], list[dict[str, Any]]]


def access_lines(lines: Lines) -> list[dict[str, Any]]:
    return [line for line in lines() if line["logger"] == "bookmarks.access"]


def test_one_json_line_per_request_with_its_fields(
    client: FlaskClient, auth: dict[str, str], log_lines: Lines
) -> None:
    response = client.get("/api/bookmarks?q=secret-search-terms", headers=auth)
    (line,) = access_lines(log_lines)
    assert line["message"] == "request"
    assert line["level"] == "INFO"
    assert line["method"] == "GET"
    assert line["path"] == "/api/bookmarks"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float)
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert line["user_id"] == 1
    assert line["remote_addr"] == "127.0.0.1"
    assert line["ts"].endswith("+00:00")
    assert "secret-search-terms" not in json.dumps(line), "query strings are not logged"


def test_failed_requests_are_logged_too(client: FlaskClient, log_lines: Lines) -> None:
    client.get("/api/bookmarks")
    client.post("/health")
    assert [(line["status"], line["user_id"]) for line in access_lines(log_lines)] == [
        (401, None),
        (405, None),
    ]


def test_tokens_never_reach_the_log(
    app: Flask, client: FlaskClient, token: str, log_lines: Lines
) -> None:
    wrong = generate_token()
    client.get("/api/bookmarks", headers={"Authorization": f"Bearer {token}"})
    client.get("/api/bookmarks", headers={"Authorization": f"Bearer {wrong}"})
    client.get(f"/api/bookmarks?token={token}")
    client.get(f"/no/such/{token}")
    with app.test_request_context():
        app.logger.warning("careless: %s and Authorization: Bearer %s", token, wrong)
        try:
            raise ValueError(f"header was Bearer {token}")
        except ValueError:
            app.logger.exception("failed")
    text = "\n".join(json.dumps(line) for line in log_lines())
    assert token not in text
    assert wrong not in text
    assert REDACTED in text


def test_secret_key_and_database_password_never_reach_the_log(
    app_factory: Callable[..., Flask], log_lines: Lines
) -> None:
    secret = "a-very-long-secret-key-value-for-this-test-only"
    app = app_factory(SECRET_KEY=secret)
    with app.test_request_context():
        app.logger.error("config dump: %s", dict(app.config))
    text = "\n".join(json.dumps(line) for line in log_lines())
    assert secret not in text
    assert "config dump" in text


@pytest.mark.parametrize(
    "text",
    ["password=hunter2hunter2", "postgresql://u:pw@h/db?secret=abc", "token=bm_12345678"],
)
def test_credential_shaped_text_is_scrubbed(text: str) -> None:
    record = logging.makeLogRecord({"msg": text, "levelname": "INFO", "name": "x"})
    line = JsonFormatter().format(record)
    assert REDACTED in line
    assert "hunter2" not in line
    assert "abc" not in line.split("secret=")[-1]


def test_extra_fields_and_exceptions_are_included() -> None:
    try:
        raise KeyError("boom")
    except KeyError:
        import sys

        record = logging.makeLogRecord(
            {
                "msg": "m",
                "levelname": "ERROR",
                "name": "x",
                "exc_info": sys.exc_info(),
                "answer": 42,
            }
        )
    line = json.loads(JsonFormatter().format(record))
    assert line["answer"] == 42
    assert "KeyError" in line["exc_info"]


@pytest.mark.parametrize(
    "text",
    [
        "plain access line",
        "BeArEr x",
        "PASSWORD",
        "my_Secret",
        "Token",
        "bm_",
        "to\u212aen=abc",  # the Kelvin sign: IGNORECASE matches it with "k"
        "pa\u017fsword=abc",  # the long s matches "s"
        "t\u00f6ken",
        "\u0130",
        "",
    ],
)
def test_the_quick_pre_check_answers_exactly_as_the_pattern(text: str) -> None:
    assert logs._may_match_a_pattern(text) == bool(logs._MAY_NEED_SCRUBBING.search(text))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("bearbm_psswecrtokn BEARTKNS\u212a\u017f\u0131-=é")))
def test_the_quick_pre_check_agrees_with_the_pattern_on_any_text(text: str) -> None:
    assert logs._may_match_a_pattern(text) == bool(logs._MAY_NEED_SCRUBBING.search(text))


def test_a_token_in_one_of_several_fields_is_scrubbed_with_non_ascii_around() -> None:
    token = generate_token()
    record = logging.makeLogRecord(
        {"msg": "request", "levelname": "INFO", "name": "x", "path": "/ünïcode", "note": token}
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["note"] == REDACTED
    assert line["path"] == "/ünïcode"


def test_the_fast_paths_direct_access_line_is_the_line_a_record_would_make(
    app: Flask, only_the_json_handler: Callable[[bool], io.StringIO]
) -> None:
    fields = logs.access_fields(
        request_id="same-id",
        method="GET",
        path="/api/bookmarks/7",
        status=200,
        started=None,
        remote_addr="127.0.0.1",
        user_id=3,
        size=120,
    )
    buffer = only_the_json_handler(True)
    assert access_log.write_direct(dict(fields))
    logs.write_access_line(dict(fields))
    direct_line, record_line = (json.loads(line) for line in buffer.getvalue().splitlines())
    del direct_line["ts"], record_line["ts"]
    assert list(direct_line.items()) == list(record_line.items())
    assert direct_line["logger"] == "bookmarks.access"


def test_the_direct_access_line_is_scrubbed_and_taken_only_when_alone(
    app: Flask, only_the_json_handler: Callable[[bool], io.StringIO]
) -> None:
    token = generate_token()
    fields = {"request_id": token, "path": f"/api/bookmarks/{token}", "status": 404}
    buffer = only_the_json_handler(True)
    assert access_log.write_direct(fields)
    only_the_json_handler(False)
    assert not access_log.write_direct(fields), "another handler must see the record"
    (line,) = (json.loads(text) for text in buffer.getvalue().splitlines())
    assert token not in json.dumps(line)
    assert line["path"] == f"/api/bookmarks/{REDACTED}"
    assert line["status"] == 404


def test_a_line_starts_with_its_time_in_utc_milliseconds_level_logger_and_message() -> None:
    record = logging.makeLogRecord(
        {"msg": "m %s", "args": (1,), "levelname": "INFO", "name": "x", "created": 1764782400.1234}
    )
    line = json.loads(JsonFormatter().format(record))
    assert list(line.items())[:4] == [
        ("ts", "2025-12-03T17:20:00.123+00:00"),
        ("level", "INFO"),
        ("logger", "x"),
        ("message", "m 1"),
    ]
