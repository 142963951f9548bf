"""Rolling deploy and rollback across both web hosts under continuous load through the balancer.

hey runs on the balancer for the whole playbook run; every request must succeed. Each batch
(one web host) leaves the balancer before its switch and comes back after its health gate.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import LBS, PROJECT, WEB2, WEBS, LoadGenerator, node, run_playbook


def live_release(name: str) -> str:
    return node(name).file("/srv/bookmarks/current").linked_to.rsplit("/", 1)[1]


def assert_no_balancer_drains() -> None:
    for balancer in LBS:
        conf = node(balancer).file("/etc/nginx/bookmarks.upstream.conf").content_string
        assert " down" not in conf, balancer


def status(name: str) -> dict:
    sock = "--unix-socket /run/bookmarks/gunicorn.sock"
    url = "http://localhost/_status"
    return json.loads(node(name).check_output(f"curl -sS --max-time 5 {sock} {url}"))


def run_under_load(playbook: str, *extra: str):
    load = LoadGenerator()
    load.start()
    try:
        done, seconds = run_playbook(playbook, *extra)
    finally:
        report = load.stop()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    print(
        f"{playbook}: {seconds:.1f} s, {report.total} requests, {report.failed} failed, "
        f"p99 {report.p99 * 1000:.0f} ms, slowest {report.slowest * 1000:.0f} ms"
    )
    return output, report


@pytest.fixture(scope="module")
def before() -> dict[str, str]:
    releases = {web: live_release(web) for web in WEBS}
    assert len(set(releases.values())) == 1, releases
    return releases


def test_rolling_deploy_under_load_fails_no_request(lb, before):
    output, report = run_under_load(
        "deploy.yml", "-e", "app_force_release=true", "-e", "app_serial=1"
    )
    after = {web: live_release(web) for web in WEBS}
    assert len(set(after.values())) == 1, after
    assert after[WEBS[0]] != before[WEBS[0]]
    for web in WEBS:
        assert status(web)["release_id"] == after[web]
    # One batch per web host, each drained and then put back on the balancer.
    assert output.count("TASK [Take this batch out of the load balancers]") == len(WEBS)
    assert output.count("TASK [Put this batch back into the load balancers]") == len(WEBS)
    for balancer in LBS:
        assert f" -> {balancer}]" in output, f"no drain on {balancer}"
    assert report.failed == 0, report.text
    assert report.statuses.get(200, 0) > 100
    assert_no_balancer_drains()


def test_rolling_rollback_under_load_fails_no_request(lb, before):
    output, report = run_under_load("rollback.yml", "-e", "app_serial=1")
    for web in WEBS:
        assert live_release(web) == before[web]
        assert status(web)["release_id"] == before[web]
    assert output.count("TASK [Take this batch out of the load balancers]") == len(WEBS)
    assert report.failed == 0, report.text
    assert_no_balancer_drains()


@pytest.fixture
def breaks_on_web2(tmp_path: Path) -> Path:
    """A copy of the app that starts everywhere but on the second web host."""
    src = tmp_path / "app"
    shutil.copytree(
        PROJECT / "app",
        src,
        ignore=shutil.ignore_patterns(".venv*", "__pycache__", "*.egg-info", "build", "tests"),
    )
    wsgi = src / "src" / "bookmarks" / "wsgi.py"
    wsgi.write_text(
        "import socket\n"
        f"if socket.gethostname() == {WEB2!r}:\n"
        '    raise RuntimeError("deliberately broken on one host")\n' + wsgi.read_text()
    )
    return src


def test_failed_batch_stops_the_rollout_and_puts_back_the_switched_hosts(
    lb, before, breaks_on_web2
):
    load = LoadGenerator()
    load.start()
    try:
        done, seconds = run_playbook(
            "deploy.yml",
            "-e",
            f"app_src_dir={breaks_on_web2}",
            "-e",
            "app_serial=1",
            "-e",
            "app_health_gate_timeout=20",
        )
    finally:
        report = load.stop()
    output = " ".join((done.stdout + done.stderr).split())
    print(f"stopped rollout: {seconds:.1f} s, {report.total} requests, {report.failed} failed")
    assert done.returncode != 0
    assert "did not become ready" in output
    assert "The rollout stopped" in output
    # web1 switched to the new release and was then switched back: its link changed twice.
    switches = [
        part
        for part in output.split("TASK [")[1:]
        if part.startswith(
            "app : Switch to the release, hand the service over and wait until it is ready]"
        )
    ]
    assert sum(f"changed: [{WEBS[0]}]" in part for part in switches) == 2, switches
    for web in WEBS:
        assert live_release(web) == before[web], web
        assert status(web)["release_id"] == before[web]
    assert report.failed == 0, report.text
    assert_no_balancer_drains()
