"""``PUT /v0/uploads/{upload_id}``: the presigned upload URLs of the embedded store."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from whylogs_songbird.models import DUPLICATE_HEADER
from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.errors import ApiError
from whylogs_songbird.server.profile_check import (
    ProfileCheckError,
    ProfileShape,
    check_profile_bytes,
    check_profile_file,
)
from whylogs_songbird.server.quotas import check_guest_writes, check_session_quota
from whylogs_songbird.server.routes.deps import ERROR_RESPONSES, DirectRoute, in_thread
from whylogs_songbird.server.signing import SignatureError, UrlSigner
from whylogs_songbird.server.store import (
    OpenUpload,
    SessionClaimedError,
    Store,
    StoredOutcome,
    UnknownUploadError,
    UploadRecord,
    is_valid_id,
)
from whylogs_songbird.server.zipped import ZipUploadError, looks_like_zip

T = TypeVar("T")

logger = logging.getLogger("whylogs_songbird.server")

#: Received body chunks are written to disk in batches of about this size.
_WRITE_BATCH_BYTES = 1024 * 1024
#: A body whose Content-Length is at most this is received into memory, then checked and stored
#: in one worker-thread call (larger ones stream to a temporary file in batches).
SMALL_BODY_BYTES = 1024 * 1024

router = APIRouter(tags=["uploads"], responses=ERROR_RESPONSES)


def _not_a_profile(exc: ProfileCheckError) -> ApiError:
    return ApiError(
        400,
        f"The body is not a well-formed serialized whylogs profile, so nothing was stored: {exc}. "
        "PUT the bytes of DatasetProfileView.serialize().",
    )


def _check_profile_file(path: Path, max_columns: int) -> ProfileShape:
    """What the cheap structural check of a whylogs profile learns of ``path``; ApiError(400) when it fails."""
    try:
        return check_profile_file(path, max_columns=max_columns)
    except ProfileCheckError as exc:
        raise _not_a_profile(exc) from None


#: The PUT's query parameters, declared for the OpenAPI schema: the handler reads them itself.
_QUERY_PARAMETERS = [
    {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": description,
    }
    for name, description in (
        ("expires", "When the URL expires, in seconds since the epoch (as the server signed it)."),
        ("signature", "The server's signature of the upload id and expiry."),
    )
]


async def put_upload(upload_id: str, request: Request) -> JSONResponse:
    """Receive the bytes of a profile at a presigned URL; a later PUT replaces them."""
    # The hottest route takes nothing from FastAPI but the path: its query, the app's parts and
    # the call count are read here, as each parameter and dependency FastAPI solves costs CPU.
    store: Store = request.app.state.store
    store.count("put")
    signer: UrlSigner = request.app.state.signer
    config: ServerConfig = request.app.state.config
    check_guest_writes(config)
    if not (is_valid_id(upload_id, "log") or is_valid_id(upload_id, "ref")):
        raise ApiError(404, "This upload URL names no upload; use the uploadUrl exactly as the server gave it.")
    query = request.query_params
    try:
        signer.verify(upload_id, query.get("expires"), query.get("signature"))
    except SignatureError as exc:
        raise ApiError(403, str(exc)) from None
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) <= SMALL_BODY_BYTES:
        # the common case, in one thread-pool hop: each hop costs more CPU than a small profile's check
        data = await request.body()
        outcome, size, digest = await in_thread(_store_small_body, store, config, upload_id, data)
    else:
        outcome, size, digest = await _store_streamed_body(request, store, config, upload_id)
    headers = {"ETag": f'"{digest}"'}
    if outcome.duplicate_of is not None:
        logger.info("an upload repeated the bytes of upload %s; kept once", outcome.duplicate_of)
        headers[DUPLICATE_HEADER] = outcome.duplicate_of
    else:
        wake_ingest = getattr(request.app.state, "wake_ingest", None)
        if wake_ingest is not None:
            wake_ingest()
        logger.debug("stored a %s profile of %d bytes", outcome.upload.kind, size)
    return JSONResponse({"id": outcome.upload.id, "size": size, "sha256": digest}, headers=headers)


router.add_api_route(
    "/v0/uploads/{upload_id}",
    put_upload,
    methods=["PUT"],
    route_class_override=DirectRoute,
    openapi_extra={
        "parameters": _QUERY_PARAMETERS,
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
    },
)


def _stored(call: Callable[[], T]) -> T:
    """``call()``, its store errors (no such slot, a claimed session) answered with 404."""
    try:
        return call()
    except UnknownUploadError:
        raise ApiError(404, "This upload URL names no upload; ask for a new upload URL.") from None
    except SessionClaimedError:
        raise ApiError(
            404, "The session of this upload was claimed and takes no more data; start a new session."
        ) from None


def _store_small_body(
    store: Store, config: ServerConfig, upload_id: str, data: bytes
) -> tuple[StoredOutcome, int, str]:
    """Check the slot, then the bytes, then the session's quota, then store them (the store runs
    its "upload landed" hook; blocking: run in a worker thread)."""
    digest = hashlib.sha256(data).hexdigest()
    # the slot is read first, so a PUT to no slot is answered 404 whatever its body; whether the
    # bytes repeat a stored profile is found in the transaction that records them
    opened = OpenUpload(_stored(lambda: store.check_upload_open(upload_id)), None)
    if not data:
        raise ApiError(400, "The body is empty, so nothing was stored; PUT the bytes of a whylogs profile.")
    if opened.upload.format == "zip" and looks_like_zip(data):
        return _store_zip(store, config, opened.upload, data), len(data), digest
    try:
        shape = check_profile_bytes(data, max_columns=config.max_columns)
    except ProfileCheckError as exc:
        raise _not_a_profile(exc) from None
    store.checked.note(digest, config.max_columns)  # its sandbox child need not check them again
    session_id = opened.upload.session_id
    check_session_quota(store, config, session_id, new_profiles=1, new_bytes=len(data), replacing=opened.upload)
    outcome = _stored(
        lambda: store.store_profile_data(upload_id, data, sha256=digest, opened=opened, segment_tags=shape.segment_tags)
    )
    return outcome, len(data), digest


async def _store_streamed_body(
    request: Request, store: Store, config: ServerConfig, upload_id: str
) -> tuple[StoredOutcome, int, str]:
    """Receive a large body into a temporary file in batches, check it and store it."""
    # the slot is checked before reading a body that may be large
    upload = await run_in_threadpool(_stored, lambda: store.check_upload_open(upload_id))
    fd, tmp = store.new_temp_file()
    try:
        size, digest = await _receive_to_file(request, fd)
        if size == 0:
            raise ApiError(400, "The body is empty, so nothing was stored; PUT the bytes of a whylogs profile.")

        def check_and_store() -> StoredOutcome:
            if upload.format == "zip":
                data = tmp.read_bytes()  # at most the upload limit; its members are unpacked in memory
                if looks_like_zip(data):
                    return _store_zip(store, config, upload, data)
            shape = _check_profile_file(tmp, config.max_columns)
            store.checked.note(digest, config.max_columns)  # its sandbox child need not check them again
            check_session_quota(store, config, upload.session_id, new_profiles=1, new_bytes=size, replacing=upload)
            return _stored(
                lambda: store.store_profile_file(
                    upload_id, tmp, size=size, sha256=digest, segment_tags=shape.segment_tags
                )
            )

        outcome = await run_in_threadpool(check_and_store)
    finally:
        await run_in_threadpool(tmp.unlink, True)
    return outcome, size, digest


def _store_zip(store: Store, config: ServerConfig, upload: UploadRecord, data: bytes) -> StoredOutcome:
    """Unpack a zip of segment profiles (whylogs' ``write(zip=True)``), check every member, then the
    session's quota, then store each as a profile of the batch; ApiError(400) when the zip or a
    member is refused (nothing is stored then)."""
    try:
        members = store.unpack_zip(data)
    except ZipUploadError as exc:
        raise ApiError(
            400,
            f"The body is not a zip of whylogs profiles this server takes, so nothing was stored: {exc}. "
            "PUT the zip whylogs' write(zip=True) makes, or write without zip=True.",
        ) from None
    check_session_quota(
        store,
        config,
        upload.session_id,
        new_profiles=len(members),
        new_bytes=sum(len(content) for content, _ in members),
        replacing=upload,
    )
    return _stored(lambda: store.store_zip(upload, members))


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
