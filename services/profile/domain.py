"""Profile rules: what a public profile is, which change each user event makes to one,
and what a valid request is. No I/O, no gRPC, no protobuf.

A profile holds only what anyone may see of a user (no email address) and the version
of the user's stream it reflects. The user service decides and validates; this read
model takes its events as facts, but reads them defensively: an event it cannot make
sense of raises ValueError, which the projection logs and skips.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.ids import USER_ID
from services.common.paging import PageRequest, parse_page

__all__ = [
    "PAGE_KIND",
    "PROFILE",
    "USER_STREAM_PREFIX",
    "Change",
    "Deactivated",
    "Profile",
    "ProfilesQuery",
    "Registered",
    "Renamed",
    "Touched",
    "user_of_stream",
    "validate_list",
    "validate_user_id",
]

PROFILE = "shop.profile.v1.Profile"
"""Resource type named in NOT_FOUND details."""

PAGE_KIND = "profiles"
"""Kind of ListProfiles' page tokens (services.common.paging)."""

USER_STREAM_PREFIX = "user-"
"""The user service's streams are "user-<user_id>"."""


@dataclass(frozen=True)
class Profile:
    """A user's public profile, as of `version` of their stream. Times are epoch
    seconds: `member_since` of the registration, `updated` of the latest event."""

    user_id: str
    username: str
    display_name: str
    active: bool
    member_since: float
    updated: float
    version: int


@dataclass(frozen=True)
class ProfilesQuery:
    """A validated ListProfiles: at most `size` profiles after user id `after` (None:
    from the first), only active users' if `active_only`."""

    size: int
    after: str | None
    active_only: bool


# -- changes: what a user event does to the profile -------------------------------------


@dataclass(frozen=True)
class Registered:
    """The profile starts."""

    user_id: str
    username: str
    display_name: str


@dataclass(frozen=True)
class Renamed:
    """The display name changes."""

    display_name: str


@dataclass(frozen=True)
class Deactivated:
    """The user is marked inactive (and keeps their profile)."""


@dataclass(frozen=True)
class Touched:
    """Nothing public changes (an email address did), but the profile now reflects a
    later version of the user."""


Change = Registered | Renamed | Deactivated | Touched


def user_of_stream(stream: str) -> str:
    """The user id of one of the user service's streams.

    Raises:
        ValueError: `stream` is not "user-" and a user id.
    """
    user_id = stream.removeprefix(USER_STREAM_PREFIX)
    if user_id == stream or USER_ID.pattern.fullmatch(user_id) is None:
        raise ValueError(f"stream {stream[:80]!r} is not a user's")
    return user_id


# -- requests ----------------------------------------------------------------------------


def validate_user_id(user_id: str) -> str:
    """`user_id`, if it is a user id.

    Raises:
        InvalidArgument: on `user_id`.
    """
    return USER_ID.check(user_id, "user_id")


def validate_list(page_size: int, page_token: str, active_only: bool) -> ProfilesQuery:
    """A ProfilesQuery, if the paging is valid (services.common.paging's rules: a
    token's cursor is the last user id of the page before).

    Raises:
        InvalidArgument: listing every bad field.
    """
    page: PageRequest = parse_page(
        page_size,
        page_token,
        kind=PAGE_KIND,
        valid_cursor=lambda cursor: USER_ID.pattern.fullmatch(cursor) is not None,
    )
    return ProfilesQuery(size=page.size, after=page.cursor, active_only=active_only)
