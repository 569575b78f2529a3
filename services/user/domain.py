"""User rules: what a user is, the events that change one, and which events a command
leads to. No I/O, no gRPC, no protobuf.

A user is the fold of their events: `fold(None, UserRegistered(...))` makes one, and
each later event gives the next state. A command is validated first (`validate_*`,
every bad field at once), then decided against the current state (`decide`), which
returns the events to append: none when the user already is as the command asks (so
a repeated command changes nothing), or raises if the state refuses it. Whether the
state the command was decided on is still current (the expected version) is the
store's question, not these rules'.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace

from mesh.problems import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from services.common.ids import USER_ID, IdKind
from services.common.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

__all__ = [
    "MAX_DISPLAY_NAME",
    "MAX_EMAIL",
    "MAX_REASON",
    "USER",
    "USERNAME",
    "USER_ID",
    "USER_STATUS",
    "ChangeDisplayName",
    "ChangeEmail",
    "Command",
    "DeactivateUser",
    "DisplayNameChanged",
    "EmailChanged",
    "Event",
    "EventsPage",
    "RegisterUser",
    "User",
    "UserDeactivated",
    "UserRegistered",
    "UserStatus",
    "decide",
    "fold",
    "replay",
    "validate_change_display_name",
    "validate_change_email",
    "validate_deactivate",
    "validate_list_events",
    "validate_register",
    "validate_user_id",
]

USER = "shop.user.v1.User"
"""Resource type named in NOT_FOUND and ALREADY_EXISTS details."""

USER_STATUS = "USER_STATUS"
"""PreconditionViolation type of a change to a deactivated user."""

MAX_EMAIL = 254
"""Characters of the longest email address (RFC 5321's limit on a path, less the <>)."""
MAX_DISPLAY_NAME = 100
MAX_REASON = 200

USERNAME = IdKind(
    re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{2,63}"),
    "must be 3 to 64 letters, digits or . _ - @ +, starting with a letter or digit",
)
"""What a username may be: the auth service's rule (services.auth.domain.USERNAME; a
service may not import another's package, so a unit test keeps the two equal)."""

# An RFC 5322 dot-atom local part and a domain of LDH labels with at least one dot:
# ASCII only, so that an address never holds a look-alike or a control character.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"(?=[^@]{{1,64}}@){_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+")
_EMAIL_RULE = f"must be an email address: local-part@domain, ASCII, at most {MAX_EMAIL} characters"
# C0 and C1 controls, line and paragraph separators, and the bidirectional controls
# (which would let a name reorder the text shown after it).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


class UserStatus(enum.Enum):
    """Whether a user can still be changed."""

    ACTIVE = 1
    DEACTIVATED = 2


@dataclass(frozen=True)
class User:
    """A registered user, as their events so far leave them."""

    user_id: str
    username: str
    email: str
    display_name: str
    status: UserStatus = UserStatus.ACTIVE
    deactivation_reason: str = ""


# -- events: what happened to a user, as stored (services.user.store encodes them) -----


@dataclass(frozen=True)
class UserRegistered:
    user_id: str
    username: str
    email: str
    display_name: str


@dataclass(frozen=True)
class EmailChanged:
    email: str


@dataclass(frozen=True)
class DisplayNameChanged:
    display_name: str


@dataclass(frozen=True)
class UserDeactivated:
    reason: str


Event = UserRegistered | EmailChanged | DisplayNameChanged | UserDeactivated


def fold(state: User | None, event: Event) -> User | None:
    """The user after `event`, given the user before it (None: not registered yet).
    Events are facts, applied as they are: the rules were checked when they were
    decided.

    Raises:
        ValueError: the stream is not one `decide` could have made (a change before the
            registration, a second registration).
    """
    if isinstance(event, UserRegistered):
        if state is not None:
            raise ValueError(f"user {state.user_id} is registered twice")
        return User(
            user_id=event.user_id,
            username=event.username,
            email=event.email,
            display_name=event.display_name,
        )
    if state is None:
        raise ValueError(f"a {type(event).__name__} before the user's registration")
    if isinstance(event, EmailChanged):
        return replace(state, email=event.email)
    if isinstance(event, DisplayNameChanged):
        return replace(state, display_name=event.display_name)
    return replace(state, status=UserStatus.DEACTIVATED, deactivation_reason=event.reason)


def replay(events: list[Event]) -> User | None:
    """The user that `events`, from the first, make."""
    state: User | None = None
    for event in events:
        state = fold(state, event)
    return state


# -- commands: what a caller asks for, validated ---------------------------------------


@dataclass(frozen=True)
class RegisterUser:
    user_id: str
    username: str
    email: str
    display_name: str


@dataclass(frozen=True)
class ChangeEmail:
    user_id: str
    email: str
    expected_version: int


@dataclass(frozen=True)
class ChangeDisplayName:
    user_id: str
    display_name: str
    expected_version: int


@dataclass(frozen=True)
class DeactivateUser:
    user_id: str
    reason: str
    expected_version: int


Command = RegisterUser | ChangeEmail | ChangeDisplayName | DeactivateUser


@dataclass(frozen=True)
class EventsPage:
    """A validated ListUserEvents: at most `size` events from version `from_version`."""

    user_id: str
    from_version: int
    size: int


def _email_violations(email: str, field: str = "email") -> list[FieldViolation]:
    if not email:
        return [FieldViolation(field, "required")]
    if len(email) > MAX_EMAIL or _EMAIL.fullmatch(email) is None:
        return [FieldViolation(field, _EMAIL_RULE)]
    return []


def _display_name_violations(name: str, field: str = "display_name") -> list[FieldViolation]:
    if not name:
        return [FieldViolation(field, "required")]
    if len(name) > MAX_DISPLAY_NAME:
        return [FieldViolation(field, f"must be at most {MAX_DISPLAY_NAME} characters")]
    if not name.strip():
        return [FieldViolation(field, "must not be only spaces")]
    if _CONTROL.search(name):
        return [FieldViolation(field, "must not hold control characters")]
    return []


def _reason_violations(reason: str, field: str = "reason") -> list[FieldViolation]:
    if len(reason) > MAX_REASON:
        return [FieldViolation(field, f"must be at most {MAX_REASON} characters")]
    if _CONTROL.search(reason):
        return [FieldViolation(field, "must not hold control characters")]
    return []


def _version_violations(version: int, field: str) -> list[FieldViolation]:
    return [FieldViolation(field, "must not be negative")] if version < 0 else []


def _checked(found: list[FieldViolation]) -> None:
    if found:
        raise InvalidArgument(found)


def validate_user_id(user_id: str) -> str:
    """`user_id`, if it is a user id.

    Raises:
        InvalidArgument: on `user_id`.
    """
    return USER_ID.check(user_id, "user_id")


def validate_register(user_id: str, username: str, email: str, display_name: str) -> RegisterUser:
    """A RegisterUser, if every field follows the rules.

    Raises:
        InvalidArgument: listing every bad field.
    """
    _checked(
        USER_ID.violations(user_id, "user_id")
        + USERNAME.violations(username, "username")
        + _email_violations(email)
        + _display_name_violations(display_name)
    )
    return RegisterUser(user_id, username, email, display_name)


def validate_change_email(user_id: str, email: str, expected_version: int) -> ChangeEmail:
    """A ChangeEmail, if every field follows the rules.

    Raises:
        InvalidArgument: listing every bad field.
    """
    _checked(
        USER_ID.violations(user_id, "user_id")
        + _email_violations(email)
        + _version_violations(expected_version, "expected_version")
    )
    return ChangeEmail(user_id, email, expected_version)


def validate_change_display_name(
    user_id: str, display_name: str, expected_version: int
) -> ChangeDisplayName:
    """A ChangeDisplayName, if every field follows the rules.

    Raises:
        InvalidArgument: listing every bad field.
    """
    _checked(
        USER_ID.violations(user_id, "user_id")
        + _display_name_violations(display_name)
        + _version_violations(expected_version, "expected_version")
    )
    return ChangeDisplayName(user_id, display_name, expected_version)


def validate_deactivate(user_id: str, reason: str, expected_version: int) -> DeactivateUser:
    """A DeactivateUser, if every field follows the rules (`reason` may be empty).

    Raises:
        InvalidArgument: listing every bad field.
    """
    _checked(
        USER_ID.violations(user_id, "user_id")
        + _reason_violations(reason)
        + _version_violations(expected_version, "expected_version")
    )
    return DeactivateUser(user_id, reason, expected_version)


def validate_list_events(user_id: str, from_version: int, page_size: int) -> EventsPage:
    """An EventsPage, if every field follows the rules: `from_version` 0 is 1, a
    `page_size` of 0 is DEFAULT_PAGE_SIZE, and one above MAX_PAGE_SIZE is cut to it.

    Raises:
        InvalidArgument: listing every bad field.
    """
    _checked(
        USER_ID.violations(user_id, "user_id")
        + _version_violations(from_version, "from_version")
        + _version_violations(page_size, "page_size")
    )
    size = DEFAULT_PAGE_SIZE if page_size == 0 else min(page_size, MAX_PAGE_SIZE)
    return EventsPage(user_id, max(from_version, 1), size)


# -- deciding --------------------------------------------------------------------------


def decide(state: User | None, command: Command) -> tuple[Event, ...]:
    """The events that carry out `command` on the user `state` (None: not registered):
    none when the user already is as it asks.

    Raises:
        AlreadyExists: a RegisterUser for a user registered with other details.
        NotFound: a change to a user who is not registered.
        FailedPrecondition: a change to a deactivated user (type USER_STATUS).
    """
    if isinstance(command, RegisterUser):
        return _register(state, command)
    if state is None:
        raise NotFound(USER, command.user_id)
    if isinstance(command, DeactivateUser):
        # Already deactivated is what was asked: a repeat changes nothing, not even
        # the reason.
        if state.status is UserStatus.DEACTIVATED:
            return ()
        return (UserDeactivated(command.reason),)
    if state.status is UserStatus.DEACTIVATED:
        raise FailedPrecondition(
            f"user {state.user_id} is deactivated and cannot be changed",
            [PreconditionViolation(USER_STATUS, state.user_id, "the user is deactivated")],
        )
    if isinstance(command, ChangeEmail):
        return () if state.email == command.email else (EmailChanged(command.email),)
    if state.display_name == command.display_name:
        return ()
    return (DisplayNameChanged(command.display_name),)


def _register(state: User | None, command: RegisterUser) -> tuple[Event, ...]:
    if state is None:
        return (
            UserRegistered(command.user_id, command.username, command.email, command.display_name),
        )
    same = (state.username, state.email, state.display_name) == (
        command.username,
        command.email,
        command.display_name,
    )
    if same and state.status is UserStatus.ACTIVE:
        return ()  # a repeated registration: the user is as it asks
    raise AlreadyExists(USER, command.user_id, "the user is registered with other details")
