"""The authorisation table: which caller identities may call which methods.

Pure logic, no gRPC: the server interceptor hands it the caller's SPIFFE id (from the
TLS peer certificate) and the full method name ("/pkg.Service/Method").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mesh.config import AuthzRule
from mesh.errors import IdentityError
from mesh.identity import SpiffeId

__all__ = ["AuthzTable", "Decision"]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    caller: str  # the SPIFFE id as presented, or "<none>"
    reason: str = ""


class AuthzTable:
    """Allow-list of (caller, method) pairs; everything not listed is denied.

    Callers are identity names within this mesh's trust domain and namespace, or "*"
    for any of them. Methods are "pkg.Service/Method", "pkg.Service/*" or "*".
    """

    def __init__(self, rules: Sequence[AuthzRule], trust_domain: str, namespace: str) -> None:
        self._rules = tuple(rules)
        self._trust_domain = trust_domain
        self._namespace = namespace
        self.generation = 0
        """Grows with every `replace`: whoever caches decisions drops them when it moves."""

    def replace(self, rules: Sequence[AuthzRule]) -> None:
        """Decide by `rules` from now on (the live table changed)."""
        self._rules = tuple(rules)
        self.generation += 1

    def check(self, spiffe_uri: str | None, method: str) -> Decision:
        """Decide whether the peer with `spiffe_uri` may call `method`. (The server
        keeps each method's decisions per caller; this is the slow path.)"""
        method = method.lstrip("/")
        if not spiffe_uri:
            return Decision(False, "<none>", "the client certificate has no SPIFFE id")
        try:
            caller = SpiffeId.parse(spiffe_uri)
        except IdentityError as error:
            return Decision(False, spiffe_uri, str(error))
        if (caller.trust_domain, caller.namespace) != (self._trust_domain, self._namespace):
            return Decision(False, spiffe_uri, "caller is outside this mesh's trust domain")
        service = method.partition("/")[0]
        for rule in self._rules:
            if ("*" in rule.callers or caller.name in rule.callers) and any(
                pattern in ("*", method, f"{service}/*") for pattern in rule.methods
            ):
                return Decision(True, spiffe_uri)
        return Decision(False, spiffe_uri, "no authz rule allows it")
