"""services.common.paging: page sizes, and page tokens good only for the kind that issued them."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from mesh.problems import InvalidArgument
from services.common.paging import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    PageRequest,
    page_token,
    parse_page,
)


def any_cursor(cursor: str) -> bool:
    return True


def parse(page_size: int, token: str, kind: str = "thing") -> PageRequest:
    return parse_page(page_size, token, kind=kind, valid_cursor=any_cursor)


def fields_of(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in error.value.violations]


def test_defaults() -> None:
    assert (DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE) == (50, 200)
    assert parse(0, "") == PageRequest(size=50, cursor=None)


@pytest.mark.parametrize(("requested", "size"), [(1, 1), (199, 199), (200, 200), (201, 200)])
def test_sizes_are_capped(requested: int, size: int) -> None:
    assert parse(requested, "").size == size


def test_negative_size_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as error:
        parse(-1, "")
    assert fields_of(error) == ["page_size"]
    assert error.value.violations[0].description == "must not be negative"


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "zzz",  # bad padding
        "é",  # not ASCII
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),  # not UTF-8
        base64.urlsafe_b64encode(b"no kind at all").decode(),
    ],
)
def test_garbage_token_is_invalid(token: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        parse(0, token)
    assert fields_of(error) == ["page_token"]
    assert error.value.violations[0].description == "not a token from a previous response"


@pytest.mark.parametrize(("issued_by", "read_by"), [("order", "product"), ("things", "thing")])
def test_token_of_another_kind_is_invalid(issued_by: str, read_by: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        parse(0, page_token(issued_by, "42"), kind=read_by)
    assert fields_of(error) == ["page_token"]


@pytest.mark.parametrize("cursor", ["sku-9", "42", "a?>", "ab?>", "", "with:colon"])
def test_token_round_trips(cursor: str) -> None:
    token = page_token("thing", cursor)
    assert parse(7, token) == PageRequest(size=7, cursor=cursor)


def test_token_is_url_safe_base64_of_kind_and_cursor() -> None:
    token = page_token("thing", "ab?>")
    assert token == "dGhpbmc6YWI_Pg=="
    assert base64.urlsafe_b64decode(token) == b"thing:ab?>"


def test_cursor_validation_rejects_the_token() -> None:
    seen: list[str] = []

    def only_digits(cursor: str) -> bool:
        seen.append(cursor)
        return cursor.isdigit()

    assert parse_page(0, page_token("thing", "12"), kind="thing", valid_cursor=only_digits) == (
        PageRequest(size=50, cursor="12")
    )
    with pytest.raises(InvalidArgument) as error:
        parse_page(0, page_token("thing", "x"), kind="thing", valid_cursor=only_digits)
    assert fields_of(error) == ["page_token"]
    assert seen == ["12", "x"]


def test_cursor_validation_is_not_asked_without_a_token() -> None:
    def never(cursor: str) -> bool:
        raise AssertionError("valid_cursor called without a token")

    assert parse_page(3, "", kind="thing", valid_cursor=never) == PageRequest(3, None)


def test_negative_size_and_bad_token_are_reported_together() -> None:
    with pytest.raises(InvalidArgument) as error:
        parse(-5, "nope")
    assert fields_of(error) == ["page_size", "page_token"]


def test_page_request_is_frozen() -> None:
    request = parse(0, "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.size = 1  # type: ignore[misc]
