"""Auth's own settings: `services.auth.settings` in mesh.yaml.

The instance checks them when it starts (`python -m services.auth --settings-schema`
prints their JSON Schema). Every key has a default fit for the demo; the argon2 costs
are there so that tests can hash quickly, and should otherwise be left alone.
"""

from __future__ import annotations

import argon2
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

__all__ = ["AuthSettings"]

_MAX_INT32 = 2**31 - 1


class AuthSettings(BaseModel):
    """Settings of the auth service."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    issuer: StrictStr = Field(default="https://auth.shop.local", min_length=1, max_length=256)
    """The "iss" claim of every token, which verifiers must expect."""
    audience: StrictStr = Field(default="shopmesh", min_length=1, max_length=256)
    """The "aud" claim of every token, which verifiers must expect."""
    token_ttl: StrictInt = Field(default=900, ge=1, le=_MAX_INT32)
    """Seconds a token is valid for. A retired signing key stays in the JWKS this long
    after its retirement, so that every token it signed can still be verified."""
    key_rotation_interval: StrictInt = Field(default=86_400, ge=1)
    """Seconds a signing key signs before the next token is signed by a new one
    (RotateSigningKey rotates at once)."""
    argon2_time_cost: StrictInt = Field(default=argon2.DEFAULT_TIME_COST, ge=1)
    """Passes of argon2id over its memory per password hash. The defaults of the three
    argon2 costs are argon2-cffi's (RFC 9106's low-memory profile); lower them only in
    tests. A stored hash made with other costs is redone at the user's next login."""
    argon2_memory_cost: StrictInt = Field(default=argon2.DEFAULT_MEMORY_COST, ge=8)
    """KiB of memory per password hash: at least 8 per lane."""
    argon2_parallelism: StrictInt = Field(default=argon2.DEFAULT_PARALLELISM, ge=1, le=64)
    """Lanes (threads) of one password hash."""

    @model_validator(mode="after")
    def _enough_memory_per_lane(self) -> AuthSettings:
        if self.argon2_memory_cost < 8 * self.argon2_parallelism:
            raise ValueError("argon2_memory_cost must be at least 8 KiB per argon2_parallelism")
        return self
