"""`meshctl token <user>`: a valid bearer token for scripts, got the way any client gets
one: over HTTP, from the REST edge's public auth routes (register, then log in).

A user meshctl registers gets a random password, kept in `<state_dir>/users.json`
(0600) so the next `meshctl token` for them logs in again; a user registered some
other way needs `--password`.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mesh.errors import MeshError

__all__ = ["TokenError", "fetch_token"]

_REGISTER = "/v1/auth/register"
_LOGIN = "/v1/auth/login"
_TIMEOUT = 10.0


class TokenError(MeshError):
    """The edge refused to log the user in (or could not be reached)."""


@dataclass(frozen=True)
class _Reply:
    status: int
    body: dict[str, object]


def fetch_token(edge_url: str, user: str, *, password: str | None, state_dir: Path) -> str:
    """A token for `user`, registering them first if the edge does not know them.

    Raises:
        TokenError: with the edge's reason (a wrong password, an unknown user whose
            password meshctl does not keep, the edge unreachable).
    """
    kept = _kept_passwords(state_dir)
    secret = password if password is not None else kept.get(user)
    if secret is None:
        secret = secrets.token_urlsafe(18)
        registered = _post(edge_url + _REGISTER, {"username": user, "password": secret})
        if registered.status == 409:
            raise TokenError(
                f"{user!r} is registered already, with a password meshctl does not keep: "
                "pass --password"
            )
        _check(registered, "register")
        kept[user] = secret
        _keep_passwords(state_dir, kept)
    login = _post(edge_url + _LOGIN, {"username": user, "password": secret})
    if login.status == 401 and password is not None and user not in kept:
        registered = _post(edge_url + _REGISTER, {"username": user, "password": password})
        if registered.status != 409:  # a new user: register them with that password
            _check(registered, "register")
            login = _post(edge_url + _LOGIN, {"username": user, "password": password})
    _check(login, "log in")
    token = login.body.get("accessToken")
    if not isinstance(token, str) or not token:
        raise TokenError(f"the edge's login answer has no accessToken: {login.body}")
    return token


def _check(reply: _Reply, what: str) -> None:
    if reply.status != 200:
        message = reply.body.get("message", reply.body)
        raise TokenError(f"cannot {what}: HTTP {reply.status}: {message}")


def _post(url: str, body: dict[str, str]) -> _Reply:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            return _Reply(response.status, _json(response.read()))
    except urllib.error.HTTPError as error:
        return _Reply(error.code, _json(error.read()))
    except (urllib.error.URLError, OSError) as error:
        raise TokenError(f"cannot reach the edge at {url}: {error}") from error


def _json(raw: bytes) -> dict[str, object]:
    try:
        found = json.loads(raw)
    except ValueError:
        return {"message": raw[:200].decode(errors="replace")}
    return found if isinstance(found, dict) else {"message": str(found)[:200]}


def _users_file(state_dir: Path) -> Path:
    return state_dir / "users.json"


def _kept_passwords(state_dir: Path) -> dict[str, str]:
    try:
        found = json.loads(_users_file(state_dir).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _keep_passwords(state_dir: Path, passwords: dict[str, str]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = _users_file(state_dir)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(passwords, out, indent=2)
    temporary.replace(path)
