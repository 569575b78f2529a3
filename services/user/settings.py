"""User's own settings: `services.user.settings` in mesh.yaml.

The instance checks them when it starts (`python -m services.user --settings-schema`
prints their JSON Schema). Every key has a default; the service runs with none set.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from services.user.store import DEFAULT_SNAPSHOT_EVERY

__all__ = ["UserSettings"]


class UserSettings(BaseModel):
    """Settings of the user service."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    snapshot_every: StrictInt = Field(default=DEFAULT_SNAPSHOT_EVERY, ge=1, le=1_000_000)
    """Events between two snapshots of a user's state: loading a user replays at most
    this many events after the latest snapshot. Snapshots are a cache: changing this
    never changes what a user is, only how much is replayed."""
