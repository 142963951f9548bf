"""The whole stack on an all-in-one host: services, files, TLS, the API through nginx."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from conftest import CA_BUNDLE, DOMAIN, api, run_playbook, status_of


@pytest.mark.parametrize(
    "unit",
    [
        "postgresql.service",
        "nginx.service",
        "bookmarks.socket",
        "bookmarks.service",
        "certbot.timer",
    ],
)
def test_service_is_active_and_enabled(host, unit):
    service = host.service(unit)
    assert service.is_running, unit
    assert service.is_enabled, unit


def test_env_file_is_private_to_the_app(host):
    env = host.file("/etc/bookmarks/bookmarks.env")
    assert env.user == "root"
    assert env.group == "bookmarks"
    assert env.mode == 0o640


def test_current_points_at_a_finished_release_with_its_manifest(host):
    current = host.file("/srv/bookmarks/current")
    assert current.is_symlink
    release = current.linked_to
    assert release.startswith("/srv/bookmarks/releases/")
    assert not host.file(f"{release}/.unfinished").exists
    assert host.file(f"{release}/venv/bin/gunicorn").exists
    manifest = json.loads(host.file(f"{release}/manifest.json").content_string)
    assert manifest["release_id"] == release.rsplit("/", 1)[1]
    for key in ("version", "git_sha", "migration_head", "deployed_at", "deployed_by"):
        assert manifest[key], key


def test_gunicorn_listens_on_the_socket_systemd_holds(host):
    socket = host.file("/run/bookmarks/gunicorn.sock")
    assert socket.is_socket
    assert socket.group == "www-data"


def test_status_names_the_live_release(host):
    release = host.file("/srv/bookmarks/current").linked_to.rsplit("/", 1)[1]
    status = status_of(host)
    assert status["release_id"] == release


def test_certificate_is_issued_by_pebble_for_the_domain(host):
    out = host.check_output(
        f"openssl s_client -connect 127.0.0.1:443 -servername {DOMAIN} -verify_return_error "
        f"-CAfile {CA_BUNDLE} </dev/null 2>/dev/null "
        "| openssl x509 -noout -issuer -ext subjectAltName"
    )
    assert "Pebble" in out
    assert f"DNS:{DOMAIN}" in out


def test_http_redirects_to_https(host):
    out = host.check_output(
        f"curl -sS -o /dev/null -w '%{{http_code}} %{{redirect_url}}' http://{DOMAIN}/api/bookmarks"
    )
    assert out == f"301 https://{DOMAIN}/api/bookmarks"


def test_api_round_trip_with_a_token_from_the_cli(host):
    token = host.check_output("bookmarks-manage create-user verify-%s", host.backend.get_hostname())
    assert re.fullmatch(r"\S{20,}", token)
    status, headers, created = api(
        host,
        "POST",
        "/api/bookmarks",
        token,
        # A new url each run, so verify can run again on the same hosts.
        {
            "url": f"https://example.org/stack/{uuid.uuid4().hex}",
            "title": "Stack check",
            "tags": ["verify"],
        },
    )
    assert status == 201, created
    assert headers.get("x-request-id")
    status, _, fetched = api(host, "GET", f"/api/bookmarks/{created['id']}", token)
    assert status == 200
    assert fetched["title"] == "Stack check"
    status, _, found = api(host, "GET", "/api/bookmarks?q=stack", token)
    assert status == 200
    assert any(item["id"] == created["id"] for item in found["items"])
    status, _, _ = api(host, "GET", "/api/bookmarks")
    assert status == 401


def test_readiness_checks_the_database(host):
    status, _, body = api(host, "GET", "/health/ready")
    assert status == 200, body


def test_hardened_unit_scores_at_most_1_5(host):
    out = host.check_output("systemd-analyze security bookmarks.service --no-pager | tail -n 1")
    score = float(re.search(r"exposure level.*?: ([0-9.]+)", out).group(1))
    assert score <= 1.5, out


def test_site_takes_a_switch_off_from_the_command_line(hostname):
    """`-e certbot_enabled=false` arrives as a string; every conditional reads it as a boolean.

    Check mode, so the live host keeps its certificate: the run must only get through, and plan the
    self-signed certificate instead of certbot's.
    """
    checked = run_playbook("site.yml", hostname, "--check", "-e", "certbot_enabled=false")
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert "/self-signed/fullchain.pem" in checked.stdout
