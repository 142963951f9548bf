#!/usr/bin/env python3
"""Benchmark the bookmarks app on both of its paths, beside a bare Flask and a bare WSGI app.

Run through bench/app-bench.sh (it provides the venv, wrk and a throwaway PostgreSQL in
DATABASE_URL). One run serves, each under the shipped gunicorn config: the app with the fast path
(``FASTPATH=on``), the app on the plain Flask path (``FASTPATH=off``), the plain path with
SQLAlchemy's ``pool_pre_ping`` (what a ping on every checkout costs), a bare Flask endpoint
returning a constant (the ceiling of any Flask view), and a bare WSGI app running the same one
prepared query as the token check (the floor of any read that asks the database once). It prints
requests/s and p50/p99 latency for get-one cached, get-one uncached (random ids over more bookmarks
than the caches hold), list and search on both paths, and a JSON summary: the fast path against the
plain path (it stays only at 1.3x or more), and the cost of ``pool_pre_ping`` on the plain path (it
would be used unless it costs more than 10 %; the app pings idle connections only,
``repository.ping_idle_connections``). The cache hit rate of each run is read from /metrics, so
"cached" and "uncached" are measured, not assumed. All traffic stays on 127.0.0.1; every run is
bounded by --duration.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
WORDS = [
    *("python", "flask", "gunicorn", "nginx", "postgres", "ansible", "systemd", "debian"),
    *("certbot", "cache", "search", "index", "metrics", "logging", "deploy", "rollback"),
    *("release", "vault", "socket", "worker", "thread", "pool", "query", "rank", "token"),
    *("cluster", "backup", "restore", "migrate", "schema", "alembic", "wheel", "venv"),
    *("proxy", "header", "secret", "config", "health"),
]
CEILING_APP = """from flask import Flask
app = Flask(__name__)


@app.get("/ceiling")
def ceiling():
    return {"status": "ok"}
"""
# One prepared query on a pooled psycopg connection (the token check's, for the bench token) and a
# constant answer, without any framework: the floor of any read that asks the database once.
QUERY_WSGI_APP = """import hashlib
import os

from sqlalchemy import create_engine

engine = create_engine(os.environ["DATABASE_URL"], isolation_level="AUTOCOMMIT")
QUERY = (
    "SELECT u.id, u.name, u.data_version FROM users u JOIN api_tokens t ON t.user_id = u.id"
    " WHERE t.token_hash = %(token_hash)s AND t.revoked_at IS NULL"
)
TOKEN_HASH = hashlib.sha256(os.environ["BENCH_TOKEN"].encode()).hexdigest()
BODY = b'{"status":"ok"}\\n'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    connection = engine.raw_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(QUERY, {"token_hash": TOKEN_HASH}, prepare=True)
            cursor.fetchone()
    finally:
        connection.close()
    start_response("200 OK", list(HEADERS))
    return [BODY]
"""
# The plain path with SQLAlchemy's pre-ping on: the same app, one engine option changed.
PREPING_APP = """from bookmarks import create_app
from bookmarks.config import ProductionConfig


class PrePing(ProductionConfig):
    def engine_options(self):
        return {**super().engine_options(), "pool_pre_ping": True}


app = create_app(PrePing)
"""
# The app's servers: name -> (WSGI app, extra environment).
APPS = {
    "fast": ("bookmarks.wsgi:app", {"FASTPATH": "on"}),
    "plain": ("bookmarks.wsgi:app", {"FASTPATH": "off"}),
    "plain + pool_pre_ping": ("preping_app:app", {"FASTPATH": "off"}),
}
CACHE_SAMPLE = re.compile(r'bookmarks_cache_requests_total\{result="(\w+)"\} (\S+)')
SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass
class Result:
    scenario: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    hit_rate: float | None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback only
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"not ready: {url}")


def serve(app: str, port: int, env: dict[str, str], log: Path, pythonpath: str | None = None):  # noqa: ANN201
    cmd = [str(VENV_BIN / "gunicorn"), "--config", "python:bookmarks.gunicorn_conf"]
    if pythonpath:
        cmd += ["--pythonpath", pythonpath]
    cmd.append(app)
    return subprocess.Popen(  # noqa: S603 - fixed argv
        cmd,
        env={**env, "GUNICORN_BIND": f"127.0.0.1:{port}"},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def cache_counts(base: str) -> tuple[float, float]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:  # noqa: S310
        text = response.read().decode()
    values = dict.fromkeys(("hit", "miss"), 0.0)
    for result, value in CACHE_SAMPLE.findall(text):
        values[result] = float(value)
    return values["hit"], values["miss"]


def to_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(
    url: str, script: Path, connections: int, duration: int
) -> tuple[float, float, float, int]:
    out = subprocess.run(  # noqa: S603 - fixed argv
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "5s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1))
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(match.group(1))
    if match := SOCKET_ERRORS.search(out):
        errors += sum(int(n) for n in match.groups())
    return rps, p50, p99, errors


def lua(directory: Path, name: str, body: str) -> Path:
    path = directory / f"{name}.lua"
    path.write_text(
        'wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")\n'
        "math.randomseed(os.time())\n" + body
    )
    return path


def seed(database_url: str, count: int) -> tuple[str, int]:
    """Migrate, create the bench user with a token, insert ``count`` bookmarks; return token, id."""
    env = {**os.environ, "BOOKMARKS_CONFIG": "testing", "DATABASE_URL": database_url}
    bookmarks = str(VENV_BIN / "bookmarks")
    subprocess.run([bookmarks, "db", "upgrade"], env=env, check=True, capture_output=True)  # noqa: S603
    token = subprocess.run(  # noqa: S603
        [bookmarks, "create-user", "bench"], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    words = "{" + ",".join(WORDS) + "}"
    with psycopg.connect(libpq(database_url)) as conn:
        conn.execute(
            """
            INSERT INTO bookmarks (user_id, url, title, notes, tags)
            SELECT u.id, 'https://example.org/' || n,
                   w[1 + n %% cardinality(w)] || ' '
                       || w[1 + (n / 40) %% cardinality(w)] || ' note ' || n,
                   'notes about ' || w[1 + (n / 7) %% cardinality(w)],
                   ARRAY[w[1 + n %% 13]]
            FROM users u, generate_series(1, %s) AS n, (SELECT %s::text[] AS w) AS words
            WHERE u.name = 'bench'
            """,
            (count, words),
        )
        conn.execute("UPDATE users SET data_version = data_version + 1 WHERE name = 'bench'")
        first = conn.execute("SELECT min(id) FROM bookmarks").fetchone()[0]
        conn.execute("ANALYZE")
    return token, first


CEILING = "bare Flask (constant)"
QUERY_FLOOR = "bare WSGI + 1 prepared query"
PREPING = "plain + pool_pre_ping: get-one cached"
BASELINE = "plain (baseline)"  # --baseline: the plain path of another checkout
KINDS = ("get-one cached", "get-one uncached", "list (page 1, 20)", "search (random term+page)")
# Always run, whatever --only says: the summary needs them.
ALWAYS = (
    CEILING,
    QUERY_FLOOR,
    "fast: get-one cached",
    "plain: get-one cached",
    PREPING,
    f"{BASELINE}: get-one cached",
)


def main() -> None:  # noqa: PLR0915 - a linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per scenario and level; the median is kept"
    )
    parser.add_argument("--connections", default="1,4,8,16,32,64", help="concurrency levels")
    parser.add_argument("--bookmarks", type=int, default=50_000, help="rows for uncached reads")
    parser.add_argument(
        "--baseline",
        default="",
        help="app/src of another checkout (a git worktree of an earlier commit): its plain path"
        " is served and measured beside this one, and the summary gives this one's cost",
    )
    parser.add_argument(
        "--only",
        default="",
        help="run only scenarios whose name contains one of these comma-separated words"
        " (the references and get-one cached always run: the summary needs them)",
    )
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    levels = [int(n) for n in args.connections.split(",")]
    base_url = os.environ["DATABASE_URL"]
    with psycopg.connect(libpq(base_url), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS bookmarks_bench WITH (FORCE)")
        conn.execute("CREATE DATABASE bookmarks_bench")
    database_url = make_url(base_url).set(database="bookmarks_bench").render_as_string(False)
    token, first_id = seed(database_url, args.bookmarks)

    work = Path(tempfile.mkdtemp(prefix="bookmarks-bench-"))
    (work / "ceiling_app.py").write_text(CEILING_APP)
    (work / "query_wsgi_app.py").write_text(QUERY_WSGI_APP)
    (work / "preping_app.py").write_text(PREPING_APP)
    env = {
        **os.environ,
        "BOOKMARKS_CONFIG": "production",
        "SECRET_KEY": os.urandom(32).hex(),
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "INFO",  # as in production: one JSON line per request (to a file here)
        "BENCH_TOKEN": token,
    }
    os.environ["BENCH_TOKEN"] = token
    apps = dict(APPS)
    if args.baseline:
        apps[BASELINE] = ("bookmarks.wsgi:app", {"FASTPATH": "off", "PYTHONPATH": args.baseline})
    bases: dict[str, str] = {}
    servers = []
    for name, (wsgi, extra) in [
        *apps.items(),
        ("ceiling", ("ceiling_app:app", {})),
        ("query", ("query_wsgi_app:app", {})),
    ]:
        port = free_port()
        metrics = work / f"metrics-{len(servers)}"  # each server counts its own requests
        metrics.mkdir()
        server_env = {**env, **extra, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
        log = work / f"server-{len(servers)}.log"
        servers.append(serve(wsgi, port, server_env, log, pythonpath=str(work)))
        bases[name] = f"http://127.0.0.1:{port}"
    try:
        for name in apps:
            wait_ready(f"{bases[name]}/health/ready")
        wait_ready(f"{bases['ceiling']}/ceiling")
        wait_ready(f"{bases['query']}/")
        last = first_id + args.bookmarks - 1
        plain_lua = lua(work, "plain", "")
        scenarios: dict[str, tuple[str, str, Path]] = {
            CEILING: ("ceiling", bases["ceiling"] + "/ceiling", plain_lua),
            QUERY_FLOOR: ("query", bases["query"] + "/", plain_lua),
        }
        random_id = lua(
            work,
            "random",
            f"request = function()\n  return wrk.format('GET', '/api/bookmarks/' .. "
            f"math.random({first_id}, {last}))\nend\n",
        )
        search = lua(
            work,
            "search",
            "local words = {" + ",".join(f'"{w}"' for w in WORDS) + "}\n"
            "request = function()\n"
            "  return wrk.format('GET', '/api/bookmarks?per_page=20&q='"
            " .. words[math.random(#words)] .. '&page=' .. math.random(1, 20))\nend\n",
        )
        for mode in ("fast", "plain", *([BASELINE] if args.baseline else [])):
            base = bases[mode]
            scenarios |= {
                f"{mode}: get-one cached": (mode, f"{base}/api/bookmarks/{first_id}", plain_lua),
                f"{mode}: get-one uncached": (mode, base, random_id),
                f"{mode}: list (page 1, 20)": (
                    mode,
                    f"{base}/api/bookmarks?per_page=20",
                    plain_lua,
                ),
                f"{mode}: search (random term+page)": (mode, base, search),
            }
        scenarios[PREPING] = (
            "plain + pool_pre_ping",
            f"{bases['plain + pool_pre_ping']}/api/bookmarks/{first_id}",
            plain_lua,
        )
        wanted = [word for word in args.only.split(",") if word]
        if wanted:
            scenarios = {
                name: value
                for name, value in scenarios.items()
                if name in ALWAYS or any(w in name for w in wanted)
            }
        # Warm up every worker (imports, connection pools) before measuring.
        for _, url, script in scenarios.values():
            run_wrk(url, script, 8, 2)
        results: list[Result] = []
        # Level by level, every scenario in turn: the references and both paths are measured
        # moments apart, so a change in the machine's load skews their ratios as little as possible.
        for connections in levels:
            for name, (server, url, script) in scenarios.items():
                counted = server in apps
                runs = []
                for _ in range(args.repeat):
                    before = cache_counts(bases[server]) if counted else None
                    rps, p50, p99, errors = run_wrk(url, script, connections, args.duration)
                    hit_rate = None
                    if before is not None:
                        after = cache_counts(bases[server])
                        hits, misses = after[0] - before[0], after[1] - before[1]
                        hit_rate = hits / (hits + misses) if hits + misses else None
                    runs.append(Result(name, connections, rps, p50, p99, errors, hit_rate))
                # The run with the median rate stands for the level; errors are all counted.
                result = sorted(runs, key=lambda r: r.rps)[len(runs) // 2]
                result.errors = sum(r.errors for r in runs)
                results.append(result)
                hit_rate = result.hit_rate
                print(
                    f"{name:34} c={connections:<3} {result.rps:9.1f} req/s  "
                    f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
                    f"errors {result.errors}"
                    + (f"  cache hits {hit_rate:.0%}" if hit_rate is not None else "")
                    + f"  (load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
    finally:
        for server in servers:
            os.killpg(server.pid, signal.SIGTERM)
        for server in servers:
            server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    def best(name: str) -> Result:
        return max((r for r in results if r.scenario == name), key=lambda r: r.rps)

    def ratio(name: str, reference: str) -> float | None:
        have = {r.scenario for r in results}
        if name not in have or reference not in have:
            return None
        return round(best(name).rps / best(reference).rps, 2)

    fast, plain = best("fast: get-one cached"), best("plain: get-one cached")
    fast_vs_plain = fast.rps / plain.rps
    pre_ping_cost = 1 - best(PREPING).rps / plain.rps
    summary = {
        "tool": subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)  # noqa: S607
        .stdout.splitlines()[0]
        .strip(),
        "cpus": os.cpu_count(),
        "load_average_1min": {
            "start": round(load_at_start, 2),
            "end": round(os.getloadavg()[0], 2),
        },
        "gunicorn": {
            k: env.get(f"GUNICORN_{k.upper()}", "default")
            for k in ("workers", "threads", "worker_class")
        },
        "read_lease_ms": env.get("READ_LEASE_MS", "default (20)"),
        "best_rps": {
            name: round(best(name).rps) for name in dict.fromkeys(r.scenario for r in results)
        },
        "fast_vs_plain": {kind: ratio(f"fast: {kind}", f"plain: {kind}") for kind in KINDS},
        "fast_path_stays (get-one cached, fast >= 1.3 x plain)": fast_vs_plain >= 1.3,
        "vs_bare_flask": {
            "fast": ratio(fast.scenario, CEILING),
            "plain": ratio(plain.scenario, CEILING),
        },
        "vs_bare_wsgi_one_query": {
            "fast": ratio(fast.scenario, QUERY_FLOOR),
            "plain": ratio(plain.scenario, QUERY_FLOOR),
        },
        "pool_pre_ping_cost_on_plain_get_one_cached": round(pre_ping_cost, 3),
        "pool_pre_ping_used (cost <= 10 %)": pre_ping_cost <= 0.10,
        "errors": sum(r.errors for r in results),
    }
    if args.baseline:
        # What this checkout's plain path costs against the baseline's: 0.05 is 5 % slower.
        summary["plain_cost_vs_baseline"] = {
            kind: round(1 - best(f"plain: {kind}").rps / best(f"{BASELINE}: {kind}").rps, 3)
            for kind in KINDS
            if {f"plain: {kind}", f"{BASELINE}: {kind}"} <= {r.scenario for r in results}
        }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
