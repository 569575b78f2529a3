"""services.user.domain: the fold, the commands' validation, and what each decides."""

from __future__ import annotations

import pytest

from mesh.problems import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.auth import domain as auth_domain
from services.user import domain
from services.user.domain import (
    ChangeDisplayName,
    ChangeEmail,
    DeactivateUser,
    DisplayNameChanged,
    EmailChanged,
    RegisterUser,
    User,
    UserDeactivated,
    UserRegistered,
    UserStatus,
    decide,
    fold,
    replay,
)

ADA = "usr-00000000000000ad"
REGISTERED = UserRegistered(ADA, "ada", "ada@example.com", "Ada")
USER = User(ADA, "ada", "ada@example.com", "Ada")
GONE = User(ADA, "ada", "ada@example.com", "Ada", UserStatus.DEACTIVATED, "left")


def fields(error: InvalidArgument) -> list[str]:
    return [violation.field for violation in error.violations]


# -- fold --------------------------------------------------------------------------------


def test_a_registration_makes_a_user_and_each_event_changes_one_thing() -> None:
    state = fold(None, REGISTERED)
    assert state == USER
    state = fold(state, EmailChanged("lovelace@example.org"))
    assert state == User(ADA, "ada", "lovelace@example.org", "Ada")
    state = fold(state, DisplayNameChanged("Countess"))
    assert state == User(ADA, "ada", "lovelace@example.org", "Countess")
    state = fold(state, UserDeactivated("asked to"))
    assert state == User(
        ADA, "ada", "lovelace@example.org", "Countess", UserStatus.DEACTIVATED, "asked to"
    )


def test_replay_is_the_fold_from_nothing() -> None:
    events: list[domain.Event] = [
        REGISTERED,
        EmailChanged("a@b.example"),
        EmailChanged("c@d.example"),
    ]
    assert replay(events) == User(ADA, "ada", "c@d.example", "Ada")
    assert replay([]) is None


@pytest.mark.parametrize(
    ("state", "event"),
    [(None, EmailChanged("a@b.example")), (USER, REGISTERED), (None, UserDeactivated(""))],
    ids=["change-first", "registered-twice", "deactivated-first"],
)
def test_a_stream_decide_could_not_have_made_does_not_fold(
    state: User | None, event: domain.Event
) -> None:
    with pytest.raises(ValueError, match=r"registration|registered twice"):
        fold(state, event)


# -- validation --------------------------------------------------------------------------


def test_a_good_registration_passes() -> None:
    command = domain.validate_register(ADA, "ada.l+x@y", "ada@example.com", "Ada Lovelace")
    assert command == RegisterUser(ADA, "ada.l+x@y", "ada@example.com", "Ada Lovelace")


def test_every_bad_field_of_a_registration_is_listed() -> None:
    with pytest.raises(InvalidArgument) as caught:
        domain.validate_register("usr-XYZ", "_ada", "ada", "")
    assert fields(caught.value) == ["user_id", "username", "email", "display_name"]
    with pytest.raises(InvalidArgument) as caught:
        domain.validate_register("", "", "", "")
    assert {v.description for v in caught.value.violations} == {"required"}


@pytest.mark.parametrize(
    "user_id",
    ["usr-0123456789abcdef0", "usr-0123456789ABCDEF", "usr_0123456789abcdef", "0123456789abcdef"],
)
def test_a_user_id_is_usr_and_16_lowercase_hex_digits(user_id: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        domain.validate_user_id(user_id)
    assert fields(caught.value) == ["user_id"]
    assert domain.validate_user_id("usr-0123456789abcdef") == "usr-0123456789abcdef"


def test_user_ids_and_usernames_follow_the_auth_services_rules() -> None:
    # A service may not import another's package; this test keeps the copies equal.
    assert domain.USERNAME == auth_domain.USERNAME
    assert domain.USER_ID.pattern.fullmatch(auth_domain.new_user_id())


@pytest.mark.parametrize(
    "email",
    [
        "ada@example.com",
        "ada.lovelace+shop@mail.example.co.uk",
        "o'brien@x-y.example",
        f"{'a' * 64}@example.com",
        f"a@{'b' * 63}.{'c' * 63}.{'d' * 63}.{'e' * 60}",  # 254 characters
    ],
)
def test_good_email_addresses(email: str) -> None:
    assert domain.validate_change_email(ADA, email, 0).email == email


@pytest.mark.parametrize(
    "email",
    [
        "ada",
        "ada@",
        "@example.com",
        "ada@example",
        "ada@@example.com",
        "ada lovelace@example.com",
        "ada@exa mple.com",
        ".ada@example.com",
        "ada.@example.com",
        "ada..l@example.com",
        "ada@-example.com",
        "ada@example.com\n",
        "adä@example.com",
        "ada@exämple.com",
        f"{'a' * 65}@example.com",
        f"a@{'b' * 63}.{'c' * 63}.{'d' * 63}.{'e' * 61}",  # 255 characters
        "a" * 10_000 + "@example.com",
    ],
)
def test_bad_email_addresses(email: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        domain.validate_change_email(ADA, email, 0)
    assert fields(caught.value) == ["email"]
    assert len(caught.value.message) < 200  # the address is never echoed


@pytest.mark.parametrize("name", ["A", "Ada Lovelace", "a" * 100, "Ada 🧮", "Zoë", "李"])
def test_good_display_names(name: str) -> None:
    assert domain.validate_change_display_name(ADA, name, 3) == ChangeDisplayName(ADA, name, 3)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "required"),
        ("a" * 101, "at most 100"),
        ("   ", "only spaces"),
        ("Ada\nLovelace", "control"),
        ("Ada\x00", "control"),
        ("Ada\u202eecalevol", "control"),  # a right-to-left override
        ("Ada\u2028", "control"),
    ],
)
def test_bad_display_names(name: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        domain.validate_change_display_name(ADA, name, 0)
    [violation] = caught.value.violations
    assert violation.field == "display_name"
    assert why in violation.description


def test_a_deactivation_reason_is_optional_and_bounded() -> None:
    assert domain.validate_deactivate(ADA, "", 0) == DeactivateUser(ADA, "", 0)
    assert domain.validate_deactivate(ADA, "r" * 200, 1).reason == "r" * 200
    for reason in ("r" * 201, "bad\x1b[31m"):
        with pytest.raises(InvalidArgument) as caught:
            domain.validate_deactivate(ADA, reason, 0)
        assert fields(caught.value) == ["reason"]


def test_a_negative_version_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as caught:
        domain.validate_change_email("", "nope", -1)
    assert fields(caught.value) == ["user_id", "email", "expected_version"]
    with pytest.raises(InvalidArgument) as caught:
        domain.validate_list_events(ADA, -1, -5)
    assert fields(caught.value) == ["from_version", "page_size"]


@pytest.mark.parametrize(
    ("from_version", "page_size", "expected"),
    [(0, 0, (1, 50)), (1, 10, (1, 10)), (7, 1000, (7, 200))],
)
def test_a_page_of_events_starts_at_1_and_has_a_bounded_size(
    from_version: int, page_size: int, expected: tuple[int, int]
) -> None:
    page = domain.validate_list_events(ADA, from_version, page_size)
    assert (page.from_version, page.size) == expected


# -- deciding ----------------------------------------------------------------------------


def test_registering_a_new_user_decides_one_event() -> None:
    command = RegisterUser(ADA, "ada", "ada@example.com", "Ada")
    assert decide(None, command) == (REGISTERED,)


def test_registering_again_the_same_is_nothing_and_with_other_details_exists() -> None:
    assert decide(USER, RegisterUser(ADA, "ada", "ada@example.com", "Ada")) == ()
    with pytest.raises(AlreadyExists) as caught:
        decide(USER, RegisterUser(ADA, "ada", "other@example.com", "Ada"))
    assert (caught.value.resource_type, caught.value.name) == (domain.USER, ADA)
    with pytest.raises(AlreadyExists):
        decide(GONE, RegisterUser(ADA, "ada", "ada@example.com", "Ada"))


def test_changes_decide_their_event_and_nothing_when_already_so() -> None:
    assert decide(USER, ChangeEmail(ADA, "new@example.com", 1)) == (
        EmailChanged("new@example.com"),
    )
    assert decide(USER, ChangeEmail(ADA, "ada@example.com", 1)) == ()
    assert decide(USER, ChangeDisplayName(ADA, "Countess", 0)) == (DisplayNameChanged("Countess"),)
    assert decide(USER, ChangeDisplayName(ADA, "Ada", 0)) == ()
    assert decide(USER, DeactivateUser(ADA, "left", 0)) == (UserDeactivated("left"),)


@pytest.mark.parametrize(
    "command",
    [
        ChangeEmail(ADA, "new@example.com", 0),
        ChangeDisplayName(ADA, "X", 0),
        DeactivateUser(ADA, "", 0),
    ],
)
def test_a_change_to_an_unknown_user_is_not_found(command: domain.Command) -> None:
    with pytest.raises(NotFound) as caught:
        decide(None, command)
    assert (caught.value.resource_type, caught.value.name) == (domain.USER, ADA)


@pytest.mark.parametrize(
    "command",
    [
        ChangeEmail(ADA, "new@example.com", 0),
        ChangeEmail(ADA, GONE.email, 0),
        ChangeDisplayName(ADA, "X", 0),
    ],
)
def test_a_deactivated_user_refuses_changes(command: domain.Command) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        decide(GONE, command)
    [violation] = caught.value.violations
    assert (violation.type, violation.subject) == (domain.USER_STATUS, ADA)


def test_deactivating_a_deactivated_user_again_changes_nothing() -> None:
    assert decide(GONE, DeactivateUser(ADA, "another reason", 0)) == ()
