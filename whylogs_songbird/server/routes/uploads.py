"""``PUT /v0/uploads/{upload_id}``: the presigned upload URLs of the embedded store."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from whylogs_songbird.server.errors import ApiError
from whylogs_songbird.server.profile_check import ProfileCheckError, check_profile_file
from whylogs_songbird.server.quotas import check_session_quota
from whylogs_songbird.server.routes.deps import ERROR_RESPONSES, ConfigDep, SignerDep, StoreDep, counted
from whylogs_songbird.server.signing import SignatureError
from whylogs_songbird.server.store import SessionClaimedError, UnknownUploadError, is_valid_id

logger = logging.getLogger("whylogs_songbird.server")

#: Received body chunks are written to disk in batches of about this size.
_WRITE_BATCH_BYTES = 1024 * 1024

#: Answer header of a PUT whose bytes repeat a stored profile of the same session, timestamp and segment.
DUPLICATE_HEADER = "X-Songbird-Duplicate-Of"

router = APIRouter(tags=["uploads"], responses=ERROR_RESPONSES)


def _check_profile_file(path: Path, max_columns: int) -> None:
    """Raise ApiError(400) unless ``path`` passes the cheap structural check of a whylogs profile."""
    try:
        check_profile_file(path, max_columns=max_columns)
    except ProfileCheckError as exc:
        raise ApiError(
            400,
            f"The body is not a well-formed serialized whylogs profile, so nothing was stored: {exc}. "
            "PUT the bytes of DatasetProfileView.serialize().",
        ) from None


@router.put(
    "/v0/uploads/{upload_id}",
    dependencies=[counted("put")],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def put_upload(
    upload_id: str,
    request: Request,
    store: StoreDep,
    signer: SignerDep,
    config: ConfigDep,
    expires: str | None = None,
    signature: str | None = None,
) -> JSONResponse:
    """Receive the bytes of a profile at a presigned URL; a later PUT replaces them."""
    if not (is_valid_id(upload_id, "log") or is_valid_id(upload_id, "ref")):
        raise ApiError(404, "This upload URL names no upload; use the uploadUrl exactly as the server gave it.")
    try:
        signer.verify(upload_id, expires, signature)
    except SignatureError as exc:
        raise ApiError(403, str(exc)) from None
    try:
        upload = await run_in_threadpool(store.metadata.check_upload_open, upload_id)
    except UnknownUploadError:
        raise ApiError(404, "This upload URL names no upload; ask for a new upload URL.") from None
    except SessionClaimedError:
        raise ApiError(
            404, "The session of this upload was claimed and takes no more data; start a new session."
        ) from None
    fd, tmp = store.new_temp_file()
    try:
        size, digest = await _receive_to_file(request, fd)
        if size == 0:
            raise ApiError(400, "The body is empty, so nothing was stored; PUT the bytes of a whylogs profile.")
        await run_in_threadpool(_check_profile_file, tmp, config.max_columns)
        await run_in_threadpool(
            check_session_quota, store, config, upload.session_id, new_profiles=1, new_bytes=size, replacing=upload_id
        )
        try:
            outcome = await run_in_threadpool(store.store_profile_file, upload_id, tmp, size=size, sha256=digest)
        except UnknownUploadError:
            raise ApiError(404, "This upload URL names no upload; ask for a new upload URL.") from None
        except SessionClaimedError:
            raise ApiError(
                404, "The session of this upload was claimed and takes no more data; start a new session."
            ) from None
    finally:
        await run_in_threadpool(tmp.unlink, True)
    headers = {"ETag": f'"{digest}"'}
    if outcome.duplicate_of is not None:
        logger.info("an upload repeated the bytes of upload %s; kept once", outcome.duplicate_of)
        headers[DUPLICATE_HEADER] = outcome.duplicate_of
    else:
        wake_ingest = getattr(request.app.state, "wake_ingest", None)
        if wake_ingest is not None:
            wake_ingest()
        logger.debug("stored a %s profile of %d bytes", outcome.upload.kind, size)
        timeline = getattr(request.app.state, "timeline", None)
        if timeline is not None and outcome.upload.kind == "batch":
            # the timeline is refreshed and monitors evaluated in the background
            await run_in_threadpool(timeline.batch_stored, outcome.upload.session_id)
    return JSONResponse({"id": outcome.upload.id, "size": size, "sha256": digest}, headers=headers)


async def _receive_to_file(request: Request, fd: int) -> tuple[int, str]:
    """Stream the request body into the open file ``fd`` (closed on return); return size and sha256.

    Disk writes and hashing run in worker threads in batches, so the event loop never blocks.
    """
    hasher = hashlib.sha256()
    size = 0
    pending: list[bytes] = []
    pending_size = 0

    def flush(chunks: list[bytes]) -> None:
        data = b"".join(chunks)
        hasher.update(data)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            size += len(chunk)
            pending.append(chunk)
            pending_size += len(chunk)
            if pending_size >= _WRITE_BATCH_BYTES:
                batch, pending, pending_size = pending, [], 0
                await run_in_threadpool(flush, batch)
        if pending:
            await run_in_threadpool(flush, pending)
    finally:
        os.close(fd)
    return size, hasher.hexdigest()
