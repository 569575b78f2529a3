"""services.auth.domain: username and password rules, argon2id hashing, login rules and
token claims."""

from __future__ import annotations

from typing import Any

import argon2
import pytest
from pydantic import ValidationError

from mesh.problems import InvalidArgument
from services.auth import domain
from services.auth.errors import BAD_CREDENTIALS, BadCredentials
from services.auth.settings import AuthSettings
from services.common.ids import RESOURCE_ID

FAST = {"time_cost": 1, "memory_cost": 64, "parallelism": 1}
"""argon2 costs low enough for unit tests (the settings allow them, the defaults are not)."""


@pytest.fixture(scope="module")
def passwords() -> domain.Passwords:
    return domain.Passwords(**FAST)


def fields_of(error: pytest.ExceptionInfo[InvalidArgument]) -> set[str]:
    return {v.field for v in error.value.violations}


@pytest.mark.parametrize(
    "username", ["bob", "Bob", "a.b_c-d@e+f", "1ab", "x" * 64, "alice@example.com"]
)
def test_good_usernames_are_accepted(username: str) -> None:
    assert domain.new_credentials(username, "long enough") == (username, "long enough")


@pytest.mark.parametrize(
    "username",
    ["", "ab", "x" * 65, "_bob", ".bob", "-bob", "@bob", "+bob", "bo b", "bøb", "bob\n", "b/ob"],
)
def test_bad_usernames_are_rejected(username: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.new_credentials(username, "long enough")
    assert fields_of(error) == {"username"}


@pytest.mark.parametrize(
    ("length", "ok"), [(0, False), (7, False), (8, True), (128, True), (129, False)]
)
def test_password_length(length: int, ok: bool) -> None:
    password = "p" * length
    if ok:
        assert domain.new_credentials("bob", password) == ("bob", password)
    else:
        with pytest.raises(InvalidArgument) as error:
            domain.new_credentials("bob", password)
        assert fields_of(error) == {"password"}


def test_both_bad_fields_are_reported_at_once_and_the_password_is_never_quoted() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.new_credentials("_x", "secret!")
    assert fields_of(error) == {"username", "password"}
    assert "secret!" not in str(error.value)
    assert "secret!" not in str(error.value.to_status())


def test_usernames_compare_regardless_of_case() -> None:
    assert domain.username_key("Alice@Example.COM") == domain.username_key("alice@example.com")


def test_user_ids_are_resource_ids() -> None:
    first, second = domain.new_user_id(), domain.new_user_id()
    assert first != second
    assert RESOURCE_ID.violations(first, "user_id") == []


@pytest.mark.parametrize(
    ("username", "password", "fields"),
    [
        ("", "whatever1", {"username"}),
        ("u" * 65, "whatever1", {"username"}),
        ("bob", "", {"password"}),
        ("bob", "p" * 129, {"password"}),
        ("", "", {"username", "password"}),
    ],
)
def test_a_login_no_user_could_have_is_invalid(
    username: str, password: str, fields: set[str]
) -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.check_login(username, password)
    assert fields_of(error) == fields


@pytest.mark.parametrize("username", ["no such_shape!", "ab", "Bob"])
def test_a_login_of_any_bounded_shape_goes_on_to_the_users(username: str) -> None:
    domain.check_login(username, "short")  # no error: it fails later as BadCredentials


def test_hashes_are_argon2id_and_salted(passwords: domain.Passwords) -> None:
    first, second = passwords.hash("correct horse"), passwords.hash("correct horse")
    assert first.startswith("$argon2id$")
    assert first != second
    assert "correct horse" not in first


def test_the_default_costs_are_argon2ids_recommended_ones() -> None:
    settings = AuthSettings()
    assert (settings.argon2_time_cost, settings.argon2_memory_cost) == (3, 65536)
    assert settings.argon2_parallelism == 4


def test_too_little_memory_per_lane_is_refused() -> None:
    with pytest.raises(ValidationError):
        AuthSettings(argon2_memory_cost=16, argon2_parallelism=4)


def test_check(passwords: domain.Passwords) -> None:
    stored = passwords.hash("correct horse")
    assert passwords.check(stored, "correct horse")
    assert not passwords.check(stored, "Correct horse")
    assert not passwords.check(None, "correct horse")
    assert not passwords.check("not a hash", "correct horse")


def test_a_hash_with_other_costs_needs_a_rehash(passwords: domain.Passwords) -> None:
    other = domain.Passwords(time_cost=2, memory_cost=64, parallelism=1)
    assert not passwords.needs_rehash(passwords.hash("correct horse"))
    assert passwords.needs_rehash(other.hash("correct horse"))
    assert not passwords.needs_rehash("not a hash")


def user(passwords: domain.Passwords, password: str = "correct horse") -> domain.User:
    return domain.User("usr-1", "Alice", passwords.hash(password))


def test_authenticate_returns_the_user(passwords: domain.Passwords) -> None:
    alice = user(passwords)
    assert domain.authenticate(alice, "correct horse", passwords) is alice


def count_verifies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hashes argon2 verifies from now on."""
    verified: list[str] = []
    real = argon2.PasswordHasher.verify

    def spy(self: argon2.PasswordHasher, hash: str | bytes, password: str | bytes) -> Any:
        verified.append(str(hash))
        return real(self, hash, password)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", spy)
    return verified


def test_a_wrong_password_and_an_unknown_user_fail_alike(
    passwords: domain.Passwords, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = user(passwords)
    verified = count_verifies(monkeypatch)

    with pytest.raises(BadCredentials) as wrong:
        domain.authenticate(alice, "wrong horse", passwords)
    with pytest.raises(BadCredentials) as unknown:
        domain.authenticate(None, "wrong horse", passwords)

    assert wrong.value.message == unknown.value.message == BAD_CREDENTIALS
    assert wrong.value.code == unknown.value.code
    assert wrong.value.code.name == "UNAUTHENTICATED"
    # The unknown user also cost one argon2 verify, against an argon2id decoy with
    # the same costs, so timing tells nothing.
    assert len(verified) == 2
    assert verified[0] == alice.password_hash
    assert verified[1].startswith("$argon2id$v=19$m=64,t=1,p=1$")


def test_token_claims() -> None:
    alice = domain.User("usr-1", "Alice", "$argon2id$...")
    claims = domain.token_claims(alice, issuer="https://i", audience="aud", now=1000.7, ttl=900)
    jti = claims.pop("jti")
    assert isinstance(jti, str)
    assert len(jti) >= 16
    assert claims == {
        "iss": "https://i",
        "aud": "aud",
        "sub": "usr-1",
        "name": "Alice",
        "iat": 1000,
        "nbf": 1000,
        "exp": 1900,
    }
    again = domain.token_claims(alice, issuer="https://i", audience="aud", now=1000.7, ttl=900)
    assert again["jti"] != jti
