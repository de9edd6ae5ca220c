"""The seven operations of the songbird sessions API (see ``shared/songbird-api.md``)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from whylogs_songbird.models import (
    GUEST_MODEL_ID,
    MAX_PROFILES_PER_LINK,
    BatchLogReferenceRequest,
    BatchLogSessionReferenceResponse,
    CreateDatasetProfileUploadResponse,
    CreateSessionRequest,
    CreateSessionResponse,
    GetProfileObservatoryLinkRequest,
    GetProfileObservatoryLinkResponse,
    GetSessionResponse,
    LogAsyncRequest,
    LogReferenceRequest,
    LogSessionReferenceResponse,
    SessionMetadata,
)
from whylogs_songbird.server.auth import KeyOwner, require_key
from whylogs_songbird.server.common import observatory_link, segment_label, session_gone
from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.errors import ApiError
from whylogs_songbird.server.quotas import check_guest_writes, create_slots
from whylogs_songbird.server.ratelimits import ClientRateLimits, slot_cost
from whylogs_songbird.server.routes.deps import (
    ERROR_RESPONSES,
    ConfigDep,
    JsonBodyRoute,
    SignerDep,
    StoreDep,
    base_url,
    check_text,
    counted,
    json_answer,
    open_session,
    upload_url,
)
from whylogs_songbird.server.signing import UrlSigner
from whylogs_songbird.server.store import NewUpload, Store, UploadRecord

logger = logging.getLogger("whylogs_songbird.server")

router = APIRouter(tags=["sessions"], responses=ERROR_RESPONSES)
KeyDep = Annotated[KeyOwner, Depends(require_key)]


def _reference_response(
    store: Store, config: ServerConfig, signer: UrlSigner, base: str, session_id: str, upload: UploadRecord
) -> LogSessionReferenceResponse:
    return LogSessionReferenceResponse(
        id=upload.id,
        model_id=GUEST_MODEL_ID,
        alias=upload.alias,
        observatory_url=observatory_link(base, session_id, [upload.id]),
        upload_url=upload_url(store, config, signer, base, upload),
        upload_timestamp=upload.created_at,
    )


def _rate_limits(request: Request) -> ClientRateLimits:
    limits: ClientRateLimits = request.app.state.rate_limits
    return limits


@router.post(
    "/v0/sessions/observatory-link/{session_id}",
    response_model=GetProfileObservatoryLinkResponse,
    dependencies=[counted("observatory_link")],
)
def get_session_profile_observatory_link(
    session_id: str, body: GetProfileObservatoryLinkRequest, request: Request, store: StoreDep, config: ConfigDep
) -> JSONResponse:
    """Links to view 1..3 stored profiles (batch timestamps first, then reference ids)."""
    open_session(store, session_id)
    total = len(body.batch_profile_timestamps) + len(body.reference_profile_ids)
    if not 1 <= total <= MAX_PROFILES_PER_LINK:
        raise ApiError(
            400,
            f"Asked for {total} profiles; the observatory shows 1 to {MAX_PROFILES_PER_LINK} profiles at a time. "
            f"Request links for at most {MAX_PROFILES_PER_LINK} profiles per call.",
        )
    check_text(body)
    store.learn_landed(session_id)  # presigned PUTs that went straight to the blob store
    for ts in body.batch_profile_timestamps:
        if not store.find_batch_profiles(session_id, ts):
            raise ApiError(
                404,
                f"Session {session_id} has no uploaded batch profile with datasetTimestamp {ts}; "
                "upload (and PUT) the profile first, or check the timestamp (epoch milliseconds).",
            )
    for ref_id in body.reference_profile_ids:
        if store.get_reference(session_id, ref_id) is None:
            raise ApiError(
                404,
                f"Session {session_id} has no uploaded reference profile {ref_id[:80]!r}; "
                "upload (and PUT) it first, or use the id the reference operation returned.",
            )
    base = base_url(config, request)
    selectors: list[str | int] = [*body.batch_profile_timestamps, *body.reference_profile_ids]
    # References lead the combined link: the observatory measures drift against its first profile.
    baseline_first: list[str | int] = [*body.reference_profile_ids, *body.batch_profile_timestamps]
    return json_answer(
        GetProfileObservatoryLinkResponse(
            observatory_url=observatory_link(base, session_id, baseline_first),
            individual_observatory_urls=[observatory_link(base, session_id, [s]) for s in selectors],
        )
    )


@router.post("/v0/sessions", response_model=CreateSessionResponse, dependencies=[counted("create_session")])
def create_session(body: CreateSessionRequest, request: Request, store: StoreDep) -> JSONResponse:
    """Start a guest session."""
    check_guest_writes(request.app.state.config)
    _rate_limits(request).check_session(request)
    check_text(body)
    session = store.create_session(body.user_id)
    logger.debug("created a session")
    return json_answer(CreateSessionResponse(id=session.id))


@router.get("/v0/sessions/{session_id}", response_model=GetSessionResponse, dependencies=[counted("get_session")])
def get_session(session_id: str, owner: KeyDep, store: StoreDep) -> JSONResponse:
    """Session metadata (needs an API key). A claimed session shows its new org, and only to keys of
    that org; ``userId`` (the uploader's installation) only to a key of the session's org or of any org."""
    session = store.get_session(session_id)
    if session is None or (session.claimed and owner.org_id is not None and owner.org_id != session.claimed_org):
        raise ApiError(404, f"{session_gone(session_id)}; check the session id, or start a new session.")
    own_org = owner.org_id is None or owner.org_id == session.org_id
    return json_answer(
        GetSessionResponse(
            session=SessionMetadata(
                session_id=session.id,
                org_id=session.org_id,
                model_id=GUEST_MODEL_ID,
                user_id=session.user_id if own_org else "",
            )
        )
    )


def create_dataset_profile_upload(session_id: str, body: LogAsyncRequest, request: Request) -> JSONResponse:
    """An upload URL for one batch profile (one segment, if segment tags are given)."""
    # a hot route: the app's parts read directly, as each FastAPI dependency costs CPU per request
    store: Store = request.app.state.store
    config: ServerConfig = request.app.state.config
    signer: UrlSigner = request.app.state.signer
    check_guest_writes(config)
    tags = [(tag.key, tag.value) for tag in body.segment_tags]
    _rate_limits(request).check_slots(request, slot_cost(text for tag in tags for text in tag), 1)
    open_session(store, session_id)
    check_text(body)
    spec = NewUpload("batch", body.dataset_timestamp, segment_tags=tuple(tags))
    upload = create_slots(store, config, session_id, [spec])[0]
    base = base_url(config, request)
    return json_answer(
        CreateDatasetProfileUploadResponse(
            id=upload.id,
            upload_url=upload_url(store, config, signer, base, upload),
            observatory_url=observatory_link(
                base, session_id, [body.dataset_timestamp], [segment_label(tags)] if tags else []
            ),
            dataset_id=GUEST_MODEL_ID,
            upload_timestamp=upload.created_at,
        )
    )


# the hottest JSON route: a valid body is answered without FastAPI's parameter solving
router.add_api_route(
    "/v0/sessions/{session_id}/upload",
    create_dataset_profile_upload,
    methods=["POST"],
    response_model=CreateDatasetProfileUploadResponse,
    dependencies=[counted("upload")],
    route_class_override=JsonBodyRoute.counting("upload", on_free_store=True),
)


@router.post(
    "/v0/sessions/{session_id}/reference",
    response_model=LogSessionReferenceResponse,
    dependencies=[counted("reference")],
)
def create_reference_profile_upload(
    session_id: str, body: LogReferenceRequest, request: Request, store: StoreDep, config: ConfigDep, signer: SignerDep
) -> JSONResponse:
    """An upload URL for one reference profile (named after its id when no alias is given)."""
    check_guest_writes(config)
    _rate_limits(request).check_slots(request, slot_cost([body.alias or ""]), 1)
    open_session(store, session_id)
    check_text(body)
    upload = create_slots(store, config, session_id, [NewUpload("reference", body.dataset_timestamp, body.alias)])[0]
    return json_answer(_reference_response(store, config, signer, base_url(config, request), session_id, upload))


@router.post(
    "/v0/sessions/{session_id}/references",
    response_model=BatchLogSessionReferenceResponse,
    dependencies=[counted("references")],
)
def batch_create_reference_profile_upload(
    session_id: str,
    body: BatchLogReferenceRequest,
    request: Request,
    store: StoreDep,
    config: ConfigDep,
    signer: SignerDep,
) -> JSONResponse:
    """Upload URLs for several references; ``observatoryUrl`` shows the first three."""
    check_guest_writes(config)
    cost = sum(slot_cost([r.alias or ""]) for r in body.references)
    _rate_limits(request).check_slots(request, cost, len(body.references))
    open_session(store, session_id)
    check_text(body)
    uploads = create_slots(
        store, config, session_id, [NewUpload("reference", r.dataset_timestamp, r.alias) for r in body.references]
    )
    base = base_url(config, request)
    return json_answer(
        BatchLogSessionReferenceResponse(
            references=[_reference_response(store, config, signer, base, session_id, u) for u in uploads],
            observatory_url=observatory_link(base, session_id, [u.id for u in uploads[:MAX_PROFILES_PER_LINK]]),
        )
    )


@router.post("/v0/sessions/{session_id}/claim", dependencies=[counted("claim")])
def claim_guest_session(
    session_id: str,
    org_id: Annotated[str, Query(min_length=1, max_length=256)],
    owner: KeyDep,
    store: StoreDep,
) -> JSONResponse:
    """Move a guest session into an org (needs an API key); the session then takes no more data."""
    if owner.org_id is not None and owner.org_id != org_id:
        raise ApiError(
            403,
            f"This API key belongs to organization {owner.org_id} and can only claim sessions into it; "
            f"use org_id={owner.org_id} or a key of {org_id}.",
        )
    session = store.claim(session_id, org_id)
    if session is None or session.claimed_org != org_id:
        # one answer for both: a claim never tells whether a session exists
        raise ApiError(404, f"{session_gone(session_id)}; check the session id, or start a new session.")
    logger.info("claimed a session into org %s", org_id)
    return JSONResponse({})
