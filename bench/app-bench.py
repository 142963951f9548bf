#!/usr/bin/env python3
"""Benchmark the bookmarks app under its shipped gunicorn config, beside a bare-Flask ceiling.

Run through bench/app-bench.sh (it provides the venv, wrk and a throwaway PostgreSQL in
DATABASE_URL). Prints requests/s and p50/p99 latency for: get-one cached, get-one uncached (random
ids over more bookmarks than the caches hold), list, search (random terms and pages), and a bare
Flask endpoint returning a constant served by the same gunicorn config: the ceiling, and beside it
the same endpoint running one prepared query first (the floor of any read that checks the database
on every request, as the coherent cache did before read leases, and does with READ_LEASE_MS=0).
The cache hit rate of each run is read from /metrics, so "cached" and "uncached" are measured, not
assumed.
All traffic stays on 127.0.0.1; every run is bounded by --duration.
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
# The ceiling plus one prepared query on a pooled connection (the token and data_version lookup),
# nothing else: what a cached read would cost at best if it checked the database every time, as it
# does with READ_LEASE_MS=0. Cached reads above it show what the read lease saves.
QUERY_CEILING_APP = """import os

from flask import Flask
from sqlalchemy import create_engine

app = Flask(__name__)
engine = create_engine(os.environ["DATABASE_URL"], isolation_level="AUTOCOMMIT")
QUERY = (
    "SELECT u.id, u.name, u.data_version FROM users u JOIN api_tokens t ON t.user_id = u.id"
    " WHERE t.token_hash = %(token_hash)s AND t.revoked_at IS NULL"
)


@app.get("/ceiling")
def ceiling():
    connection = engine.raw_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(QUERY, {"token_hash": "0" * 64}, prepare=True)
            cursor.fetchone()
    finally:
        connection.close()
    return {"status": "ok"}
"""
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


def main() -> None:  # noqa: PLR0915 - a linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per scenario and level; the median is kept"
    )
    parser.add_argument("--connections", default="1,4,8,16,32,64", help="concurrency levels")
    parser.add_argument("--bookmarks", type=int, default=50_000, help="rows for uncached reads")
    parser.add_argument(
        "--only",
        default="",
        help="run only scenarios whose name contains one of these comma-separated words"
        " (the two ceilings and get-one cached always run: the summary needs them)",
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
    (work / "metrics").mkdir()
    (work / "ceiling_app.py").write_text(CEILING_APP)
    (work / "query_ceiling_app.py").write_text(QUERY_CEILING_APP)
    env = {
        **os.environ,
        "BOOKMARKS_CONFIG": "production",
        "SECRET_KEY": os.urandom(32).hex(),
        "DATABASE_URL": database_url,
        "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
        "LOG_LEVEL": "INFO",  # as in production: one JSON line per request (to a file here)
        "BENCH_TOKEN": token,
    }
    os.environ["BENCH_TOKEN"] = token
    app_port, ceiling_port, query_port = free_port(), free_port(), free_port()
    servers = [
        serve("bookmarks.wsgi:app", app_port, env, work / "app.log"),
        serve("ceiling_app:app", ceiling_port, env, work / "ceiling.log", pythonpath=str(work)),
        serve("query_ceiling_app:app", query_port, env, work / "query.log", pythonpath=str(work)),
    ]
    app_base, ceiling_base = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{ceiling_port}"
    try:
        wait_ready(f"{app_base}/health/ready")
        wait_ready(f"{ceiling_base}/ceiling")
        query_base = f"http://127.0.0.1:{query_port}"
        wait_ready(f"{query_base}/ceiling")
        last = first_id + args.bookmarks - 1
        scenarios = {
            "ceiling (bare Flask)": (ceiling_base + "/ceiling", lua(work, "plain", "")),
            "ceiling + 1 query": (query_base + "/ceiling", lua(work, "plain", "")),
            "get-one cached": (f"{app_base}/api/bookmarks/{first_id}", lua(work, "get", "")),
            "get-one uncached": (
                app_base,
                lua(
                    work,
                    "random",
                    f"request = function()\n  return wrk.format('GET', '/api/bookmarks/' .. "
                    f"math.random({first_id}, {last}))\nend\n",
                ),
            ),
            "list (page 1, 20)": (f"{app_base}/api/bookmarks?per_page=20", lua(work, "list", "")),
            "search (random term+page)": (
                app_base,
                lua(
                    work,
                    "search",
                    "local words = {" + ",".join(f'"{w}"' for w in WORDS) + "}\n"
                    "request = function()\n"
                    "  return wrk.format('GET', '/api/bookmarks?per_page=20&q='"
                    " .. words[math.random(#words)] .. '&page=' .. math.random(1, 20))\nend\n",
                ),
            ),
        }
        wanted = [word for word in args.only.split(",") if word]
        if wanted:
            scenarios = {
                name: value
                for name, value in scenarios.items()
                if "ceiling" in name or name == "get-one cached" or any(w in name for w in wanted)
            }
        # Warm up every worker (imports, connection pools) before measuring.
        for url, script in scenarios.values():
            run_wrk(url, script, 8, 2)
        results: list[Result] = []
        # Level by level, every scenario in turn: the ceilings and the app are measured moments
        # apart, so a change in the machine's load skews their ratio as little as possible.
        for connections in levels:
            for name, (url, script) in scenarios.items():
                runs = []
                for _ in range(args.repeat):
                    before = cache_counts(app_base) if "ceiling" not in name else None
                    rps, p50, p99, errors = run_wrk(url, script, connections, args.duration)
                    hit_rate = None
                    if before is not None:
                        after = cache_counts(app_base)
                        hits, misses = after[0] - before[0], after[1] - before[1]
                        hit_rate = hits / (hits + misses) if hits + misses else None
                    runs.append(Result(name, connections, rps, p50, p99, errors, hit_rate))
                # The run with the median rate stands for the level; errors are all counted.
                result = sorted(runs, key=lambda r: r.rps)[len(runs) // 2]
                result.errors = sum(r.errors for r in runs)
                results.append(result)
                hit_rate = result.hit_rate
                print(
                    f"{name:28} c={connections:<3} {result.rps:9.1f} req/s  "
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

    ceiling, cached = best("ceiling (bare Flask)"), best("get-one cached")
    query_ceiling = best("ceiling + 1 query")
    half = max(1, cached.connections // 2)
    at_half = min(
        (r for r in results if r.scenario == "get-one cached"),
        key=lambda r: abs(r.connections - half),
    )
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
        "ceiling_rps": round(ceiling.rps),
        "cached_get_one_rps": round(cached.rps),
        "cached_vs_ceiling": round(cached.rps / ceiling.rps, 2),
        "goal_70_percent": cached.rps / ceiling.rps >= 0.7,
        "ceiling_plus_one_query_rps": round(query_ceiling.rps),
        "cached_vs_ceiling_plus_one_query": round(cached.rps / query_ceiling.rps, 2),
        "saturation_connections": cached.connections,
        "p99_ms_at_half_saturation": {"connections": at_half.connections, "p99_ms": at_half.p99_ms},
        "goal_p99_under_25ms": at_half.p99_ms < 25,
        "errors": sum(r.errors for r in results),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
