"""Deleting a guest session or one of its profiles (the session id is the credential):

- ``DELETE /v0/sessions/{session_id}`` — the session with every profile, its bytes and everything
  derived from them;
- ``DELETE /v0/sessions/{session_id}/profiles/{profile_id}`` — one batch or reference profile (or
  an open upload slot), by the upload id the upload operations returned (``log-…``/``ref-…``).

Both answer 204 once the data is gone for every route (see :mod:`whylogs_songbird.server.lifecycle`).
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from whylogs_songbird.server import lifecycle
from whylogs_songbird.server.common import session_gone
from whylogs_songbird.server.errors import ApiError
from whylogs_songbird.server.routes.deps import ERROR_RESPONSES, StoreDep

router = APIRouter(tags=["lifecycle"], responses=ERROR_RESPONSES)


def _gone(session_id: str) -> ApiError:
    return ApiError(404, f"{session_gone(session_id)}; check the session id (a deleted session stays gone).")


@router.delete("/v0/sessions/{session_id}", status_code=204, response_class=Response)
async def delete_session(session_id: str, store: StoreDep) -> Response:
    """Delete the session, its profiles and their bytes; 204 (404 when unknown, claimed or deleted)."""
    if not await run_in_threadpool(lifecycle.delete_session, store, session_id):
        raise _gone(session_id)
    return Response(status_code=204)


@router.delete("/v0/sessions/{session_id}/profiles/{profile_id}", status_code=204, response_class=Response)
async def delete_profile(session_id: str, profile_id: str, store: StoreDep) -> Response:
    """Delete one profile of the session (with uploads that duplicate it) and its bytes; 204."""
    if await run_in_threadpool(store.guest_session, session_id) is None:
        raise _gone(session_id)
    if not await run_in_threadpool(lifecycle.delete_profile, store, session_id, profile_id):
        raise ApiError(
            404,
            f"Session {session_id[:80]} has no such profile or upload; use the id (log-… or ref-…) an upload "
            "operation returned.",
        )
    return Response(status_code=204)
