"""Deleting a guest session or one of its profiles (the session id is the credential):

- ``DELETE /v0/sessions/{session_id}`` — the session with every profile, its bytes and everything
  derived from them;
- ``DELETE /v0/sessions/{session_id}/profiles/{profile_id}`` — one batch or reference profile (or
  an open upload slot), by the upload id the upload operations returned (``log-…``/``ref-…``).

Both answer 204 once the data is gone for every route (see :mod:`whylogs_songbird.server.lifecycle`).

And moving a session between servers (see :mod:`whylogs_songbird.server.bundles`):

- ``GET /api/v1/sessions/{session_id}/export`` — the session as a bundle (a zip), streamed;
- ``POST /api/v1/import`` — a bundle as the body: a new session, ``201 {"sessionId", "profiles",
  "observatoryUrl"}``.
"""

from __future__ import annotations

import functools
import os

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from whylogs_songbird.server import bundles, lifecycle
from whylogs_songbird.server.common import session_gone
from whylogs_songbird.server.errors import ApiError
from whylogs_songbird.server.quotas import check_guest_writes
from whylogs_songbird.server.ratelimits import ClientRateLimits
from whylogs_songbird.server.routes.deps import ERROR_RESPONSES, ConfigDep, StoreDep, base_url

router = APIRouter(tags=["lifecycle"], responses=ERROR_RESPONSES)
#: The import route writes the body it receives to disk in pieces of about this size.
_SPOOL_WRITE_BYTES = 1024 * 1024


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


# -- export and import (see bundles.py) ---------------------------------------------------------


@router.get(
    "/api/v1/sessions/{session_id}/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}, "description": "The session's bundle (a zip)."}},
)
async def export_session(session_id: str, store: StoreDep) -> StreamingResponse:
    """The session's profiles as a bundle (a zip with ``manifest.json``), streamed."""
    if await run_in_threadpool(store.guest_session, session_id) is None:
        raise _gone(session_id)
    await run_in_threadpool(store.learn_landed, session_id)  # presigned PUTs that went straight to the blob store
    profiles = await run_in_threadpool(bundles.exportable, store, session_id)
    return StreamingResponse(
        bundles.export_chunks(store, session_id, profiles),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{session_id}.zip"'},
    )


@router.post(bundles.IMPORT_PATH, status_code=201)
async def import_bundle(request: Request, store: StoreDep, config: ConfigDep) -> JSONResponse:
    """Create a new session from a bundle (the request body, ``application/zip``); 201 with its id
    and page. A bundle that is not valid is refused with 400 and creates nothing. It creates a
    session, so it obeys what creating one does: ``--guest-sessions off`` and the client's
    session rate, and the per-session quotas."""
    check_guest_writes(config)
    limits: ClientRateLimits = request.app.state.rate_limits
    limits.check_session(request)
    fd, path = await run_in_threadpool(store.new_temp_file)
    try:
        with os.fdopen(fd, "wb") as spool:
            pending: list[bytes] = []
            size = 0
            async for chunk in request.stream():
                pending.append(chunk)
                size += len(chunk)
                if size >= _SPOOL_WRITE_BYTES:
                    await run_in_threadpool(spool.write, b"".join(pending))
                    pending, size = [], 0
            await run_in_threadpool(spool.write, b"".join(pending))
        try:
            result = await run_in_threadpool(
                functools.partial(
                    bundles.import_bundle,
                    store,
                    path,
                    max_profiles=config.max_session_profiles,
                    max_bytes=config.max_session_bytes,
                )
            )
        except bundles.BundleError as exc:
            raise ApiError(400, f"The bundle was refused and nothing was imported: {exc}") from None
    finally:
        path.unlink(missing_ok=True)
    session_page = f"{base_url(config, request)}/sessions/{result.session_id}"
    return JSONResponse(
        {"sessionId": result.session_id, "profiles": result.profiles, "observatoryUrl": session_page}, status_code=201
    )
