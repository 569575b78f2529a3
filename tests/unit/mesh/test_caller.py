"""Who a call is from: the end user is believed from the edge's identity alone."""

from __future__ import annotations

from typing import Any

import pytest

from mesh.config import USER_METADATA_KEY
from mesh.server import Caller, CallerOf


class Context:
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def caller_of(*sans: bytes) -> CallerOf:
    return CallerOf(lambda _context: sans)


EDGE = b"spiffe://shop.local/ns/default/sa/edge"
ADMIN = b"spiffe://shop.local/ns/default/sa/admin"


@pytest.mark.parametrize(
    ("sans", "metadata", "expected"),
    [
        ((EDGE,), ((USER_METADATA_KEY, "usr-1"),), Caller("edge", "usr-1")),
        ((EDGE,), (), Caller("edge", None)),
        ((EDGE,), ((USER_METADATA_KEY, ""),), Caller("edge", None)),
        # Anyone else may send the key: it is not believed.
        ((ADMIN,), ((USER_METADATA_KEY, "usr-1"),), Caller("admin", None)),
        ((b"dns:edge", EDGE), ((USER_METADATA_KEY, "usr-2"),), Caller("edge", "usr-2")),
        # Two SPIFFE ids, or none, or a malformed one: no identity at all.
        ((EDGE, ADMIN), ((USER_METADATA_KEY, "usr-1"),), Caller(None, None)),
        ((), ((USER_METADATA_KEY, "usr-1"),), Caller(None, None)),
        ((b"spiffe://shop.local/edge",), ((USER_METADATA_KEY, "usr-1"),), Caller(None, None)),
    ],
)
def test_the_user_is_the_edges_word_alone(
    sans: tuple[bytes, ...], metadata: tuple[tuple[str, str], ...], expected: Caller
) -> None:
    context: Any = Context(metadata)
    found = caller_of(*sans)(context)
    assert found == expected
    assert found.via_edge == (expected.identity == "edge")
