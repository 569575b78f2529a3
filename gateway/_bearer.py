"""Bearer tokens at the edge: which methods need one (declared, as method patterns),
and the check of the token a request carries (RFC 6750's 401 and WWW-Authenticate)."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from gateway._descriptors import RpcMethod
from gateway._errors import EdgeError
from gateway._handler import Authenticate
from gateway._http import Request
from gateway._jwt import JwksUnavailable, TokenRejected, TokenVerifier
from gateway._protect import RateLimiter, retry_after_header

__all__ = ["MethodPatterns", "bearer_authenticator"]

_REALM = 'Bearer realm="shopmesh"'


class MethodPatterns:
    """Methods named as mesh.yaml's authz rules name them: "pkg.Service/Method",
    "pkg.Service/*" or "*"."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self._all = "*" in self.patterns
        self._exact = frozenset(p for p in self.patterns if not p.endswith("/*"))
        self._services = frozenset(p[:-2] for p in self.patterns if p.endswith("/*"))

    def __call__(self, method: RpcMethod) -> bool:
        return self._all or method.full_name in self._exact or method.service in self._services


def bearer_authenticator(
    verifier: TokenVerifier,
    requires_token: MethodPatterns,
    *,
    per_user: RateLimiter | None = None,
) -> Authenticate:
    """Checks a request's `Authorization: Bearer` token: required on the methods
    `requires_token` names, checked wherever one is sent. Each user's calls then take
    a token from their own bucket of `per_user`."""

    async def authenticate(method: RpcMethod, request: Request) -> str | None:
        header = request.headers.get("authorization")
        if header is None:
            if requires_token(method):
                raise _unauthenticated(f"{method.full_name} needs a bearer token", _REALM)
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthenticated(
                "Authorization must be 'Bearer <token>'", f'{_REALM}, error="invalid_request"'
            )
        try:
            verified = await verifier.verify(token.strip())
        except TokenRejected as error:
            challenge = f'{_REALM}, error="{error.error}", error_description="{error.reason}"'
            raise _unauthenticated(f"token refused: {error.reason}", challenge) from None
        except JwksUnavailable as error:
            raise EdgeError(
                grpc.StatusCode.UNAVAILABLE, f"cannot check tokens now: {error}"
            ) from None
        if per_user is not None:
            wait = per_user.acquire(verified.subject)
            if wait > 0:
                raise EdgeError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "too many requests from this user",
                    headers=[("retry-after", retry_after_header(wait))],
                )
        return verified.subject

    return authenticate


def _unauthenticated(message: str, challenge: str) -> EdgeError:
    return EdgeError(
        grpc.StatusCode.UNAUTHENTICATED, message, headers=[("www-authenticate", challenge)]
    )
