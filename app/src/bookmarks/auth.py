"""API tokens: how they look, how they are stored, how a request proves one.

A token is ``bm_`` followed by 43 url-safe characters (256 random bits). The prefix makes a leaked
token easy to spot by secret scanners and lets the log scrubber in ``logs.py`` recognise one.
Only the SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

TOKEN_PREFIX = "bm_"  # noqa: S105 - a marker, not a credential
TOKEN_PATTERN = re.compile(r"bm_[A-Za-z0-9_-]{43}")
# How many characters of the token the database keeps in clear, to tell tokens apart.
DISPLAY_PREFIX_LENGTH = 10
MAX_AUTHORIZATION_LENGTH = 512


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, and the generation of their data the caller may be served from cache."""

    user_id: int
    name: str
    data_version: int


def generate_token() -> str:
    """Return a new random token (shown once, never stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Return the hex SHA-256 that the database stores and looks tokens up by."""
    return hashlib.sha256(token.encode()).hexdigest()


def display_prefix(token: str) -> str:
    """Return the part of a token kept in clear for operators."""
    return token[:DISPLAY_PREFIX_LENGTH]


def bearer_token(authorization: str | None) -> str | None:
    """Extract a well-formed token from an ``Authorization`` header value, else ``None``.

    Malformed values are rejected here, before any database work, so garbage costs nothing.
    """
    if not authorization or len(authorization) > MAX_AUTHORIZATION_LENGTH:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not TOKEN_PATTERN.fullmatch(token):
        return None
    return token
