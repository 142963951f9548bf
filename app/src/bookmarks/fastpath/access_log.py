"""The fast path's access line: written straight to the JSON handler when nothing else listens.

A record, its trip through the logger and handler and the generic formatting were a quarter of a
cached read's CPU. ``write`` writes the same line ``logs`` would (``JsonFormatter.line``: same
fields, same scrubbing) when the JSON handler is the only place it can go; otherwise it logs it
the ordinary way (``logs.write_access_line``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from bookmarks.logs import HANDLER_MARK, JsonFormatter, access_log, write_access_line


def write(fields: dict[str, Any]) -> None:
    """Write an access line with these fields (``logs.access_fields``)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    if not write_direct(fields):
        write_access_line(fields)


def write_direct(fields: dict[str, Any]) -> bool:
    """Write the access line straight to the JSON handler, as its ``emit`` would; or say no.

    A record, its trip through the logger and handler and the generic formatting were a quarter
    of a cached read's CPU (measured). When the JSON handler is the only place the line can go
    (no handler on ``bookmarks.access``, only ours on the root logger), this writes the same line
    (``JsonFormatter.line``: same fields, same scrubbing) under the handler's lock, and flushes,
    as ``StreamHandler.emit`` does. Anything else (another handler, as pytest adds; a filter; an
    error while writing) takes the ordinary path.
    """
    root = logging.root
    if access_log.handlers or len(root.handlers) != 1:
        return False
    handler = root.handlers[0]
    formatter = handler.formatter
    if not (getattr(handler, HANDLER_MARK, False) and isinstance(formatter, JsonFormatter)):
        return False
    if not isinstance(handler, logging.StreamHandler) or len(handler.filters) != 1:
        return False  # someone added a filter beside RequestIdFilter: it must see the record
    try:
        text = formatter.line(time.time(), "INFO", access_log.name, "request", fields) + "\n"
        with handler.lock:  # type: ignore[union-attr]
            handler.stream.write(text)
            handler.stream.flush()
    except Exception:
        return False
    return True
