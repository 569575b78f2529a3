"""Who is calling: the mesh identity that made a call and, when that identity is the
edge, the end user whose token the edge verified.

The edge passes the token's subject as metadata (USER_METADATA_KEY). Any caller can
send that key, so it is believed only from the edge's own identity; from anyone else
it is ignored, and a call from the edge without it has no user at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.config import EDGE_IDENTITY, USER_METADATA_KEY
from mesh.errors import IdentityError
from mesh.identity import SpiffeId
from mesh.server._interceptor import CallerSans, Context, _caller

__all__ = ["Caller", "CallerOf"]


@dataclass(frozen=True)
class Caller:
    identity: str | None
    """The calling mesh identity's name ("order", "edge", "admin"), None without one."""
    user: str | None
    """The end user the edge vouches for; None unless `identity` is the edge."""

    @property
    def via_edge(self) -> bool:
        return self.identity == EDGE_IDENTITY


class CallerOf:
    """`caller_of(context)`: the Caller of a call, by the instance's data plane."""

    def __init__(self, caller_sans: CallerSans) -> None:
        self._caller_sans = caller_sans

    def __call__(self, context: Context) -> Caller:
        uri = _caller(self._caller_sans(context))
        try:
            identity = SpiffeId.parse(uri).name if uri else None
        except IdentityError:
            identity = None
        user = None
        if identity == EDGE_IDENTITY:
            for key, value in context.invocation_metadata() or ():
                if key == USER_METADATA_KEY and isinstance(value, str) and value:
                    user = value
                    break
        return Caller(identity=identity, user=user)
