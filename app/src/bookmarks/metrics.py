"""Prometheus metrics that stay correct under several gunicorn worker processes.

Each gunicorn worker is a separate process with its own counters. In prometheus_client's
multiprocess mode every process writes its samples to memory-mapped files in
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` (served by whichever worker gets the scrape) adds up
the files of all of them. For that the deploy must:

* set ``PROMETHEUS_MULTIPROC_DIR`` to a directory owned by this service alone (for instance
  ``/run/bookmarks/metrics``) in the environment *before* Python starts: prometheus_client chooses
  its storage when it is first imported;
* empty that directory when the service starts (``ExecStartPre`` or this module's
  ``clear_multiprocess_dir`` from gunicorn's ``on_starting``), or counters of the previous run
  are added to the new one;
* call ``child_exit`` from gunicorn's ``child_exit`` hook so a dead worker's live gauges go away.

Without the variable (development, tests) the ordinary single-process registry is used.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from bookmarks.config import ConfigError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter(
    "bookmarks_http_requests_total",
    "HTTP requests answered, by method, route and status.",
    ["method", "endpoint", "status"],
)
LATENCY = Histogram(
    "bookmarks_http_request_duration_seconds",
    "Time from the app receiving a request to returning its response.",
    ["method", "endpoint", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
CACHE_REQUESTS = Counter(
    "bookmarks_cache_requests_total",
    "BookmarkService cache lookups, by result (hit or miss).",
    ["result"],
)
CACHE_HITS = CACHE_REQUESTS.labels(result="hit")
CACHE_MISSES = CACHE_REQUESTS.labels(result="miss")
BUILD_INFO = Gauge(
    "bookmarks_build_info",
    "Always 1; the labels say which build is running.",
    ["version", "release_id", "git_sha"],
    multiprocess_mode="max",
)


def multiprocess_dir() -> str | None:
    """The multiprocess directory, or ``None`` in single-process mode."""
    return os.environ.get(MULTIPROC_ENV) or None


def clear_multiprocess_dir() -> None:
    """Remove the sample files of a previous run (call once, before workers start).

    Only ``*.db`` files are touched, so a mistaken directory loses nothing else.
    """
    path = multiprocess_dir()
    if path and Path(path).is_dir():
        for sample_file in Path(path).glob("*.db"):
            sample_file.unlink(missing_ok=True)


def mark_process_dead(pid: int) -> None:
    """Drop the live-gauge files of a worker that exited (no-op in single-process mode)."""
    path = multiprocess_dir()
    if path:
        multiprocess.mark_process_dead(pid, path)


def child_exit(server: Any, worker: Any) -> None:
    """Gunicorn ``child_exit`` hook: ``child_exit = bookmarks.metrics.child_exit`` in its config."""
    del server  # part of gunicorn's hook signature
    mark_process_dead(worker.pid)


def render() -> tuple[bytes, str]:
    """The exposition text for ``/metrics``: all workers' samples in multiprocess mode."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def _endpoint_label() -> str:
    # The route pattern, not the path: /api/bookmarks/<int:bookmark_id> is one series, not millions.
    return request.url_rule.rule if request.url_rule is not None else "unmatched"


# The labelled children of REQUESTS and LATENCY by (method, endpoint, status): few, and looking
# them up here is cheaper than ``labels()`` validating and locking on every request.
_SERIES: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def _series(method: str, endpoint: str, status: str) -> tuple[Any, Any]:
    key = (method, endpoint, status)
    series = _SERIES.get(key)
    if series is None:
        series = _SERIES.setdefault(key, (REQUESTS.labels(*key), LATENCY.labels(*key)))
    return series


def observe(method: str, endpoint: str, status: str, seconds: float) -> None:
    """Count one answered request and its duration (``endpoint``: the route's pattern)."""
    count, latency = _series(method, endpoint, status)
    count.inc()
    latency.observe(seconds)


def observe_hook(response: Response) -> Response:
    """Count the request ``response`` answers, and its duration."""
    started = g.get("request_started")
    if started is not None:
        seconds = time.perf_counter() - started
        observe(request.method, _endpoint_label(), str(response.status_code), seconds)
    return response


def init_app(app: Flask) -> None:
    """Check the multiprocess directory and count every response."""
    path = multiprocess_dir()
    if path and not (Path(path).is_dir() and os.access(path, os.W_OK)):
        raise ConfigError(
            app.config["CONFIG_NAME"],
            [f"{MULTIPROC_ENV}={path} is not a writable directory"],
        )
    BUILD_INFO.labels(
        version=app.config["VERSION"],
        release_id=app.config["RELEASE_ID"],
        git_sha=app.config["GIT_SHA"],
    ).set(1)
    app.after_request(observe_hook)
