"""The query side: what the read model answers, and how far behind it is. Nothing here
writes; the projection (services.profile.store) is the only writer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mesh.events import EventBus
from mesh.problems import NotFound
from services.common.projection import ProjectionStatus, projection_status
from services.profile.domain import PROFILE, Profile, ProfilesQuery
from services.profile.store import ProfileStore

__all__ = ["ProfileQueries", "ProfilesPage"]


@dataclass(frozen=True)
class ProfilesPage:
    """One page of profiles, and the cursor of the next (None on the last page)."""

    profiles: list[Profile]
    next_after: str | None


class ProfileQueries:
    """Reads of the profiles in `store`; `bus` gives the mesh's event bus (for the
    projection's lag)."""

    def __init__(self, store: ProfileStore, bus: Callable[[], Awaitable[EventBus]]) -> None:
        self._store = store
        self._bus = bus

    def profile(self, user_id: str) -> Profile:
        """The profile of a (validated) user id.

        Raises:
            NotFound: the read model has no profile of the user.
        """
        found = self._store.get(user_id)
        if found is None:
            raise NotFound(PROFILE, user_id)
        return found

    def profiles(self, query: ProfilesQuery) -> ProfilesPage:
        """One page of profiles, as a (validated) ListProfiles asks."""
        page, next_after = self._store.page(query)
        return ProfilesPage(page, next_after)

    async def status(self) -> ProjectionStatus:
        """The projection's lag behind the broker, and what it has applied (raises as
        projection_status)."""
        return await projection_status(self._store.projection, self._bus)
