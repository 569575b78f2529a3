"""Audit rules: what the log follows, and the validation of a query of it. No I/O, no
gRPC."""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf import timestamp_pb2

from mesh.problems import FieldViolation
from services.common import paging

__all__ = [
    "MAX_FILTER",
    "MAX_NS",
    "MIN_NS",
    "TOPICS",
    "Query",
    "clamp_ns",
    "encode_page_token",
    "parse_query",
]

TOPICS: tuple[str, ...] = ("user", "product", "inventory", "order", "payment")
"""Every topic that carries the shop's domain events: the log follows them all."""

MAX_FILTER = 256
"""Characters of the longest stream or type a query may filter on."""

MIN_NS = -(2**63)
MAX_NS = 2**63 - 1
"""The times the log can hold, in nanoseconds since the epoch (SQLite's INTEGER, 1677 to
2262); earlier or later ones are held as these bounds."""

_PAGE_KIND = "audit"
# As mesh.events requires of a stream: printable ASCII, no leading or trailing space.
_STREAM = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")
_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


@dataclass(frozen=True)
class Query:
    """One validated QueryAuditLog request: at most `size` entries after position
    `after` (0: from the first), matching every filter that is set (empty or None:
    any). Times are nanoseconds since the epoch; `until_ns` is exclusive."""

    stream: str
    topic: str
    event_type: str
    since_ns: int | None
    until_ns: int | None
    size: int
    after: int


def parse_query(
    *,
    stream: str,
    topic: str,
    event_type: str,
    since: timestamp_pb2.Timestamp | None,
    until: timestamp_pb2.Timestamp | None,
    page_size: int,
    page_token: str,
) -> Query:
    """Validate a QueryAuditLog request (`event_type` is its `type`); `since` and
    `until` are None when unset.

    Raises:
        InvalidArgument: every bad field at once: `stream` or `type` malformed or
            longer than MAX_FILTER, `topic` not one of TOPICS, `since` or `until` not a
            valid Timestamp, `until` not after `since`, a negative `page_size`, a
            `page_token` this service did not issue.
    """
    found = _filter_violations(stream, topic, event_type)
    since_ns, violation = _instant(since, "since")
    found += violation
    until_ns, violation = _instant(until, "until")
    found += violation
    if since_ns is not None and until_ns is not None and until_ns <= since_ns:
        found.append(FieldViolation("until", "must be after since"))
    page = paging.parse_page(
        page_size, page_token, kind=_PAGE_KIND, valid_cursor=_is_position, also=found
    )
    return Query(
        stream=stream,
        topic=topic,
        event_type=event_type,
        since_ns=since_ns,
        until_ns=until_ns,
        size=page.size,
        after=0 if page.cursor is None else int(page.cursor),
    )


def encode_page_token(position: int) -> str:
    """The opaque token that resumes a query after `position`."""
    return paging.page_token(_PAGE_KIND, str(position))


def _filter_violations(stream: str, topic: str, event_type: str) -> list[FieldViolation]:
    found = []
    if stream and (len(stream) > MAX_FILTER or _STREAM.fullmatch(stream) is None):
        found.append(
            FieldViolation("stream", f"must be printable ASCII, at most {MAX_FILTER} characters")
        )
    if topic and topic not in TOPICS:
        found.append(FieldViolation("topic", f"must be one of {', '.join(TOPICS)}"))
    if event_type and (len(event_type) > MAX_FILTER or _TYPE.fullmatch(event_type) is None):
        found.append(
            FieldViolation("type", "must be a full message name, such as shop.order.v1.OrderPlaced")
        )
    return found


def _instant(
    stamp: timestamp_pb2.Timestamp | None, field: str
) -> tuple[int | None, list[FieldViolation]]:
    """`stamp` in nanoseconds since the epoch (None if unset), or why it is invalid."""
    if stamp is None:
        return None, []
    if not _MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS:
        return None, [FieldViolation(f"{field}.seconds", "must be in years 1 to 9999")]
    if not 0 <= stamp.nanos <= 999_999_999:
        return None, [FieldViolation(f"{field}.nanos", "must be between 0 and 999999999")]
    return clamp_ns(stamp.ToNanoseconds()), []


def clamp_ns(time_ns: int) -> int:
    """`time_ns` within what the log can hold (MIN_NS to MAX_NS). Stored times and
    query bounds are clamped alike, so a filter still means what it says: an event
    stamped in milliseconds by mistake (year 50000) is held at MAX_NS, and found by a
    range that ends after 2262."""
    return min(max(time_ns, MIN_NS), MAX_NS)


def _is_position(cursor: str) -> bool:
    return cursor.isascii() and cursor.isdigit() and len(cursor) <= 18
