"""The FastAPI app of the local songbird-compatible server: the seven session operations,
presigned PUT uploads, observatory links and the observatory pages behind them (see observatory.py).

Every API error answers JSON ``{"message": "..."}`` (``models.ErrorResponse``) with a sentence that
says what to do (the observatory pages answer HTML error pages); bad input never causes a 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from whylogs.core import DatasetProfileView

from whylogs_songbird.models import (
    GUEST_MODEL_ID,
    MAX_PROFILES_PER_LINK,
    BatchLogReferenceRequest,
    BatchLogSessionReferenceResponse,
    CreateDatasetProfileUploadResponse,
    CreateSessionRequest,
    CreateSessionResponse,
    ErrorResponse,
    GetProfileObservatoryLinkRequest,
    GetProfileObservatoryLinkResponse,
    GetSessionResponse,
    LogAsyncRequest,
    LogReferenceRequest,
    LogSessionReferenceResponse,
    SessionMetadata,
    WireModel,
)
from whylogs_songbird.server.common import error_response, observatory_link, segment_label
from whylogs_songbird.server.config import RequestHook, ServerConfig
from whylogs_songbird.server.faults import FaultInjector
from whylogs_songbird.server.observatory import mount_observatory
from whylogs_songbird.server.security import HostAllowList, SecurityMiddleware
from whylogs_songbird.server.signing import SignatureError, UrlSigner, load_or_create_secret
from whylogs_songbird.server.store import (
    NewUpload,
    SessionClaimedError,
    SessionRecord,
    Store,
    UnknownUploadError,
    UploadRecord,
    is_valid_id,
)

logger = logging.getLogger("whylogs_songbird.server")

#: Received body chunks are written to disk in batches of about this size.
_WRITE_BATCH_BYTES = 1024 * 1024
_UPLOAD_PATH_PREFIX = "/v0/uploads/"
#: After refusing a body as too large, read and drop up to this many more of its bytes (see _discard_body).
_DISCARD_BYTES = 16 * 1024 * 1024
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in [
        (400, "The request is invalid."),
        (401, "The API key is missing or not accepted."),
        (403, "Forbidden: wrong org for the key, or a bad or expired upload URL."),
        (404, "Unknown or claimed session, upload or profile."),
        (413, "The body is larger than the server's limit."),
    ]
}


class ApiError(Exception):
    """An error answer: HTTP ``status`` and a ``message`` that says what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BodyTooLargeError(StarletteHTTPException):
    """Raised from ``receive`` when a request body passes its limit; answered with 413."""

    def __init__(self, message: str) -> None:
        super().__init__(status_code=413, detail=message)


def _json(model: WireModel, status: int = 200) -> JSONResponse:
    return JSONResponse(model.to_wire(), status_code=status)


# -- API keys ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyOwner:
    """Who an accepted API key belongs to: ``org_id`` None means any org."""

    org_id: str | None


class ApiKeyRing:
    """The accepted API keys, kept only as SHA-256 hashes and compared in constant time.

    A key ``<id>.<secret>:<org-id>`` belongs to that org and is accepted with or without its
    ``:<org-id>`` suffix; a key without the suffix belongs to no org (it may claim into any).
    """

    def __init__(self, keys: Iterable[str]) -> None:
        self._hashes: list[tuple[bytes, KeyOwner]] = []
        for key in keys:
            secret, sep, org = key.rpartition(":") if ":" in key else (key, "", "")
            owner = KeyOwner(org_id=org or None)
            self._hashes.append((self._digest(key), owner))
            if sep:
                self._hashes.append((self._digest(secret), owner))

    def __repr__(self) -> str:
        return f"ApiKeyRing(<{len(self._hashes)} hashes>)"

    def __len__(self) -> int:
        return len(self._hashes)

    @staticmethod
    def _digest(key: str) -> bytes:
        return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()

    def lookup(self, key: str | None) -> KeyOwner | None:
        """The owner of ``key``, or None when it is missing or not accepted."""
        if not key:
            return None
        digest = self._digest(key)
        found: KeyOwner | None = None
        for candidate, owner in self._hashes:  # no early exit: same work for every key
            if hmac.compare_digest(candidate, digest) and found is None:
                found = owner
        return found


# -- links -------------------------------------------------------------------------------------


def _base_url(config: ServerConfig, request: Request) -> str:
    return config.public_url or str(request.base_url).rstrip("/")


# -- validation helpers ------------------------------------------------------------------------


def _has_lone_surrogate(value: object) -> bool:
    """Whether a string anywhere in ``value`` (a model, list, tuple or dict of them) is not valid UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, BaseModel):
        return any(_has_lone_surrogate(getattr(value, name)) for name in type(value).model_fields)
    if isinstance(value, list | tuple):
        return any(_has_lone_surrogate(item) for item in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    return False


_LONE_SURROGATE_MESSAGE = "The request holds text that is not valid Unicode (a lone surrogate); send UTF-8 text."


def _check_text(model: WireModel) -> None:
    """Refuse strings SQLite cannot store (lone surrogates, which JSON escapes can carry).

    Only the string fields are looked at; the body is not serialized again."""
    if _has_lone_surrogate(model):
        raise ApiError(400, _LONE_SURROGATE_MESSAGE)


def _describe_validation_errors(errors: Sequence[Any]) -> str:
    parts = []
    for err in errors[:5]:
        loc = [str(p) for p in err.get("loc", ())]
        kind = err.get("type", "")
        if kind == "json_invalid":
            return "The request body is not valid JSON; send a JSON object as the songbird API contract describes."
        if kind == "string_unicode":
            return _LONE_SURROGATE_MESSAGE
        where = loc[0] if loc else "body"
        rest = ".".join(loc[1:])
        if where == "body":
            label = (
                f"field {rest}" if rest else "the request body (send a JSON object with Content-Type: application/json)"
            )
        elif where == "query":
            label = f"query parameter {rest}"
        elif where == "header":
            label = f"header {rest}"
        else:
            label = f"{where} {rest}".strip()
        parts.append(f"{label}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return (
        "The request is invalid: "
        + "; ".join(parts)
        + more
        + ". Send the JSON fields and parameters the songbird API contract describes."
    )


def _validate_profile_file(path: Path) -> None:
    """Raise ApiError(400) unless ``path`` holds a serialized whylogs DatasetProfileView."""
    try:
        DatasetProfileView.read(str(path))
    except Exception as exc:  # whylogs raises many types for bad bytes
        reason = " ".join(str(exc).split())[:200]
        raise ApiError(
            400,
            "The body is not a serialized whylogs profile, so nothing was stored "
            f"({type(exc).__name__}: {reason}). PUT the bytes of DatasetProfileView.serialize().",
        ) from None


# -- middleware --------------------------------------------------------------------------------


class BodyLimitMiddleware:
    """413 for bodies over the limit: uploads get ``max_upload_bytes``, everything else
    ``max_json_bytes``. Content-Length is checked first, then bytes are counted as they arrive.
    """

    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_upload = str(scope.get("path", "")).startswith(_UPLOAD_PATH_PREFIX)
        limit = self.config.max_upload_bytes if is_upload else self.config.max_json_bytes
        what = "profile" if is_upload else "JSON request body"
        message = f"The {what} is larger than this server's limit of {limit} bytes; " + (
            "start the server with a larger max_upload_bytes or upload a smaller profile."
            if is_upload
            else "send a smaller request."
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await error_response(400, "Content-Length is not a number.")(scope, receive, send)
                    return
                if declared > limit:
                    await _discard_body(receive)
                    await error_response(413, message, {"Connection": "close"})(scope, receive, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    if msg.get("more_body", False):
                        await _discard_body(receive)
                    raise BodyTooLargeError(message)
            return msg

        started = False

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if started:
                raise
            await error_response(413, message, {"Connection": "close"})(scope, receive, send)


async def _discard_body(receive: Receive) -> None:
    """Read and drop the rest of a refused request body (at most ``_DISCARD_BYTES``).

    Closing a connection whose request bytes are still unread makes the kernel send a reset,
    which can destroy the 413 answer before the client reads it; a drained connection closes cleanly.
    """
    budget = _DISCARD_BYTES
    while budget >= 0:
        msg = await receive()
        if msg["type"] != "http.request" or not msg.get("more_body", False):
            return
        budget -= len(msg.get("body", b""))


class NetworkEmulationMiddleware:
    """Delays API requests by ``latency_ms``, then runs the fault injector (``fault_rate``, see
    faults.py) and the ``request_hooks``. ``/healthz`` and ``/_local/...`` skip all of it.
    """

    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.config = config
        self.fault_hooks: list[RequestHook] = (
            [FaultInjector(config.fault_rate, config.fault_seed)] if config.fault_rate else []
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = str(scope.get("path", ""))
            if not (path == "/healthz" or path.startswith("/_local/")):
                if self.config.latency_ms:
                    await asyncio.sleep(self.config.latency_ms / 1000)
                for hook in (*self.fault_hooks, *self.config.request_hooks):
                    response = await hook(Request(scope, receive))
                    if response is not None:
                        await response(scope, receive, send)
                        return
        await self.app(scope, receive, send)


def _openapi_without_422(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, without FastAPI's 422 answers (this server answers 400 instead)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                operation.get("responses", {}).pop("422", None)
        schemas = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


# -- the app -----------------------------------------------------------------------------------


def create_app(config: ServerConfig, store: Store | None = None) -> FastAPI:
    """Build the app. ``app.state`` carries ``config``, ``store``, ``signer`` and ``api_keys`` (hashes only).

    A store passed in stays owned by the caller; otherwise one is opened on ``config.data_dir``
    and closed when the app shuts down.
    """
    owns_store = store is None
    the_store = store if store is not None else Store(config.data_dir)
    signer = UrlSigner(load_or_create_secret(config.data_dir))
    keys = ApiKeyRing(config.api_keys)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if owns_store:
            the_store.close()

    app = FastAPI(
        title="songbird (local)",
        summary="A local server compatible with the songbird sessions API of WhyLabs.",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.openapi = lambda: _openapi_without_422(app)  # type: ignore[method-assign]
    app.state.config = config
    app.state.store = the_store
    app.state.signer = signer
    app.state.api_keys = keys
    app.add_middleware(BodyLimitMiddleware, config=config)
    app.add_middleware(NetworkEmulationMiddleware, config=config)
    # outermost: a request for a foreign Host name reaches nothing else
    app.add_middleware(SecurityMiddleware, allowed=HostAllowList(config.host, config.public_url, config.allowed_hosts))

    # -- error handlers --

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, _describe_validation_errors(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = (
                f"There is no route {request.method} {request.url.path}; "
                "see the songbird API contract for the routes this server answers."
            )
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see the songbird API contract."
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error while answering a request")
        return error_response(500, "The local songbird server failed unexpectedly; see its log for the traceback.")

    # -- shared helpers --

    def counted(operation: str) -> Any:
        async def count() -> None:
            the_store.count(operation)

        return Depends(count)

    def open_session(session_id: str) -> SessionRecord:
        session = the_store.get_session(session_id)
        if session is None:
            raise ApiError(
                404,
                f"Session {session_id[:80]} is unknown to this server; create a new session with POST /v0/sessions.",
            )
        if session.claimed:
            raise ApiError(
                404,
                f"Session {session_id} was claimed into an organization and takes no more data; "
                "start a new session with POST /v0/sessions.",
            )
        return session

    def require_key(api_key: str | None) -> KeyOwner:
        if not api_key:
            raise ApiError(401, "This operation needs an API key; send it in the X-API-Key header.")
        owner = keys.lookup(api_key)
        if owner is None:
            hint = "" if len(keys) else " This server has no API keys configured: start it with --api-key."
            raise ApiError(401, "The API key in X-API-Key is not accepted by this server; check the key." + hint)
        return owner

    def upload_url(base: str, upload: UploadRecord) -> str:
        return signer.upload_url(base, upload.id, upload.expires_at)

    def reference_response(base: str, session_id: str, upload: UploadRecord) -> LogSessionReferenceResponse:
        return LogSessionReferenceResponse(
            id=upload.id,
            model_id=GUEST_MODEL_ID,
            alias=upload.alias,
            observatory_url=observatory_link(base, session_id, [upload.id]),
            upload_url=upload_url(base, upload),
            upload_timestamp=upload.created_at,
        )

    # -- the seven operations --

    @app.post(
        "/v0/sessions/observatory-link/{session_id}",
        response_model=GetProfileObservatoryLinkResponse,
        dependencies=[counted("observatory_link")],
        tags=["sessions"],
        responses=_ERROR_RESPONSES,
    )
    def get_session_profile_observatory_link(
        session_id: str, body: GetProfileObservatoryLinkRequest, request: Request
    ) -> JSONResponse:
        """Links to view 1..3 stored profiles (batch timestamps first, then reference ids)."""
        open_session(session_id)
        total = len(body.batch_profile_timestamps) + len(body.reference_profile_ids)
        if not 1 <= total <= MAX_PROFILES_PER_LINK:
            raise ApiError(
                400,
                f"Asked for {total} profiles; the observatory shows 1 to {MAX_PROFILES_PER_LINK} profiles at a time. "
                f"Request links for at most {MAX_PROFILES_PER_LINK} profiles per call.",
            )
        _check_text(body)
        for ts in body.batch_profile_timestamps:
            if not the_store.find_batch_profiles(session_id, ts):
                raise ApiError(
                    404,
                    f"Session {session_id} has no uploaded batch profile with datasetTimestamp {ts}; "
                    "upload (and PUT) the profile first, or check the timestamp (epoch milliseconds).",
                )
        for ref_id in body.reference_profile_ids:
            if the_store.get_reference(session_id, ref_id) is None:
                raise ApiError(
                    404,
                    f"Session {session_id} has no uploaded reference profile {ref_id[:80]!r}; "
                    "upload (and PUT) it first, or use the id the reference operation returned.",
                )
        base = _base_url(config, request)
        selectors: list[str | int] = [*body.batch_profile_timestamps, *body.reference_profile_ids]
        # References lead the combined link: the observatory measures drift against its first profile.
        baseline_first: list[str | int] = [*body.reference_profile_ids, *body.batch_profile_timestamps]
        return _json(
            GetProfileObservatoryLinkResponse(
                observatory_url=observatory_link(base, session_id, baseline_first),
                individual_observatory_urls=[observatory_link(base, session_id, [s]) for s in selectors],
            )
        )

    @app.post(
        "/v0/sessions",
        response_model=CreateSessionResponse,
        dependencies=[counted("create_session")],
        tags=["sessions"],
        responses=_ERROR_RESPONSES,
    )
    def create_session(body: CreateSessionRequest) -> JSONResponse:
        """Start a guest session."""
        _check_text(body)
        session = the_store.create_session(body.user_id)
        logger.debug("created a session")
        return _json(CreateSessionResponse(id=session.id))

    @app.get(
        "/v0/sessions/{session_id}",
        response_model=GetSessionResponse,
        dependencies=[counted("get_session")],
        tags=["sessions"],
        responses=_ERROR_RESPONSES,
    )
    def get_session(
        session_id: str, x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None
    ) -> JSONResponse:
        """Session metadata (needs an API key). A claimed session shows its new org, and only to keys of
        that org; ``userId`` (the uploader's installation) only to a key of the session's org or of any org."""
        owner = require_key(x_api_key)
        session = the_store.get_session(session_id)
        if session is None or (session.claimed and owner.org_id is not None and owner.org_id != session.claimed_org):
            raise ApiError(404, f"Session {session_id[:80]} is unknown to this server; check the session id.")
        own_org = owner.org_id is None or owner.org_id == session.org_id
        return _json(
            GetSessionResponse(
                session=SessionMetadata(
                    session_id=session.id,
                    org_id=session.org_id,
                    model_id=GUEST_MODEL_ID,
                    user_id=session.user_id if own_org else "",
                )
            )
        )

    @app.post(
        "/v0/sessions/{session_id}/upload",
        response_model=CreateDatasetProfileUploadResponse,
        dependencies=[counted("upload")],
        tags=["sessions"],
        responses=_ERROR_RESPONSES,
    )
    def create_dataset_profile_upload(session_id: str, body: LogAsyncRequest, request: Request) -> JSONResponse:
        """An upload URL for one batch profile (one segment, if segment tags are given)."""
        open_session(session_id)
        _check_text(body)
        tags = [(tag.key, tag.value) for tag in body.segment_tags]
        upload = the_store.create_upload(
            session_id,
            "batch",
            ttl_seconds=config.url_ttl_seconds,
            dataset_timestamp=body.dataset_timestamp,
            segment_tags=tags,
        )
        base = _base_url(config, request)
        return _json(
            CreateDatasetProfileUploadResponse(
                id=upload.id,
                upload_url=upload_url(base, upload),
                observatory_url=observatory_link(
                    base, session_id, [body.dataset_timestamp], [segment_label(tags)] if tags else []
                ),
                dataset_id=GUEST_MODEL_ID,
                upload_timestamp=upload.created_at,
            )
        )

    @app.post(
        "/v0/sessions/{session_id}/reference",
        response_model=LogSessionReferenceResponse,
        dependencies=[counted("reference")],
        tags=["sessions"],
        responses=_ERROR_RESPONSES,
    )
    def create_reference_profile_upload(session_id: str, body: LogReferenceRequest, request: Request) -> JSONResponse:
        """An upload URL for one reference profile (named after its id when no alias is given)."""
        open_session(session_id)
        _check_text(body)
        upload = the_store.create_upload(
            session_id,
            "reference",
            ttl_seconds=config.url_ttl_seconds,
            dataset_timestamp=body.dataset_timestamp,
            alias=body.alias,
        )
        return _json(reference_response(_base_url(config, request), session_id, upload))

    @app.post(
        "/v0/sessions/{session_id}/references",
        response_model=BatchLogSessionReferenceResponse,
        dependencies=[counted("references")],
        tags=["sessions"],
        responses=_ERROR_RESPONSES,
    )
    def batch_create_reference_profile_upload(
        session_id: str, body: BatchLogReferenceRequest, request: Request
    ) -> JSONResponse:
        """Upload URLs for several references; ``observatoryUrl`` shows the first three."""
        open_session(session_id)
        _check_text(body)
        uploads = the_store.create_uploads(
            session_id,
            [NewUpload("reference", r.dataset_timestamp, r.alias) for r in body.references],
            ttl_seconds=config.url_ttl_seconds,
        )
        base = _base_url(config, request)
        return _json(
            BatchLogSessionReferenceResponse(
                references=[reference_response(base, session_id, u) for u in uploads],
                observatory_url=observatory_link(base, session_id, [u.id for u in uploads[:MAX_PROFILES_PER_LINK]]),
            )
        )

    @app.post(
        "/v0/sessions/{session_id}/claim",
        dependencies=[counted("claim")],
        tags=["sessions"],
        responses=_ERROR_RESPONSES,
    )
    def claim_guest_session(
        session_id: str,
        org_id: Annotated[str, Query(min_length=1, max_length=256)],
        x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None,
    ) -> JSONResponse:
        """Move a guest session into an org (needs an API key); the session then takes no more data."""
        owner = require_key(x_api_key)
        if owner.org_id is not None and owner.org_id != org_id:
            raise ApiError(
                403,
                f"This API key belongs to organization {owner.org_id} and can only claim sessions into it; "
                f"use org_id={owner.org_id} or a key of {org_id}.",
            )
        session = the_store.claim(session_id, org_id)
        if session is None:
            raise ApiError(404, f"Session {session_id[:80]} is unknown to this server; check the session id.")
        if session.claimed_org != org_id:
            raise ApiError(
                404,
                f"Session {session_id} was already claimed into another organization; start a new session.",
            )
        logger.info("claimed a session into org %s", org_id)
        return JSONResponse({})

    # -- presigned uploads --

    @app.put(
        "/v0/uploads/{upload_id}",
        dependencies=[counted("put")],
        tags=["uploads"],
        responses=_ERROR_RESPONSES,
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
        upload = await run_in_threadpool(the_store.get_upload, upload_id)
        if upload is None:
            raise ApiError(404, "This upload URL names no upload; ask for a new upload URL.")
        session = await run_in_threadpool(the_store.get_session, upload.session_id)
        if session is None or session.claimed:
            raise ApiError(404, "The session of this upload was claimed and takes no more data; start a new session.")
        fd, tmp = the_store.new_temp_file()
        try:
            size, digest = await _receive_to_file(request, fd)
            if size == 0:
                raise ApiError(400, "The body is empty, so nothing was stored; PUT the bytes of a whylogs profile.")
            await run_in_threadpool(_validate_profile_file, tmp)
            try:
                stored = await run_in_threadpool(the_store.store_profile_file, upload_id, tmp, size=size, sha256=digest)
            except UnknownUploadError:
                raise ApiError(404, "This upload URL names no upload; ask for a new upload URL.") from None
            except SessionClaimedError:
                raise ApiError(
                    404, "The session of this upload was claimed and takes no more data; start a new session."
                ) from None
        finally:
            await run_in_threadpool(tmp.unlink, True)
        logger.debug("stored a %s profile of %d bytes", stored.kind, size)
        return JSONResponse({"id": stored.id, "size": size, "sha256": digest}, headers={"ETag": f'"{digest}"'})

    # -- observatory pages (landing, sessions, profiles, static files) --

    # Session ids open their profiles: the landing page lists them only when asked to (never with a public URL).
    mount_observatory(app, the_store, public_url=config.public_url, list_sessions=config.list_sessions)

    # -- local extras --

    @app.get("/_local/stats", tags=["local"])
    async def local_stats() -> dict[str, int]:
        """Calls per operation since the server started (for tests and benchmarks)."""
        return the_store.stats()

    @app.get("/healthz", tags=["local"])
    async def healthz() -> dict[str, str]:
        """Liveness check."""
        return {"status": "ok"}

    return app


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
