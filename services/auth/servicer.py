"""AuthService over gRPC: decode the request, apply the account rules, encode.

Failures are raised as mesh.problems exceptions (and auth's BadCredentials); the mesh
server interceptor turns them into statuses with details. Password hashing, key
generation and writes run in worker threads, so that a login never stalls the other
calls of the instance.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import grpc
from shop.auth.v1 import auth_pb2, auth_pb2_grpc

from mesh.problems import AlreadyExists
from services.auth import domain
from services.auth.keys import KeyRing
from services.auth.settings import AuthSettings
from services.auth.store import AuthStore

__all__ = ["TOKEN_TYPE", "AuthServicer"]

Context = grpc.aio.ServicerContext[Any, Any]

TOKEN_TYPE = "Bearer"
"""What LoginResponse.token_type says (RFC 6750)."""

log = logging.getLogger("services.auth")


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """Users and tokens, backed by an AuthStore and the KeyRing on it."""

    def __init__(
        self,
        store: AuthStore,
        passwords: domain.Passwords,
        keys: KeyRing,
        settings: AuthSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._passwords = passwords
        self._keys = keys
        self._settings = settings
        self._clock = clock

    async def Register(
        self, request: auth_pb2.RegisterRequest, context: Context
    ) -> auth_pb2.RegisterResponse:
        username, password = domain.new_credentials(request.username, request.password)
        if self._store.find_user(username) is not None:  # no hash spent on a taken name
            raise AlreadyExists(domain.USER, username)
        password_hash = await asyncio.to_thread(self._passwords.hash, password)
        user = domain.User(
            user_id=domain.new_user_id(), username=username, password_hash=password_hash
        )
        await asyncio.to_thread(self._store.add_user, user)  # AlreadyExists if it raced
        return auth_pb2.RegisterResponse(user_id=user.user_id)

    async def Login(
        self, request: auth_pb2.LoginRequest, context: Context
    ) -> auth_pb2.LoginResponse:
        domain.check_login(request.username, request.password)
        found = self._store.find_user(request.username)
        user = await asyncio.to_thread(
            domain.authenticate, found, request.password, self._passwords
        )
        if self._passwords.needs_rehash(user.password_hash):
            await self._rehash(user, request.password)
        settings = self._settings
        claims = domain.token_claims(
            user,
            issuer=settings.issuer,
            audience=settings.audience,
            now=self._clock(),
            ttl=settings.token_ttl,
        )
        token = await self._keys.sign(claims)
        return auth_pb2.LoginResponse(
            access_token=token, token_type=TOKEN_TYPE, expires_in=settings.token_ttl
        )

    async def _rehash(self, user: domain.User, password: str) -> None:
        """Store a hash of `password` with the current costs. Best effort: the login it
        follows succeeds anyway, and the next one tries again."""
        password_hash = await asyncio.to_thread(self._passwords.hash, password)
        try:
            await asyncio.to_thread(self._store.set_password_hash, user.user_id, password_hash)
        except sqlite3.OperationalError as error:
            log.warning("could not store a rehashed password for %s: %s", user.user_id, error)

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: Context
    ) -> auth_pb2.GetJwksResponse:
        return auth_pb2.GetJwksResponse(
            keys=[auth_pb2.JsonWebKey(**key.jwk()) for key in self._keys.published()]
        )

    async def RotateSigningKey(
        self, request: auth_pb2.RotateSigningKeyRequest, context: Context
    ) -> auth_pb2.RotateSigningKeyResponse:
        kid = await self._keys.rotate()
        log.info("rotated the signing key", extra={"kid": kid})
        return auth_pb2.RotateSigningKeyResponse(kid=kid)
