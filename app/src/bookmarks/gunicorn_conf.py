"""Gunicorn settings for the bookmarks service: ``gunicorn -c python:bookmarks.gunicorn_conf``.

Every value can be overridden from the environment (``GUNICORN_*``), so the deploy role changes
numbers in the env file, not code. The hooks keep ``/metrics`` correct across workers (see
``bookmarks.metrics``). A deploy that writes its own gunicorn config only needs to copy the two
hooks at the bottom.
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn import glogging

from bookmarks import metrics
from bookmarks.logs import JsonFormatter


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


wsgi_app = "bookmarks.wsgi:app"
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000").split(",")
# 2 x cores + 1 is gunicorn's rule of thumb for a workload that waits on a database.
workers = _int("GUNICORN_WORKERS", 2 * (os.cpu_count() or 1) + 1)
# Threads let a worker overlap database round trips without more processes (and memory).
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = _int("GUNICORN_THREADS", 4)
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# A little longer than nothing, shorter than nginx's upstream keepalive_timeout (60 s).
keepalive = _int("GUNICORN_KEEPALIVE", 5)
# Recycle workers now and then, at different moments, so a slow leak never needs a restart. Not
# often: a worker's read cache goes with it, and starting one costs ~0.6 s of CPU (measured). At
# the former 2000, 1650 requests/s over 5 workers meant a restart every 1.3 s, about a quarter of
# a 2-core machine spent booting workers with empty caches.
max_requests = _int("GUNICORN_MAX_REQUESTS", 50000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 5000)
# nginx on the same host is the only proxy whose X-Forwarded-* headers gunicorn believes.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
proc_name = "bookmarks"
# The app writes one JSON line per request itself (with request id and user); gunicorn's access
# log would duplicate it without those fields.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


class JsonLogger(glogging.Logger):
    """gunicorn's own messages (worker boots, timeouts) as JSON lines, through the app's formatter.

    A ``logconfig_dict`` could set the formatter too, but any logging config also switches
    gunicorn's access log on: it then builds every request's log atoms even with nowhere to
    write them, a fifth of a worker's CPU on a cached read (measured with py-spy).
    """

    def setup(self, cfg: Any) -> None:
        """Gunicorn's handlers, each given the JSON formatter."""
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter())


logger_class = JsonLogger


def on_starting(server) -> None:
    """Forget the previous run's metric files before any worker writes new ones."""
    del server
    metrics.clear_multiprocess_dir()


def child_exit(server, worker) -> None:
    """Drop a dead worker's live gauges so /metrics shows living workers only."""
    metrics.child_exit(server, worker)
