"""/metrics: request counts and latency by route and status, cache results, build info."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from bookmarks import metrics
from bookmarks.config import ConfigError

ITEM_ROUTE = "/api/bookmarks/<int:bookmark_id>"


def scrape(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def requests_total(samples: dict, method: str, endpoint: str, status: str) -> float:
    labels = (("endpoint", endpoint), ("method", method), ("status", status))
    return samples.get(("bookmarks_http_requests_total", labels), 0.0)


def test_requests_are_counted_by_route_and_status(
    client: FlaskClient, auth: dict[str, str], create: Callable[..., dict[str, Any]]
) -> None:
    before = scrape(client)
    bookmark = create()
    client.get(f"/api/bookmarks/{bookmark['id']}", headers=auth)
    client.get(f"/api/bookmarks/{bookmark['id']}", headers=auth)
    client.get("/api/bookmarks/999999", headers=auth)
    client.get("/nowhere")
    after = scrape(client)

    def delta(method: str, endpoint: str, status: str) -> float:
        return requests_total(after, method, endpoint, status) - requests_total(
            before, method, endpoint, status
        )

    assert delta("GET", ITEM_ROUTE, "200") == 2
    assert delta("GET", ITEM_ROUTE, "404") == 1
    assert delta("POST", "/api/bookmarks", "201") == 1
    assert delta("GET", "unmatched", "404") == 1


def test_latency_histogram_by_route_and_status(client: FlaskClient) -> None:
    client.get("/health")
    samples = scrape(client)
    labels = (("endpoint", "/health"), ("method", "GET"), ("status", "200"))
    count = samples[("bookmarks_http_request_duration_seconds_count", labels)]
    infinite = samples[
        (
            "bookmarks_http_request_duration_seconds_bucket",
            (*labels[:1], ("le", "+Inf"), *labels[1:]),
        )
    ]
    assert count >= 1
    assert infinite == count


def test_cache_hits_and_misses_are_counted(
    client: FlaskClient, auth: dict[str, str], create: Callable[..., dict[str, Any]]
) -> None:
    bookmark = create()
    before = scrape(client)
    client.get(f"/api/bookmarks/{bookmark['id']}", headers=auth)
    client.get(f"/api/bookmarks/{bookmark['id']}", headers=auth)
    after = scrape(client)
    for result in ("hit", "miss"):
        key = ("bookmarks_cache_requests_total", (("result", result),))
        assert after[key] - before.get(key, 0) == 1


def test_build_info_carries_version_release_and_sha(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(VERSION="9.9.9", RELEASE_ID="r1", GIT_SHA="cafe")
    samples = scrape(app.test_client())
    labels = (("git_sha", "cafe"), ("release_id", "r1"), ("version", "9.9.9"))
    assert samples[("bookmarks_build_info", labels)] == 1


def test_multiprocess_dir_must_be_writable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, app_factory: Callable[..., Flask]
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    with pytest.raises(
        ConfigError, match=r"PROMETHEUS_MULTIPROC_DIR=.*is not a writable directory"
    ):
        app_factory()


def test_clearing_the_multiprocess_dir_removes_only_sample_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"x")
    (tmp_path / "keep.txt").write_text("x")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    metrics.clear_multiprocess_dir()
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]


def test_child_exit_removes_the_dead_workers_live_gauges(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "gauge_livesum_4242.db").write_bytes(b"x")
    (tmp_path / "counter_4242.db").write_bytes(b"x")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    class Worker:
        pid = 4242

    metrics.child_exit(None, Worker())
    assert sorted(os.listdir(tmp_path)) == ["counter_4242.db"]


def test_child_exit_is_a_no_op_in_single_process_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics.mark_process_dead(4242)
