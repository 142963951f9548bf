"""One web host stops (its container is shut down, as a VM powering off) under load: the
balancer keeps serving from the other, and failures, if any, stop within the passive check's
window (max_fails=2, fail_timeout=10 s, connect timeout 2 s)."""

from __future__ import annotations

import subprocess
import time

from conftest import WEB1, LoadGenerator, address, node


def test_balancer_keeps_serving_when_a_web_host_stops(lb):
    web1_backend = f"http://{address(WEB1)}:8000/health/ready"
    load = LoadGenerator("bm-failover")
    load.start()
    try:
        time.sleep(3)
        subprocess.run(["docker", "stop", WEB1], check=True, capture_output=True)
        # Longer than the passive check's window: requests keep flowing to the other host.
        time.sleep(15)
        window = load.stop()
        # A second run with the host still down: nginx no longer tries it (or fails fast).
        load.start()
        time.sleep(8)
        after = load.stop()
    finally:
        subprocess.run(["docker", "start", WEB1], check=True, capture_output=True)
    print(
        f"web host stopped: {window.total} requests, {window.failed} failed, slowest "
        f"{window.slowest:.2f} s; afterwards {after.total} requests, {after.failed} failed, "
        f"slowest {after.slowest:.2f} s"
    )
    assert window.statuses.get(200, 0) > 100
    assert after.failed == 0, after.text
    assert after.statuses.get(200, 0) > 100
    # Back after a restart: systemd starts the socket and the service at boot.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if lb.run(f"curl -sSf --max-time 3 {web1_backend}").rc == 0:
            break
        time.sleep(2)
    else:
        raise AssertionError(f"{WEB1} did not come back within 90 s of its restart")
    assert node(WEB1).service("bookmarks.socket").is_running
