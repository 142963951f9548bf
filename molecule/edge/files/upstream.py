#!/usr/bin/python3
"""Test-only stand-in for gunicorn behind nginx in the edge scenario.

It listens on the app's unix socket, answers the paths the nginx site treats specially
(/health, /metrics, /_status, /api/...), echoes what it received as JSON so the tests can see the
headers nginx forwards, and writes one log line per request to a file it reopens on SIGUSR1, the
way gunicorn does, so the logrotate test can prove nothing is lost.
"""

import grp
import json
import os
import signal
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler

SOCKET_PATH = sys.argv[1]
LOG_PATH = sys.argv[2]
SOCKET_GROUP = "www-data"


class ReopenableLog:
    """An append-only log file that can be reopened at a signal, like gunicorn's USR1."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.handle = open(path, "a", buffering=1)  # noqa: SIM115 - kept open on purpose

    def reopen(self):
        with self.lock:
            self.handle.close()
            self.handle = open(self.path, "a", buffering=1)  # noqa: SIM115

    def write(self, record):
        with self.lock:
            self.handle.write(json.dumps(record) + "\n")


LOG = ReopenableLog(LOG_PATH)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "edge-upstream"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request_id = self.headers.get("X-Request-ID", "")
        LOG.write({"request_id": request_id, "method": self.command, "path": self.path})
        if self.path == "/metrics":
            payload, ctype = b"edge_requests_total 1\n", "text/plain; version=0.0.4"
        else:
            answer = {
                "path": self.path,
                "method": self.command,
                "body_bytes": len(body),
                "headers": {k.lower(): v for k, v in self.headers.items()},
                # Padding so gzip has something to compress.
                "padding": "bookmark " * 64,
            }
            payload, ctype = json.dumps(answer).encode(), "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Request-ID", request_id)
        # Headers the real app sets too; nginx must send each exactly once.
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _answer

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        """Quiet: the log file above is the record."""


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    # Like the app's systemd socket (Backlog=2048): the default of 5 would refuse connections
    # (EAGAIN on a unix socket) when fresh nginx workers all connect at once after a reload.
    request_queue_size = 2048


def main():
    if os.path.exists(SOCKET_PATH):
        os.unlink(SOCKET_PATH)
    server = Server(SOCKET_PATH, Handler)
    os.chown(SOCKET_PATH, -1, grp.getgrnam(SOCKET_GROUP).gr_gid)
    os.chmod(SOCKET_PATH, 0o660)
    signal.signal(signal.SIGUSR1, lambda *_: LOG.reopen())
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


if __name__ == "__main__":
    main()
