"""Per-session limits: open upload slots, and the optional quotas on profiles and bytes.

- ``max_open_slots`` (on by default): slots asked for and not PUT yet (their URL not expired) that
  one session may have; past it, slot requests are answered 429.
- ``max_session_profiles`` / ``max_session_bytes`` (off by default, None): profiles, and bytes of
  them, one session may hold. Profiles are checked when upload URLs are handed out, counting
  stored profiles and open slots, and again before a PUT's bytes are stored (profiles and bytes),
  against the profiles the session already holds; a profile replaced by a new PUT counts once.

Slot limits are counted in the transaction that creates the slots (exact); at PUT time, two
uploads racing for the last place may both pass: the quota bounds a session, it is not a ledger.
``--guest-sessions off`` (:func:`check_guest_writes`) refuses every guest write.
"""

from __future__ import annotations

from collections.abc import Sequence

from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.errors import ApiError
from whylogs_songbird.server.store import NewUpload, SlotLimitError, Store, UploadRecord

#: The status of a refusal: the request is understood and well-formed, and will not be granted.
QUOTA_STATUS = 403
#: The status of a refusal that waiting (PUTting what is open) can lift.
OPEN_SLOTS_STATUS = 429
#: The status of a guest write on a server with ``--guest-sessions off``.
GUEST_OFF_STATUS = 403


def check_guest_writes(config: ServerConfig) -> None:
    """Raise ApiError(403) when this server takes no guest sessions (``--guest-sessions off``)."""
    if not config.guest_sessions:
        raise ApiError(
            GUEST_OFF_STATUS,
            "This server takes no guest sessions or guest uploads (it runs with --guest-sessions off): it only "
            "takes writes made with an API key. Ask its operator for a key, or publish to another server.",
        )


def create_slots(store: Store, config: ServerConfig, session_id: str, specs: Sequence[NewUpload]) -> list[UploadRecord]:
    """Create upload slots within the session's limits (``max_open_slots``, ``max_session_profiles``);
    ApiError 429 or 403, creating nothing, past one of them."""
    try:
        return store.create_uploads(
            session_id,
            specs,
            ttl_seconds=config.url_ttl_seconds,
            max_open=config.max_open_slots,
            max_profiles=config.max_session_profiles,
        )
    except SlotLimitError as exc:
        asked = len(specs)
        if exc.limit == "profiles":
            raise ApiError(
                QUOTA_STATUS,
                f"Session {session_id} holds {exc.held} profiles and open upload slots and this server allows "
                f"{exc.allowed} per session (--max-session-profiles), so nothing was created; start a new session "
                "for more profiles.",
            ) from None
        if asked > exc.allowed:
            raise ApiError(
                OPEN_SLOTS_STATUS,
                f"This request asks for {asked} upload slots, more than the {exc.allowed} open slots this server "
                f"allows per session (--max-open-slots), so nothing was created; ask for at most {exc.allowed} "
                "per request.",
            ) from None
        raise ApiError(
            OPEN_SLOTS_STATUS,
            f"Session {session_id} has {exc.held} upload slots open (asked for and not PUT yet) and this server "
            f"allows {exc.allowed} per session (--max-open-slots), so none of the {asked} asked for was created. "
            f"PUT the profiles to the upload URLs already given (unused ones expire after {config.url_ttl_seconds} "
            "s), then ask again.",
            {"Retry-After": "1"},
        ) from None


def check_session_quota(
    store: Store,
    config: ServerConfig,
    session_id: str,
    *,
    new_profiles: int = 0,
    new_bytes: int = 0,
    replacing: UploadRecord | None = None,
) -> None:
    """Raise ApiError(403) when ``session_id`` would pass a quota by adding ``new_profiles`` profiles
    of ``new_bytes`` bytes (``replacing``: the upload slot the new bytes go to, as the caller just
    read it; if it holds a profile of the session, that profile is replaced and counts once)."""
    max_profiles, max_bytes = config.max_session_profiles, config.max_session_bytes
    if max_profiles is None and max_bytes is None:
        return
    replaced = replacing
    if replaced is not None and not (
        replaced.session_id == session_id and replaced.stored and replaced.duplicate_of is None
    ):
        replaced = None  # not one of the session's profiles: it frees nothing
    if max_profiles is not None:
        # counted no further than the limit needs (bounded by it, not by the session's history)
        bound = max_profiles + 2
        held = store.count_profiles(session_id, at_most=bound)
        if held >= bound:
            held = store.count_profiles(session_id)  # a refusal says exactly how many
        held -= replaced is not None
        if held + new_profiles > max_profiles:
            raise ApiError(
                QUOTA_STATUS,
                f"Session {session_id} holds {held} profiles and this server allows {max_profiles} per session "
                f"(--max-session-profiles), so nothing was stored; start a new session for more profiles.",
            )
    if max_bytes is not None:
        used = store.profile_bytes(session_id) - ((replaced.size or 0) if replaced is not None else 0)
        if used + new_bytes > max_bytes:
            raise ApiError(
                QUOTA_STATUS,
                f"Session {session_id} holds {used} bytes of profiles; {new_bytes} more would pass this server's "
                f"limit of {max_bytes} bytes per session (--max-session-bytes), so nothing was stored. "
                "Start a new session, or upload smaller profiles.",
            )


__all__ = [
    "GUEST_OFF_STATUS",
    "OPEN_SLOTS_STATUS",
    "QUOTA_STATUS",
    "check_guest_writes",
    "check_session_quota",
    "create_slots",
]
