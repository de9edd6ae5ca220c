"""Optional per-session quotas: how many profiles and how many bytes of them one session may hold.

Off by default (``max_session_profiles`` / ``max_session_bytes`` None). Checked when upload URLs are
handed out (profiles only) and again before a PUT's bytes are stored (profiles and bytes), against the
profiles the session already holds; a profile replaced by a new PUT counts once. Two uploads racing
for the last place may both pass: the quota bounds a session, it is not a ledger.
"""

from __future__ import annotations

from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.errors import ApiError
from whylogs_songbird.server.store import Store

#: The status of a refusal: the request is understood and well-formed, and will not be granted.
QUOTA_STATUS = 403


def check_session_quota(
    store: Store,
    config: ServerConfig,
    session_id: str,
    *,
    new_profiles: int = 0,
    new_bytes: int = 0,
    replacing: str | None = None,
) -> None:
    """Raise ApiError(403) when ``session_id`` would pass a quota by adding ``new_profiles`` profiles
    of ``new_bytes`` bytes (``replacing``: the id of an upload the new bytes replace)."""
    max_profiles, max_bytes = config.max_session_profiles, config.max_session_bytes
    if max_profiles is None and max_bytes is None:
        return
    held = [u for u in store.list_profiles(session_id) if u.id != replacing]
    if max_profiles is not None and len(held) + new_profiles > max_profiles:
        raise ApiError(
            QUOTA_STATUS,
            f"Session {session_id} holds {len(held)} profiles and this server allows {max_profiles} per session "
            f"(--max-session-profiles), so nothing was stored; start a new session for more profiles.",
        )
    if max_bytes is not None:
        used = sum(u.size or 0 for u in held)
        if used + new_bytes > max_bytes:
            raise ApiError(
                QUOTA_STATUS,
                f"Session {session_id} holds {used} bytes of profiles; {new_bytes} more would pass this server's "
                f"limit of {max_bytes} bytes per session (--max-session-bytes), so nothing was stored. "
                "Start a new session, or upload smaller profiles.",
            )


__all__ = ["QUOTA_STATUS", "check_session_quota"]
