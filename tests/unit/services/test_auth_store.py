"""services.auth.store: users by case-insensitive username, and signing keys with their
rotation, in a tmp_path SQLite file shared like the replicas share it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.problems import AlreadyExists
from services.auth.domain import USER, User
from services.auth.keys import SigningKey
from services.auth.store import AuthStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuthStore]:
    store = AuthStore(tmp_path / "auth.db")
    try:
        yield store
    finally:
        store.close()


def key(kid: str, created_at: float) -> SigningKey:
    return SigningKey(kid, f"PEM of {kid}".encode(), f"n-{kid}", "AQAB", created_at)


def test_the_database_is_in_wal_mode(store: AuthStore) -> None:
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_user_is_found_by_username_in_any_case(store: AuthStore) -> None:
    alice = User("usr-1", "Alice", "$argon2id$hash")
    store.add_user(alice)
    assert store.find_user("Alice") == alice
    assert store.find_user("aLICE") == alice
    assert store.find_user("bob") is None


def test_a_username_is_taken_in_every_case(store: AuthStore) -> None:
    store.add_user(User("usr-1", "Alice", "$argon2id$hash"))
    with pytest.raises(AlreadyExists) as error:
        store.add_user(User("usr-2", "ALICE", "$argon2id$other"))
    assert (error.value.resource_type, error.value.name) == (USER, "ALICE")
    assert store.find_user("alice") == User("usr-1", "Alice", "$argon2id$hash")


def test_a_password_hash_is_replaced(store: AuthStore) -> None:
    store.add_user(User("usr-1", "Alice", "$argon2id$old"))
    store.set_password_hash("usr-1", "$argon2id$new")
    assert store.find_user("alice") == User("usr-1", "Alice", "$argon2id$new")


def test_rotating_stores_the_key_and_retires_the_others(store: AuthStore) -> None:
    assert store.rotate(key("a", 10.0), forget_retired_before=0.0, unless_newer_than=None)
    assert store.rotate(key("b", 20.0), forget_retired_before=0.0, unless_newer_than=None)
    a, b = store.signing_keys()
    assert a == SigningKey("a", b"PEM of a", "n-a", "AQAB", 10.0, retired_at=20.0)
    assert b == key("b", 20.0)


def test_rotating_forgets_keys_retired_long_enough_ago(store: AuthStore) -> None:
    store.rotate(key("a", 10.0), forget_retired_before=0.0, unless_newer_than=None)
    store.rotate(key("b", 20.0), forget_retired_before=0.0, unless_newer_than=None)
    store.rotate(key("c", 30.0), forget_retired_before=20.5, unless_newer_than=None)
    assert [k.kid for k in store.signing_keys()] == ["b", "c"]  # a retired at 20, b at 30


def test_a_conditional_rotation_yields_to_a_newer_key(store: AuthStore) -> None:
    store.rotate(key("a", 10.0), forget_retired_before=0.0, unless_newer_than=None)
    # A replica that found the signing key due if made before 5.0: "a" is newer, so
    # another replica rotated first, and "b" is not stored.
    assert not store.rotate(key("b", 20.0), forget_retired_before=0.0, unless_newer_than=5.0)
    assert [k.kid for k in store.signing_keys()] == ["a"]
    assert store.rotate(key("c", 30.0), forget_retired_before=0.0, unless_newer_than=10.0)
    assert [k.kid for k in store.signing_keys()] == ["a", "c"]


def test_another_instances_write_changes_the_version(store: AuthStore, tmp_path: Path) -> None:
    other = AuthStore(tmp_path / "auth.db")
    try:
        before = store.version()
        other.add_user(User("usr-1", "Alice", "$argon2id$hash"))
        assert store.version() != before
        assert store.find_user("alice") is not None
    finally:
        other.close()
