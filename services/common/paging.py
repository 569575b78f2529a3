"""Paging rules shared by every List method: page sizes and opaque page tokens.

All services page the same way (0 means the default size, larger sizes are capped, a
token is only good for the service that issued it), and callers rely on that, so the
rules live here once. A service supplies only its token `kind` and what a valid cursor
looks like.

A token is the URL-safe base64 of "<kind>:<cursor>": opaque to callers, and a token
from another service (another kind) is rejected rather than misread.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mesh.problems import FieldViolation, InvalidArgument

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "MAX_PAGE_TOKEN",
    "PageRequest",
    "page_token",
    "parse_page",
]

DEFAULT_PAGE_SIZE = 50
"""The page size used when a request asks for 0 (unset)."""

MAX_PAGE_SIZE = 200
"""Larger requested page sizes are cut down to this."""

MAX_PAGE_TOKEN = 256
"""Characters of the longest token a service issues (a kind and a cursor of at most 64
characters, in base64), with room to spare; longer ones are refused undecoded."""


@dataclass(frozen=True)
class PageRequest:
    """One validated page request: at most `size` items, continuing from `cursor`
    (None: from the start)."""

    size: int
    cursor: str | None


def parse_page(
    page_size: int,
    page_token: str,
    *,
    kind: str,
    valid_cursor: Callable[[str], bool],
    also: Sequence[FieldViolation] = (),
) -> PageRequest:
    """Validate a List request's paging. `kind` names the service's tokens;
    `valid_cursor` says whether a decoded cursor is one the service could have issued;
    `also` holds what the caller found wrong with the request's other fields.

    Raises:
        InvalidArgument: every bad field at once: `also`, then `page_size` if negative,
            `page_token` if it is longer than MAX_PAGE_TOKEN or not a token of this
            kind with a valid cursor.
    """
    found = list(also)
    if page_size < 0:
        found.append(FieldViolation("page_size", "must not be negative"))
    cursor = None
    if len(page_token) > MAX_PAGE_TOKEN:
        found.append(FieldViolation("page_token", f"must be at most {MAX_PAGE_TOKEN} characters"))
    elif page_token:
        cursor = _decode(kind, page_token)
        if cursor is None or not valid_cursor(cursor):
            found.append(FieldViolation("page_token", "not a token from a previous response"))
    if found:
        raise InvalidArgument(found)
    size = DEFAULT_PAGE_SIZE if page_size == 0 else min(page_size, MAX_PAGE_SIZE)
    return PageRequest(size=size, cursor=cursor)


def page_token(kind: str, cursor: str) -> str:
    """The opaque token that resumes a listing of `kind` at `cursor`."""
    return base64.urlsafe_b64encode(f"{kind}:{cursor}".encode()).decode()


def _decode(kind: str, token: str) -> str | None:
    try:
        text = base64.b64decode(token, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    prefix = f"{kind}:"
    return text.removeprefix(prefix) if text.startswith(prefix) else None
