"""The site nginx serves: redirects, headers, proxying, limits and the status allow-list."""

import base64
import gzip
import json
import re
import uuid

import pytest
from conftest import DOMAIN, curl, echoed, non_loopback_address

SECURITY_HEADERS = {
    "strict-transport-security": "max-age=63072000",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


@pytest.fixture(autouse=True)
def _root(pebble_root):
    """Every request here verifies the certificate against Pebble's root."""


def test_nginx_configuration_is_valid(host):
    assert host.run("nginx -t").rc == 0


def test_http_redirects_permanently_to_https(host):
    status, headers, _ = curl(host, "/api/bookmarks?q=1", scheme="http")
    assert status == 301
    assert headers["location"] == [f"https://{DOMAIN}/api/bookmarks?q=1"]


def test_http_serves_the_acme_challenge_path_without_redirect(host):
    token = uuid.uuid4().hex
    challenge = host.file("/var/www/letsencrypt/.well-known/acme-challenge")
    host.run("mkdir -p %s && echo %s > %s/%s", challenge.path, token, challenge.path, token)
    try:
        status, _, body = curl(host, f"/.well-known/acme-challenge/{token}", scheme="http")
    finally:
        host.run("rm -f %s/%s", challenge.path, token)
    assert status == 200
    assert body.strip() == token


@pytest.mark.parametrize("path", ["/health", "/api/bookmarks", "/static/missing.css"])
def test_security_headers_are_sent_once_on_every_answer(host, path):
    _, headers, _ = curl(host, path)
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == [value], name


def test_server_version_is_hidden(host):
    _, headers, _ = curl(host, "/health")
    assert headers["server"] == ["nginx"]


def test_client_request_id_is_passed_to_the_app_and_echoed(host):
    request_id = f"edge-{uuid.uuid4().hex}"
    _, headers, body = curl(host, "/api/bookmarks", "-H", f"X-Request-ID: {request_id}")
    assert echoed(body)["headers"]["x-request-id"] == request_id
    assert headers["x-request-id"] == [request_id]


def test_request_id_is_made_when_missing_or_malformed(host):
    _, headers, body = curl(host, "/api/bookmarks", "-H", 'X-Request-ID: bad id"<>')
    made = echoed(body)["headers"]["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert headers["x-request-id"] == [made]


def test_forwarded_headers_come_from_nginx_not_the_client(host):
    _, _, body = curl(
        host,
        "/api/bookmarks",
        "-H",
        "X-Forwarded-For: 203.0.113.9",
        "-H",
        "X-Forwarded-Proto: http",
    )
    seen = echoed(body)["headers"]
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-host"] == DOMAIN
    assert seen["host"] == DOMAIN


def test_upstream_connections_are_kept_alive(host):
    _, _, body = curl(host, "/api/bookmarks")
    assert echoed(body)["headers"].get("connection", "") == ""


def test_json_is_compressed(host):
    _, headers, _ = curl(host, "/api/bookmarks", "-H", "Accept-Encoding: gzip", "-o", "/dev/null")
    assert headers["content-encoding"] == ["gzip"]
    raw = host.run(
        "curl -s --cacert /var/tmp/edge-pebble-root.pem -H 'Accept-Encoding: gzip' "
        "https://%s/api/bookmarks | base64 -w0",
        DOMAIN,
    )
    assert json.loads(gzip.decompress(base64.b64decode(raw.stdout)))["path"] == "/api/bookmarks"


def test_static_files_are_served_by_nginx_with_long_cache_headers(host):
    status, headers, body = curl(host, "/static/app.css")
    assert status == 200
    assert "color" in body
    max_age = int(re.search(r"max-age=(\d+)", headers["cache-control"][0]).group(1))
    assert max_age >= 7 * 86400
    assert "x-request-id" in headers  # headers still apply under /static/


def test_bodies_over_the_limit_are_refused(host):
    host.run("head -c 1100000 /dev/zero > /var/tmp/edge-big-body")
    big = "@/var/tmp/edge-big-body"
    status, headers, body = curl(host, "/api/bookmarks", "-X", "POST", "--data-binary", big)
    assert status == 413
    # In the app's error shape, with the request id, so clients parse one kind of error.
    error = json.loads(body)
    assert error["code"] == 413
    assert error["request_id"] == headers["x-request-id"][0]
    status, _, body = curl(host, "/api/bookmarks", "-X", "POST", "--data-binary", "small")
    assert status == 200


@pytest.mark.parametrize("path", ["/metrics", "/_status"])
def test_status_endpoints_answer_loopback(host, path):
    status, _, _ = curl(host, path)
    assert status == 200


@pytest.mark.parametrize("path", ["/metrics", "/_status"])
def test_status_endpoints_refuse_other_addresses(host, path):
    # A real connection from the container's own network address, not loopback; a forged
    # X-Forwarded-For naming loopback must not help.
    address = non_loopback_address(host)
    status, _, _ = curl(host, path, "-H", "X-Forwarded-For: 127.0.0.1", address=address)
    assert status == 403
    status, _, _ = curl(host, "/health", address=address)
    assert status == 200


def _burst(host, method, count):
    """Quick requests one after the other; their status codes (body i in edge-burst-i)."""
    host.run("rm -f /var/tmp/edge-burst-*")
    codes = host.run(
        "for i in $(seq %s); do curl -s -o /var/tmp/edge-burst-$i -w '%%{http_code}\\n' "
        "--cacert /var/tmp/edge-pebble-root.pem -X %s https://%s/api/bookmarks; done",
        str(count),
        method,
        DOMAIN,
    ).stdout.split()
    return codes


def test_writes_are_rate_limited(host):
    # Write zone: 2 r/s with a burst of 5 in this scenario; 15 quick POSTs must hit it.
    codes = _burst(host, "POST", 15)
    assert "429" in codes
    assert codes[0] == "200"
    limited = codes.index("429") + 1
    body = json.loads(host.file(f"/var/tmp/edge-burst-{limited}").content_string)
    assert body["code"] == 429
    assert body["status"] == "Too Many Requests"


def test_reads_have_their_own_larger_limit(host):
    # Right after the write burst, reads still pass: writes use a separate zone.
    codes = _burst(host, "GET", 10)
    assert set(codes) == {"200"}


def test_access_log_is_json_with_request_id_and_upstream_time(host):
    request_id = f"log-{uuid.uuid4().hex}"
    curl(host, "/api/bookmarks", "-H", f"X-Request-ID: {request_id}")
    line = host.run("grep -h %s /var/log/nginx/bookmarks/access.log", request_id).stdout
    entry = json.loads(line.strip().splitlines()[-1])
    assert entry["request_id"] == request_id
    assert entry["status"] == 200
    assert float(entry["upstream_response_time"]) >= 0
