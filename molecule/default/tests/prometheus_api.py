"""Prometheus's HTTP API inside a molecule host, and polling with a deadline (test_0/test_4)."""

from __future__ import annotations

import json
import shlex
import time

import pytest

PROMETHEUS = "http://127.0.0.1:9090"
# The scrape jobs of an all-in-one host (roles/monitor, playbooks/vars/monitoring.yml).
JOBS = {"prometheus", "alertmanager", "node", "app", "postgres", "nginx"}


def poll(check, deadline: float, what: str, every: float = 3.0):
    """Call `check` until it returns something truthy; fail naming `what` after `deadline` s."""
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"not within {deadline:.0f} s: {what} (last: {last!r})")


def prometheus(host, path: str, **params: str) -> dict:
    args = " ".join(f"--data-urlencode {shlex.quote(f'{k}={v}')}" for k, v in params.items())
    out = host.check_output(f"curl -sS --max-time 10 -G {args} {PROMETHEUS}{path}")
    return json.loads(out)


def query(host, promql: str) -> list[dict]:
    return prometheus(host, "/api/v1/query", query=promql)["data"]["result"]


def every_target_up(host) -> list[dict]:
    """Prometheus's active targets when every one of JOBS is there and up (else empty)."""
    targets = prometheus(host, "/api/v1/targets", state="active")["data"]["activeTargets"]
    jobs = {t["labels"]["job"] for t in targets}
    down = [t for t in targets if t["health"] != "up"]
    return targets if jobs == JOBS and not down else []
