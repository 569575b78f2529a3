"""Account rules: what a username and a password may be, how passwords are hashed and
checked, and what a token says. No I/O and no gRPC.

Passwords are hashed with argon2id. Hashing and checking take tens of milliseconds of
CPU by design: callers run them in a worker thread (`asyncio.to_thread`), never on the
event loop, and argon2 releases the GIL while it works.

A login fails the same way, in about the same time, whether the username is unknown
or the password wrong: an unknown username is checked against a decoy hash, so that
no one can learn which usernames exist by timing logins.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from mesh.problems import FieldViolation, InvalidArgument
from services.auth.errors import BadCredentials
from services.common.ids import IdKind

__all__ = [
    "MAX_PASSWORD",
    "MAX_USERNAME",
    "MIN_PASSWORD",
    "USER",
    "USERNAME",
    "Passwords",
    "User",
    "authenticate",
    "check_login",
    "new_credentials",
    "new_user_id",
    "token_claims",
    "username_key",
]

USER = "user"
"""Resource type named in ALREADY_EXISTS details."""

MAX_USERNAME = 64
MIN_PASSWORD = 8
MAX_PASSWORD = 128

USERNAME = IdKind(
    re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{2,63}"),
    "must be 3 to 64 letters, digits or . _ - @ +, starting with a letter or digit",
)
"""What a username may be: ASCII only, so that two names that look alike compare alike
once lower-cased."""


@dataclass(frozen=True)
class User:
    """A registered user. `username` is as registered; it is unique regardless of case."""

    user_id: str
    username: str
    password_hash: str


def new_user_id() -> str:
    """An id for a new user: "usr-" and 16 hex digits (a valid resource id)."""
    return f"usr-{secrets.token_hex(8)}"


def username_key(username: str) -> str:
    """What usernames are compared by: "Alice" and "alice" are one user."""
    return username.lower()


def _password_violations(password: str) -> list[FieldViolation]:
    if not password:
        return [FieldViolation("password", "required")]
    if len(password) < MIN_PASSWORD:
        return [FieldViolation("password", f"must be at least {MIN_PASSWORD} characters")]
    if len(password) > MAX_PASSWORD:
        return [FieldViolation("password", f"must be at most {MAX_PASSWORD} characters")]
    return []


def new_credentials(username: str, password: str) -> tuple[str, str]:
    """The username and password of a Register, if both follow the rules.

    Raises:
        InvalidArgument: on `username`, `password` or both (never quoting the password).
    """
    found = USERNAME.violations(username, "username") + _password_violations(password)
    if found:
        raise InvalidArgument(found)
    return username, password


def check_login(username: str, password: str) -> None:
    """Refuse a Login whose username or password no user could have: empty, or longer
    than the rules allow (so that no unbounded input is looked up or hashed). Anything
    else is checked against the users, and fails as BadCredentials.

    Raises:
        InvalidArgument: on `username`, `password` or both.
    """
    found = []
    if not username:
        found.append(FieldViolation("username", "required"))
    elif len(username) > MAX_USERNAME:
        found.append(FieldViolation("username", f"must be at most {MAX_USERNAME} characters"))
    if not password:
        found.append(FieldViolation("password", "required"))
    elif len(password) > MAX_PASSWORD:
        found.append(FieldViolation("password", f"must be at most {MAX_PASSWORD} characters"))
    if found:
        raise InvalidArgument(found)


class Passwords:
    """argon2id hashes with the given costs (argon2-cffi's defaults unless a test lowers
    them). Every method but `needs_rehash` spends the full cost: call it in a thread.
    Building one spends it once, on the decoy hash."""

    def __init__(
        self,
        *,
        time_cost: int,
        memory_cost: int,
        parallelism: int,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID
        )
        # A hash no password is known for, checked when a username is unknown.
        self._decoy = self._hasher.hash(secrets.token_urlsafe(24))

    def hash(self, password: str) -> str:
        """A new hash of `password`, with a random salt: "$argon2id$v=19$m=...".

        Raises:
            argon2.exceptions.HashingError: if argon2 fails (out of memory, say).
        """
        return self._hasher.hash(password)

    def check(self, stored: str | None, password: str) -> bool:
        """Whether `password` is the one `stored` was made from. With no stored hash (an
        unknown user), `password` is checked against the decoy, taking as long, and
        the answer is False. A stored value that is not an argon2 hash matches nothing."""
        try:
            matched = self._hasher.verify(stored or self._decoy, password)
        except (VerificationError, InvalidHashError):
            return False
        return matched and stored is not None

    def needs_rehash(self, stored: str) -> bool:
        """Whether `stored` was made with other costs (or another variant) than these:
        then it is replaced at the next successful login. Quick: it only parses."""
        try:
            return self._hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return False


def authenticate(user: User | None, password: str, passwords: Passwords) -> User:
    """`user`, if `password` is theirs. Spends one argon2 check even when `user` is
    None (an unknown username). CPU-bound: call it in a thread.

    Raises:
        BadCredentials: the same for an unknown user and a wrong password.
    """
    if not passwords.check(user.password_hash if user else None, password) or user is None:
        raise BadCredentials()
    return user


def token_claims(
    user: User, *, issuer: str, audience: str, now: float, ttl: int
) -> dict[str, object]:
    """The claims of an access token for `user`, valid from `now` for `ttl` seconds:
    `sub` is the user id (stable, unlike a name) and `name` the username as registered.
    Times are whole seconds (NumericDate, RFC 7519 section 2); `jti` is random."""
    issued = int(now)
    return {
        "iss": issuer,
        "aud": audience,
        "sub": user.user_id,
        "name": user.username,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl,
        "jti": secrets.token_urlsafe(16),
    }
