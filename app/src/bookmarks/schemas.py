"""Marshmallow schemas: one declaration for request validation and for the OpenAPI document.

flask-smorest validates requests with these schemas and derives ``/api/openapi.json`` from them,
so the published limits are the enforced ones. Unknown fields are refused (marshmallow's
``RAISE``): a typo in a field name is an error the client sees, not a silently ignored change.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from bookmarks.config import MAX_PAGE_SIZE
from bookmarks.models import (
    NOTES_MAX_LENGTH,
    TAG_MAX_LENGTH,
    TAGS_MAX_COUNT,
    TITLE_MAX_LENGTH,
    URL_MAX_LENGTH,
)

MAX_PAGE = 1_000_000
QUERY_MAX_LENGTH = 200
# Explicit ranges, not \s or \w: those mean different things to Python and to the JavaScript-style
# regular expressions of JSON Schema, and the document must mean what the server does.
# A tag: no ASCII/C1 control characters, no space, no comma.
TAG_PATTERN = r"^[^\x00-\x20\x7f-\x9f,]+$"


class FullMatch(validate.Regexp):
    r"""``validate.Regexp`` that must match the whole value.

    The pattern is published as it is (in JSON Schema's regular expressions ``$`` ends the
    text), but Python's ``$`` also matches before a trailing newline, so ``re.match`` would let
    ``"abc\n"`` through; ``fullmatch`` does not.
    """

    def __call__(self, value: str) -> str:
        """Return ``value`` if the whole of it matches, else raise ``ValidationError``."""
        if self.regex.fullmatch(value) is None:
            raise ma.ValidationError(self._format_error(value))
        return value


# PostgreSQL text cannot hold NUL; refusing it here turns a driver error into a 422. A Regexp (not
# a custom function) so the rule is published as a `pattern` in the OpenAPI document too.
no_nul = FullMatch(r"^[^\x00]*$", error="must not contain NUL characters")


# What a bookmark url may be, as one regular expression so the OpenAPI document publishes exactly
# the rule the server enforces: http or https, an ASCII host name (punycode for IDN) or an IP
# literal, an optional port, then any path, query and fragment without spaces or control
# characters. No user:password@ part: credentials do not belong in a bookmark.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
URL_PATTERN = (
    rf"^https?://(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?"
    r"(?:[/?#][^\x00-\x20\x7f-\x9f]*)?$"
)


def _url_field(*, required: bool) -> fields.String:
    return fields.String(
        required=required,
        validate=[
            validate.Length(min=1, max=URL_MAX_LENGTH),
            FullMatch(URL_PATTERN, error="Not a valid URL: give an absolute http(s) url."),
        ],
        metadata={"example": "https://flask.palletsprojects.com/"},
    )


def _lone_surrogates(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, list | tuple):
        return any(_lone_surrogates(item) for item in value)
    return False


class InputSchema(ma.Schema):
    r"""Base of request schemas: refuses text that is not valid Unicode.

    JSON may carry a lone UTF-16 surrogate (``"\ud800"``); Python keeps it, and the database
    driver would fail to encode it, turning bad input into a 500. JSON Schema cannot express the
    rule, so it is enforced here for every field.
    """

    @ma.pre_load
    def _refuse_lone_surrogates(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict):
            bad = {
                key: ["must be valid Unicode text"]
                for key, v in data.items()
                if _lone_surrogates(v)
            }
            if bad:
                raise ma.ValidationError(bad)
        return data


class Tag(fields.String):
    r"""A tag, in a body or a filter: the pattern checked as given, the rest as it is saved.

    As given, so that ``"abc\n"`` is refused rather than stripped; then ``normalize_tag``, and
    the validators (published in the document) judge the normalized tag, so one that
    normalization empties (``"\u00a0"``) or lengthens past the limit (``"İ"`` lower-cases to two
    characters) is refused too.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            validate=[validate.Length(min=1, max=TAG_MAX_LENGTH), FullMatch(TAG_PATTERN)],
            **kwargs,
        )

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        _TAG_AS_GIVEN(text)
        return normalize_tag(text)


_TAG_AS_GIVEN = FullMatch(TAG_PATTERN)


def _tags_field(**kwargs: Any) -> fields.List:
    return fields.List(
        Tag(),
        validate=validate.Length(max=TAGS_MAX_COUNT),
        metadata={"description": "Lower-cased and de-duplicated on save.", "example": ["python"]},
        **kwargs,
    )


def normalize_tag(tag: str) -> str:
    """One spelling per tag, in a body and in a query alike: NFC, lower case, no outer space."""
    return unicodedata.normalize("NFC", tag).strip().lower()


def normalize_tags(tags: list[str]) -> list[str]:
    """Normalize and de-duplicate, keeping the caller's order (``Tag`` has normalized each)."""
    return list(dict.fromkeys(normalize_tag(tag) for tag in tags))


class BookmarkInSchema(InputSchema):
    """Create (POST) or replace (PUT): ``url`` is required, omitted fields become empty."""

    url = _url_field(required=True)
    title = fields.String(load_default="", validate=[validate.Length(max=TITLE_MAX_LENGTH), no_nul])
    notes = fields.String(load_default="", validate=[validate.Length(max=NOTES_MAX_LENGTH), no_nul])
    tags = _tags_field(load_default=list)

    @ma.post_load
    def _normalize(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["url"] = data["url"].strip()
        data["tags"] = normalize_tags(data["tags"])
        return data


class BookmarkPatchSchema(InputSchema):
    """Partial update (PATCH): any subset of the fields, at least one."""

    url = _url_field(required=False)
    title = fields.String(validate=[validate.Length(max=TITLE_MAX_LENGTH), no_nul])
    notes = fields.String(validate=[validate.Length(max=NOTES_MAX_LENGTH), no_nul])
    tags = _tags_field()

    @ma.validates_schema
    def _not_empty(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ma.ValidationError("give at least one of url, title, notes, tags")

    @ma.post_load
    def _normalize(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if "url" in data:
            data["url"] = data["url"].strip()
        if "tags" in data:
            data["tags"] = normalize_tags(data["tags"])
        return data


class BookmarkSchema(ma.Schema):
    """A bookmark as the API returns it."""

    id = fields.Integer(dump_only=True)
    url = fields.String(dump_only=True)
    title = fields.String(dump_only=True)
    notes = fields.String(dump_only=True)
    tags = fields.List(fields.String(), dump_only=True)
    created_at = fields.AwareDateTime(dump_only=True)
    updated_at = fields.AwareDateTime(dump_only=True)
    rank = fields.Float(
        dump_only=True,
        allow_none=True,
        metadata={"description": "Search relevance in [0, 1), null unless the list was searched."},
    )


class ListArgsSchema(InputSchema):
    """Query parameters of ``GET /api/bookmarks``."""

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    per_page = fields.Integer(
        validate=validate.Range(min=1, max=MAX_PAGE_SIZE),
        metadata={"description": f"Default: the server's PAGE_SIZE; at most {MAX_PAGE_SIZE}."},
    )
    q = fields.String(
        validate=[validate.Length(min=1, max=QUERY_MAX_LENGTH), no_nul],
        metadata={
            "description": "Full-text search (web search syntax: quotes, or, -word); "
            "results are ranked best first."
        },
    )
    tag = Tag(metadata={"description": "Only bookmarks carrying this tag (case-insensitive)."})


class LinksSchema(ma.Schema):
    """Relative links to neighbouring pages (null where there is none)."""

    self = fields.String(required=True)
    first = fields.String(required=True)
    last = fields.String(required=True)
    next = fields.String(allow_none=True, required=True)
    prev = fields.String(allow_none=True, required=True)


class BookmarkPageSchema(ma.Schema):
    """One page of a list or search."""

    items = fields.List(fields.Nested(BookmarkSchema), required=True)
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)
    total = fields.Integer(required=True)
    pages = fields.Integer(required=True)
    links = fields.Nested(LinksSchema, required=True)


class ErrorSchema(ma.Schema):
    """Every error response (see ``errors.py``)."""

    code = fields.Integer(required=True, metadata={"description": "HTTP status code"})
    status = fields.String(required=True, metadata={"description": "HTTP status phrase"})
    message = fields.String(required=True)
    errors = fields.Dict(metadata={"description": "Field errors, by location and field"})
    request_id = fields.String(metadata={"description": "Quote it when reporting a problem"})
