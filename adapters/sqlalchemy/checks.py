"""Input checks run before any write: one-line errors naming the field and what is allowed."""

from __future__ import annotations

import json
import re
from datetime import datetime

from fsm.ports import InvalidRecord

_TOPIC = re.compile(r"[A-Za-z0-9._-]+")
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
"""JSON's escape for NUL (not an escaped backslash followed by 'u0000')."""
_SURROGATE = re.compile("[\ud800-\udfff]")


def text(field: str, value: object, limit: int, *, allow_empty: bool = False) -> str:
    """`value` as a string of at most `limit` characters."""
    if not isinstance(value, str):
        raise InvalidRecord(f"{field} must be a string, got {type(value).__name__} {value!r}")
    if not value and not allow_empty:
        raise InvalidRecord(f"{field} must not be empty")
    if len(value) > limit:
        raise InvalidRecord(f"{field} is {len(value)} characters long; at most {limit} allowed")
    if "\x00" in value:
        raise InvalidRecord(f"{field} contains a NUL character, which databases refuse")
    bad = None if value.isascii() else _SURROGATE.search(value)
    if bad is not None:  # the driver would fail to encode it (UnicodeEncodeError)
        raise InvalidRecord(
            f"{field} holds the surrogate code point {bad.group()!r}, which is not valid "
            "Unicode and databases refuse"
        )
    return value


def topic(value: object) -> str:
    """A Kafka topic name: letters, digits, '.', '_', '-', at most 249 characters."""
    name = text("topic", value, 249)
    if not _TOPIC.fullmatch(name) or name in (".", ".."):
        raise InvalidRecord(
            f"topic {name!r} is not a valid Kafka topic name; use letters, digits, '.', '_', '-'"
        )
    return name


def positive_int(field: str, value: object, limit: int = 2**63 - 1) -> int:
    """A positive integer that fits a BIGINT (booleans are refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRecord(
            f"{field} must be a positive integer, got {type(value).__name__} {value!r}"
        )
    if not 0 < value <= limit:
        raise InvalidRecord(f"{field} must be between 1 and {limit}, got {value}")
    return value


def aware(field: str, value: object) -> datetime:
    """An aware datetime (naive ones are ambiguous once stored)."""
    if not isinstance(value, datetime):
        raise InvalidRecord(f"{field} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidRecord(f"{field} {value.isoformat()} has no time zone; give an aware one")
    return value


def json_value(field: str, value: object) -> None:
    """`value` must be plain JSON (no NaN or infinity: PostgreSQL's JSONB refuses them)."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidRecord(f"{field} is not plain JSON: {error}") from error
    if "\\u0000" in text and _NUL_ESCAPE.search(text):  # the regex costs 100x the `in`
        raise InvalidRecord(f"{field} contains a NUL character, which PostgreSQL's JSONB refuses")
