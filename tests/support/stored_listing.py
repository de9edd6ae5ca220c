"""What a timeline service's store seam lists: `StoredProfile` entries made by hand, for the fast
tests of the service (their identity is derived from the id, as the store derives it from the row)."""

from __future__ import annotations

from whylogs_songbird.server.timeline_service import StoredProfile


def stored(
    id: str,
    timestamp: int | None,
    *,
    kind: str = "batch",
    segment: str = "",
    alias: str | None = None,
    stored_at: int = 0,
    pending: bool = False,
) -> StoredProfile:
    """A listed profile ``id`` with its batch ``timestamp`` (None for a reference)."""
    return StoredProfile(
        id=id,
        kind=kind,
        dataset_timestamp=timestamp,
        alias=alias,
        segment=segment,
        identity=f"{id}:sha-{id}:1",
        stored_at=stored_at,
        pending=pending,
    )
