"""The shipped gunicorn config: settings from the environment, metrics correct across workers."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import bookmarks.gunicorn_conf

GUNICORN = Path(sys.executable).with_name("gunicorn")
PID_FILE = re.compile(r"_(\d+)\.db$")


def load_conf(monkeypatch: pytest.MonkeyPatch, **env: str):
    for name in [n for n in os.environ if n.startswith("GUNICORN_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return importlib.reload(bookmarks.gunicorn_conf)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load_conf(monkeypatch)
    assert conf.wsgi_app == "bookmarks.wsgi:app"
    assert conf.workers == 2 * (os.cpu_count() or 1) + 1
    assert (conf.worker_class, conf.threads) == ("gthread", 4)
    assert (conf.timeout, conf.graceful_timeout, conf.keepalive) == (30, 30, 5)
    assert (conf.max_requests, conf.max_requests_jitter) == (50000, 5000)
    assert conf.bind == ["127.0.0.1:8000"]
    assert conf.accesslog is None
    assert callable(conf.child_exit)
    assert callable(conf.on_starting)


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load_conf(
        monkeypatch,
        GUNICORN_WORKERS="3",
        GUNICORN_THREADS="8",
        GUNICORN_BIND="unix:/run/bookmarks/gunicorn.sock",
        GUNICORN_WORKER_CLASS="sync",
    )
    assert (conf.workers, conf.threads, conf.worker_class) == (3, 8, "sync")
    assert conf.bind == ["unix:/run/bookmarks/gunicorn.sock"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
        return response.read().decode()


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """Gunicorn with the shipped config, 2 workers, a loopback port: (base url, metrics, log)."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale file of a previous run")
    port = free_port()
    env = {
        **os.environ,
        "BOOKMARKS_CONFIG": "testing",
        "DATABASE_URL": database_url,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "2",
        "GUNICORN_THREADS": "2",
    }
    log = (tmp_path / "gunicorn.log").open("w")
    process = subprocess.Popen(
        [str(GUNICORN), "--config", "python:bookmarks.gunicorn_conf"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                get(f"{base}/health")
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("gunicorn did not answer: " + (tmp_path / "gunicorn.log").read_text())
        yield base, metrics_dir, tmp_path / "gunicorn.log"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def test_metrics_add_up_across_worker_processes(served: tuple[str, Path, Path]) -> None:
    base, metrics_dir, _ = served
    for _ in range(40):
        get(f"{base}/health")
    assert "stale file" not in "".join(
        p.read_bytes().decode(errors="replace") for p in metrics_dir.iterdir()
    ), "on_starting must clear the previous run's files"
    # Every worker writes its own sample files from boot (build info); the second may boot later.
    for _ in range(300):
        pids = {m.group(1) for p in metrics_dir.iterdir() if (m := PID_FILE.search(p.name))}
        if len(pids) >= 2:
            break
        time.sleep(0.1)
    assert len(pids) >= 2, "each worker writes its own sample files"

    text = get(f"{base}/metrics")
    counts = {
        sample.labels["status"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "bookmarks_http_requests_total" and sample.labels["endpoint"] == "/health"
    }
    # 40 requests plus the readiness polls: whichever worker answered the scrape saw all of them.
    assert counts["200"] >= 40
    assert get(f"{base}/health/ready") == '{"checks":{"database":"ok"},"status":"ready"}\n'


def test_every_line_is_json_and_each_request_is_logged_once_by_the_app(
    served: tuple[str, Path, Path],
) -> None:
    base, _, log = served
    for _ in range(5):
        get(f"{base}/health")
    time.sleep(0.2)  # the workers write their lines as the responses go out
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    by_logger = {line["logger"] for line in lines}
    assert "gunicorn.error" in by_logger, "gunicorn's own messages (worker boots) are JSON too"
    assert "gunicorn.access" not in by_logger, "no second access line from gunicorn"
    health = [line for line in lines if line.get("path") == "/health"]
    assert len(health) >= 5
    assert all(line["logger"] == "bookmarks.access" for line in health)
