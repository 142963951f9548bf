"""JSON logs: one object per line on stderr, one line per request, nothing secret in any of them.

Journald and logrotate keep lines, and log shippers parse JSON without regexes. Stderr, so that
stdout stays clean for what CLI commands print (``create-user`` prints only the token there).
Every record made during a request carries its ``request_id``, so an error line and the access
line of the same request join up. python-json-logger builds the line; our ``Redaction`` scrubs
bearer tokens, ``bm_`` tokens and the configured secrets from its finished fields, whatever logger
or exception text they came from: redacting at the last step is the only place that cannot be
bypassed by a new log call.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, has_request_context, request
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as LibraryJsonFormatter
from sqlalchemy.engine import make_url

from bookmarks.auth import TOKEN_PATTERN

REDACTED = "[REDACTED]"
_ALWAYS_SCRUBBED = (
    re.compile(r"(?i)\bbearer\s+[^\s\"',;]+"),
    re.compile(TOKEN_PATTERN.pattern.replace("{43}", "{8,}")),
    re.compile(r"(?i)(password|passwd|secret|token)=([^\s&\"',;]+)"),
)
# Text that none of the patterns above can match is returned as it is: one search instead of three
# substitutions, for the dozen values of every access line. It must match whatever they match.
_MAY_NEED_SCRUBBING = re.compile(r"(?i)bearer|bm_|passw|secret|token")
# The same test for ASCII text, as plain substring searches (a case-insensitive alternation costs
# the regex engine a try per character). Only for ASCII: under IGNORECASE some other characters
# match ASCII letters (the Kelvin sign matches "k").
_MAY_NEED_SCRUBBING_WORDS = ("bearer", "bm_", "passw", "secret", "token")


def _may_match_a_pattern(text: str) -> bool:
    """Whether ``_MAY_NEED_SCRUBBING`` would find something in ``text`` (the same answer)."""
    if text.isascii():
        lowered = text.lower()
        for word in _MAY_NEED_SCRUBBING_WORDS:  # noqa: SIM110 - a generator costs more here
            if word in lowered:
                return True
        return False
    return _MAY_NEED_SCRUBBING.search(text) is not None


HANDLER_MARK = "_bookmarks_json_handler"
# A record's attribute holding all its extra fields at once (``extra={FIELDS: {...}}``).
FIELDS = "bookmarks_fields"
# The first fields of every line: the record attributes python-json-logger reads, and their names
# in the line.
_LEADING = ("asctime", "levelname", "name", "message")
_RENAMED = {"asctime": "ts", "levelname": "level", "name": "logger"}

access_log = logging.getLogger("bookmarks.access")


def _timestamp(created: float) -> str:
    """``created`` as ISO 8601 UTC with milliseconds (the ``ts`` field)."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


class Redaction:
    """Our own redaction: replace tokens, credential-shaped values and known secrets in texts.

    Applied to a line's finished fields (``JsonFormatter.process_log_record``), not as a
    ``logging.Filter`` on records: a record's message, arguments, extra fields and traceback only
    become the texts that are written there, so nothing a new log call passes can go around it.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: list[str] = []
        self.add_secrets(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Scrub these values too (short ones would match innocent text and are ignored)."""
        merged = {*self.secrets, *(s for s in secrets if len(s) >= 8)}
        self.secrets = sorted(merged, key=len, reverse=True)

    def fields(self, entry: dict[str, Any]) -> dict[str, Any]:
        """``entry`` with every value that is not a number or ``None`` as scrubbed text."""
        # Scrub the values, not the JSON text: a pattern must never eat an escape character.
        texts = []
        for key, value in entry.items():
            if isinstance(value, str):
                texts.append(value)
            elif value is not None and not isinstance(value, int | float):  # bool is an int
                entry[key] = str(value)
                texts.append(entry[key])
        # One test over all the texts first (an access line has a dozen): neither a secret nor
        # a pattern can match across the NUL that joins them (none contains one), so when the
        # joined text needs nothing, no value does.
        if self._may_need_scrubbing("\0".join(texts)):
            return {k: self.scrub(v) if isinstance(v, str) else v for k, v in entry.items()}
        return entry

    def _may_need_scrubbing(self, text: str) -> bool:
        for secret in self.secrets:
            if secret in text:
                return True
        return _may_match_a_pattern(text)

    def scrub(self, text: str) -> str:
        """Replace known secrets and anything shaped like a credential with a marker."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if not _may_match_a_pattern(text):
            return text
        text = _ALWAYS_SCRUBBED[0].sub("Bearer " + REDACTED, text)
        text = _ALWAYS_SCRUBBED[1].sub(REDACTED, text)
        return _ALWAYS_SCRUBBED[2].sub(lambda m: f"{m.group(1)}={REDACTED}", text)


class JsonFormatter(LibraryJsonFormatter):
    """python-json-logger's formatter: ``ts``, ``level``, ``logger``, ``message``, then the rest.

    A record's extra fields follow (an access line brings them as one dict, ``FIELDS``), and an
    exception as ``exc_info``; ``Redaction`` scrubs every field last.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(
            list(_LEADING),
            rename_fields=_RENAMED,
            reserved_attrs=[*RESERVED_ATTRS, FIELDS],
            json_ensure_ascii=False,
        )
        self.redaction = Redaction(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Scrub these values too (``Redaction.add_secrets``)."""
        self.redaction.add_secrets(secrets)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        """``ts``: ISO 8601 UTC with milliseconds, whatever the server's time zone."""
        del datefmt
        return _timestamp(record.created)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        """The library's fields, then those a record brings as one dict (``FIELDS``)."""
        super().add_fields(log_data, record, message_dict)
        fields = getattr(record, FIELDS, None)
        if fields is not None:
            log_data.update(fields)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        """Scrub every field: the last step before the line is written."""
        return self.redaction.fields(log_data)

    def line(self, created: float, level: str, logger: str, message: str, fields: Any) -> str:
        """The line ``format`` makes of a record with these values and ``extra={FIELDS: ...}``."""
        entry = {"ts": _timestamp(created), "level": level, "logger": logger, "message": message}
        entry.update(fields)
        return self.serialize_log_record(self.process_log_record(entry))


class RequestIdFilter(logging.Filter):
    """Stamp records made inside a request with its id."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add ``request_id`` when there is a request; never drops a record."""
        if not getattr(record, "request_id", None) and has_request_context():
            record.request_id = g.get("request_id")
        return True


def app_secrets(app: Flask) -> list[str]:
    """Values that must never be printed: the secret key and the database password."""
    values = [app.config.get("SECRET_KEY") or ""]
    try:
        password = make_url(app.config.get("SQLALCHEMY_DATABASE_URI") or "").password
    except Exception:
        password = None
    if password:
        values.append(str(password))
    return values


def configure_logging(app: Flask) -> None:
    """Send all logging to stderr as JSON at ``LOG_LEVEL`` (idempotent: apps may share one)."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, HANDLER_MARK, False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        setattr(handler, HANDLER_MARK, True)
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    formatter = handler.formatter
    if isinstance(formatter, JsonFormatter):
        formatter.add_secrets(app_secrets(app))
    root.setLevel(app.config["LOG_LEVEL"])
    # Flask's own app logger would add a second, plain-text handler in debug mode.
    app.logger.handlers.clear()
    app.logger.propagate = True
    app.after_request(log_request_hook)


def log_request_hook(response: Response) -> Response:
    """Write the access line of the request ``response`` answers."""
    if not access_log.isEnabledFor(logging.INFO):
        return response
    # The objects behind the proxies, each looked up once.
    context, current = g._get_current_object(), request._get_current_object()
    principal = getattr(context, "principal", None)
    write_access_line(
        access_fields(
            request_id=getattr(context, "request_id", None),
            method=current.method,
            path=current.path,
            status=response.status_code,
            started=getattr(context, "request_started", None),
            remote_addr=current.remote_addr,
            user_id=principal.user_id if principal else None,
            size=response.calculate_content_length(),
        )
    )
    return response


def access_fields(
    *,
    request_id: str | None,
    method: str,
    path: str,
    status: int,
    started: float | None,
    remote_addr: str | None,
    user_id: int | None,
    size: int | None,
) -> dict[str, Any]:
    """The fields of an access line, in their order."""
    return {
        "request_id": request_id,
        "method": method,
        # The path only: query strings are user data and are not needed to find a request.
        "path": path,
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
        "remote_addr": remote_addr,
        "user_id": user_id,
        "bytes": size,
    }


def write_access_line(fields: dict[str, Any]) -> None:
    """Log an access line with these fields through ``bookmarks.access``."""
    # ``makeRecord`` and ``handle`` are what ``info`` calls, without looking up the caller's
    # file and line in the stack (the line does not show them).
    access_log.handle(
        access_log.makeRecord(
            access_log.name,
            logging.INFO,
            __file__,
            0,
            "request",
            (),
            None,
            extra={"request_id": fields["request_id"], FIELDS: fields},
        )
    )
