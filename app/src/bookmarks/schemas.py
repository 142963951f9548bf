"""Marshmallow schemas: one declaration for request validation and for the OpenAPI document.

flask-smorest validates requests with these schemas and derives ``/api/openapi.json`` from them,
so the published limits are the enforced ones. Unknown fields are refused (marshmallow's
``RAISE``): a typo in a field name is an error the client sees, not a silently ignored change.
"""

from __future__ import annotations

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
TAG_PATTERN = r"^[^\s,\x00]+$"


def no_nul(value: str) -> None:
    """PostgreSQL text cannot hold NUL; refusing it here turns a driver error into a 422."""
    if "\x00" in value:
        raise ma.ValidationError("must not contain NUL characters")


def _url_field(*, required: bool) -> fields.Url:
    return fields.Url(
        required=required,
        schemes={"http", "https"},
        require_tld=False,
        validate=[validate.Length(max=URL_MAX_LENGTH), no_nul],
        metadata={"example": "https://flask.palletsprojects.com/", "maxLength": URL_MAX_LENGTH},
    )


def _tags_field(**kwargs: Any) -> fields.List:
    tag = fields.String(
        validate=[validate.Length(min=1, max=TAG_MAX_LENGTH), validate.Regexp(TAG_PATTERN)],
    )
    return fields.List(
        tag,
        validate=validate.Length(max=TAGS_MAX_COUNT),
        metadata={"description": "Lower-cased and de-duplicated on save.", "example": ["python"]},
        **kwargs,
    )


def normalize_tags(tags: list[str]) -> list[str]:
    """Lower-case and de-duplicate, keeping the caller's order."""
    return list(dict.fromkeys(tag.lower() for tag in tags))


class BookmarkInSchema(ma.Schema):
    """Create (POST) or replace (PUT): ``url`` is required, omitted fields become empty."""

    url = _url_field(required=True)
    title = fields.String(
        load_default="", validate=[validate.Length(max=TITLE_MAX_LENGTH), no_nul]
    )
    notes = fields.String(
        load_default="", validate=[validate.Length(max=NOTES_MAX_LENGTH), no_nul]
    )
    tags = _tags_field(load_default=list)

    @ma.post_load
    def _normalize(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["tags"] = normalize_tags(data["tags"])
        return data


class BookmarkPatchSchema(ma.Schema):
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


class ListArgsSchema(ma.Schema):
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
    tag = fields.String(
        validate=[validate.Length(min=1, max=TAG_MAX_LENGTH), validate.Regexp(TAG_PATTERN)],
        metadata={"description": "Only bookmarks carrying this tag (case-insensitive)."},
    )

    @ma.post_load
    def _normalize(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if "tag" in data:
            data["tag"] = data["tag"].lower()
        return data


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
