"""The WhyLabs log API for datasets of organizations, as whylogs' own ``writer("whylabs")`` calls it
with an API key (``WHYLABS_API_KEY``, ``WHYLABS_DEFAULT_ORG_ID``, ``WHYLABS_DEFAULT_DATASET_ID`` and
``WHYLABS_API_ENDPOINT`` pointing here). See docs/http-api.md, "The WhyLabs log API".

Every route needs an ``X-API-Key`` the server accepts (401 otherwise) that belongs to the org in the
path or to no org (403 for a key of another org); nothing is made or stored before both checks.

A dataset is made on its first write. It lives in a container row of the store that the session
machinery keys on (``Store.dataset_container``): its profiles go through the same upload slots,
signed or presigned PUT, cheap check, ingest, digests and timeline as a guest session's, while no
guest route ever finds that row (``Store.guest_session`` refuses it).
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import secrets
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse

from whylogs_songbird.models import (
    API_KEY_HEADER,
    MAX_PROFILES_PER_LINK,
    AsyncLogResponse,
    ColumnSchema,
    CreateReferenceProfileRequest,
    CreateReferenceProfileResponse,
    GetProfileObservatoryLinkRequest,
    GetProfileObservatoryLinkResponse,
    LogAsyncRequest,
    LogReferenceRequest,
    LogReferenceResponse,
    MetricSchema,
    PutWeightsRequest,
    Segment,
    SegmentTag,
    TransactionStartRequest,
)
from whylogs_songbird.server import lifecycle
from whylogs_songbird.server.auth import KeyOwner, require_key
from whylogs_songbird.server.common import segment_label
from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.datasets import (
    COLUMN_KEY,
    LINK_TTL_SECONDS,
    METRIC_KEY,
    WEIGHTS_KEY,
    link_token,
    pages_path,
)
from whylogs_songbird.server.errors import ApiError
from whylogs_songbird.server.observatory.container import PageContainer
from whylogs_songbird.server.rollups import bump_version
from whylogs_songbird.server.routes.deps import ERROR_RESPONSES, base_url, check_text, json_answer, upload_url
from whylogs_songbird.server.routes.timeline import TimelineQueryDep, timeline_json_bytes
from whylogs_songbird.server.signing import UrlSigner
from whylogs_songbird.server.store import NewUpload, SessionRecord, Store, now_ms
from whylogs_songbird.server.timeline_service import TimelineService

logger = logging.getLogger("whylogs_songbird.server")

router = APIRouter(tags=["organizations"], responses=ERROR_RESPONSES)

#: An organization or dataset id: what WhyLabs uses (``org-…``, ``model-1``), safe in a URL path.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: How long an observatory link of a dataset opens its pages (the link carries a signed expiry).
DATASET_LINK_TTL_SECONDS = LINK_TTL_SECONDS
#: whylogs names the upload's format in this header: ``BIN`` (one profile) or ``ZIP`` (``write(zip=True)``:
#: a zip of segment profiles of one batch, each stored as its own profile once it lands).
FILE_EXTENSION_HEADER = "X-WhyLabs-File-Extension"


def _check_name(value: str, what: str) -> str:
    if NAME_PATTERN.fullmatch(value) is None:
        raise ApiError(
            400,
            f"{value[:80]!r} is not a valid {what} id: use 1 to 128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (for example org-1234 or model-1).",
        )
    return value


def _check_org(owner: KeyOwner, org_id: str) -> None:
    """403 unless the key belongs to ``org_id`` or to no org (a server-wide key)."""
    if owner.org_id is not None and owner.org_id != org_id:
        raise ApiError(
            403,
            f"This API key belongs to another organization than {org_id[:80]}; "
            "use a key of that organization (WHYLABS_API_KEY), or check WHYLABS_DEFAULT_ORG_ID.",
        )


def org_key(
    request: Request, org_id: str, x_api_key: Annotated[str | None, Header(alias=API_KEY_HEADER)] = None
) -> str:
    """Dependency: the org of the path, once the request's key is accepted (401) and is the org's (403)."""
    owner = require_key(request, x_api_key)
    _check_org(owner, org_id)
    return _check_name(org_id, "organization")


OrgDep = Annotated[str, Depends(org_key)]


def _key_org(request: Request, x_api_key: str | None, route: str) -> str:
    """The org of the request's key, for the ``/v1`` routes that name no org (401 for a bad key, 400
    for a key of no org)."""
    owner = require_key(request, x_api_key)
    if owner.org_id is None:
        raise ApiError(
            400,
            f"{route} takes the organization from the API key, and this key names none: "
            "give the server the key as KEYID.SECRET:ORG-ID.",
        )
    return owner.org_id


def key_org(request: Request, x_api_key: Annotated[str | None, Header(alias=API_KEY_HEADER)] = None) -> str:
    """Dependency of the ``/v1`` routes, which name no org: the org of the request's key, checked
    before anything else of the request is read."""
    return _key_org(request, x_api_key, f"{request.method} {request.url.path}")


KeyOrgDep = Annotated[str, Depends(key_org)]


def _zipped(extension: str | None) -> bool:
    """Whether whylogs announced a zip of segment profiles (``write(zip=True)``) for this upload."""
    return extension is not None and extension.strip().upper() == "ZIP"


def _check_zip(extension: str | None) -> None:
    if _zipped(extension):
        raise ApiError(
            400,
            "This server takes zipped uploads (whylogs' write(zip=True)) for batch profiles only; "
            "write this reference without zip=True: whylogs then uploads one profile per segment.",
        )


def _parts(request: Request) -> tuple[Store, ServerConfig, UrlSigner]:
    return request.app.state.store, request.app.state.config, request.app.state.signer


def _tags(tags: list[SegmentTag]) -> tuple[tuple[str, str], ...]:
    return tuple((tag.key, tag.value) for tag in tags)


def dataset_link_token(signer: UrlSigner, org_id: str, dataset_id: str, expires: int) -> str:
    """The token of an observatory link of a dataset (``datasets.link_token``)."""
    return link_token(signer, org_id, dataset_id, expires)


def _log_async(request: Request, org_id: str, dataset_id: str, body: LogAsyncRequest) -> AsyncLogResponse:
    store, config, signer = _parts(request)
    _check_name(dataset_id, "dataset")
    check_text(body)
    container = store.dataset_container(org_id, dataset_id)
    tags = _tags(body.segment_tags)
    upload = store.create_upload(
        container.id,
        "batch",
        ttl_seconds=config.url_ttl_seconds,
        dataset_timestamp=body.dataset_timestamp,
        segment_tags=tags,
        format="zip" if _zipped(request.headers.get(FILE_EXTENSION_HEADER)) else None,
    )
    return AsyncLogResponse(
        id=upload.id,
        model_id=dataset_id,
        upload_url=upload_url(store, config, signer, base_url(config, request), upload),
        upload_timestamp=upload.created_at,
        tags=Segment(tags=list(body.segment_tags)),
    )


@router.post("/v0/organizations/{org_id}/log/async/{dataset_id}", response_model=AsyncLogResponse)
def log_async(org_id: OrgDep, dataset_id: str, body: LogAsyncRequest, request: Request) -> Response:
    """An upload URL for one batch profile of a dataset (made on its first write)."""
    return json_answer(_log_async(request, org_id, dataset_id, body))


@router.post("/v1/log/async", response_model=AsyncLogResponse)
def log_async_v1(
    org_id: KeyOrgDep,
    body: LogAsyncRequest,
    request: Request,
    x_whylabs_resource: Annotated[str | None, Header(alias="X-WhyLabs-Resource")] = None,
) -> Response:
    """``log/async`` as whylogs 1.6 calls it: the dataset in ``X-WhyLabs-Resource``, the org the key's."""
    if not x_whylabs_resource:
        raise ApiError(400, "POST /v1/log/async needs the dataset id in the X-WhyLabs-Resource header.")
    return json_answer(_log_async(request, org_id, x_whylabs_resource, body))


@router.post("/v0/organizations/{org_id}/log/reference/{dataset_id}", response_model=LogReferenceResponse)
def log_reference(org_id: OrgDep, dataset_id: str, body: LogReferenceRequest, request: Request) -> Response:
    """An upload URL for one (unsegmented) reference profile of a dataset."""
    store, config, signer = _parts(request)
    _check_name(dataset_id, "dataset")
    check_text(body)
    container = store.dataset_container(org_id, dataset_id)
    upload = store.create_upload(
        container.id,
        "reference",
        ttl_seconds=config.url_ttl_seconds,
        dataset_timestamp=body.dataset_timestamp,
        alias=body.alias or None,
    )
    return json_answer(
        LogReferenceResponse(
            id=upload.id,
            model_id=dataset_id,
            alias=upload.alias or upload.id,
            upload_url=upload_url(store, config, signer, base_url(config, request), upload),
            upload_timestamp=upload.created_at,
        )
    )


@router.post(
    "/v0/organizations/{org_id}/dataset-profiles/models/{dataset_id}/reference-profile",
    response_model=CreateReferenceProfileResponse,
)
def create_reference_profile(
    org_id: OrgDep, dataset_id: str, body: CreateReferenceProfileRequest, request: Request
) -> Response:
    """Upload URLs for a reference profile of several segments: ``uploadUrls[i]`` takes ``segments[i]``
    (one URL when no segments are given). The answer's ``id`` names the reference; each segment is
    kept as its own profile under the same alias."""
    store, config, signer = _parts(request)
    _check_name(dataset_id, "dataset")
    check_text(body)
    _check_zip(request.headers.get(FILE_EXTENSION_HEADER))
    container = store.dataset_container(org_id, dataset_id)
    segments = [_tags(segment.tags) for segment in body.segments] or [()]
    first = store.create_upload(
        container.id,
        "reference",
        ttl_seconds=config.url_ttl_seconds,
        dataset_timestamp=body.dataset_timestamp,
        alias=body.alias or None,
        segment_tags=segments[0],
    )
    alias = first.alias or first.id
    rest = store.create_uploads(
        container.id,
        [NewUpload("reference", body.dataset_timestamp, alias, tags) for tags in segments[1:]],
        ttl_seconds=config.url_ttl_seconds,
    )
    base = base_url(config, request)
    uploads = [first, *rest]
    return json_answer(
        CreateReferenceProfileResponse(
            id=first.id,
            alias=alias,
            dataset_id=dataset_id,
            upload_timestamp=first.created_at,
            segments=[segment_label(tags) for tags in segments if tags],
            upload_urls=[upload_url(store, config, signer, base, upload) for upload in uploads],
        )
    )


def _existing_dataset(store: Store, org_id: str, dataset_id: str) -> SessionRecord:
    _check_name(dataset_id, "dataset")
    container = store.find_dataset(org_id, dataset_id)
    if container is None:
        raise ApiError(
            404,
            f"Dataset {dataset_id} of organization {org_id} has no profiles on this server yet; "
            "write one first (whylogs' writer('whylabs') with WHYLABS_API_ENDPOINT pointing here).",
        )
    return container


def dataset_page_url(base: str, signer: UrlSigner, org_id: str, dataset_id: str, profiles: list[str | int]) -> str:
    """A link to a dataset's profiles in the observatory, opened by the signed expiring token it carries."""
    expires = int(now_ms() / 1000) + DATASET_LINK_TTL_SECONDS
    params: list[tuple[str, str]] = [("profile", str(p)) for p in profiles]
    params.append(("token", dataset_link_token(signer, org_id, dataset_id, expires)))
    return f"{base}{pages_path(org_id, dataset_id)}/profiles?{urlencode(params)}"


@router.post(
    "/v0/organizations/{org_id}/log/observatory-link/{dataset_id}",
    response_model=GetProfileObservatoryLinkResponse,
)
def observatory_link(
    org_id: OrgDep, dataset_id: str, body: GetProfileObservatoryLinkRequest, request: Request
) -> Response:
    """Links to view 1..3 stored profiles of a dataset (batch timestamps first, then reference ids)."""
    store, config, signer = _parts(request)
    container = _existing_dataset(store, org_id, dataset_id)
    total = len(body.batch_profile_timestamps) + len(body.reference_profile_ids)
    if not 1 <= total <= MAX_PROFILES_PER_LINK:
        raise ApiError(
            400,
            f"Asked for {total} profiles; the observatory shows 1 to {MAX_PROFILES_PER_LINK} profiles at a time. "
            f"Request links for at most {MAX_PROFILES_PER_LINK} profiles per call.",
        )
    check_text(body)
    store.learn_landed(container.id)  # presigned PUTs that went straight to the blob store
    for ts in body.batch_profile_timestamps:
        if not store.find_batch_profiles(container.id, ts):
            raise ApiError(
                404,
                f"Dataset {dataset_id} has no uploaded batch profile with datasetTimestamp {ts}; "
                "upload (and PUT) the profile first, or check the timestamp (epoch milliseconds).",
            )
    for ref_id in body.reference_profile_ids:
        if store.get_reference(container.id, ref_id) is None:
            raise ApiError(
                404,
                f"Dataset {dataset_id} has no uploaded reference profile {ref_id[:80]!r}; "
                "upload (and PUT) it first, or use the id the reference operation returned.",
            )
    base = base_url(config, request)
    selectors: list[str | int] = [*body.batch_profile_timestamps, *body.reference_profile_ids]
    baseline_first: list[str | int] = [*body.reference_profile_ids, *body.batch_profile_timestamps]
    return json_answer(
        GetProfileObservatoryLinkResponse(
            observatory_url=dataset_page_url(base, signer, org_id, dataset_id, baseline_first),
            individual_observatory_urls=[dataset_page_url(base, signer, org_id, dataset_id, [s]) for s in selectors],
        )
    )


@router.get(
    "/api/v1/organizations/{org_id}/datasets/{dataset_id}/timeline",
    summary="The timeline of a dataset: the session timeline's document, for an org's dataset",
    tags=["timeline"],
)
def dataset_timeline(
    org_id: OrgDep,
    dataset_id: str,
    request: Request,
    query: TimelineQueryDep,
) -> Response:
    """The timeline document of a dataset (as ``/api/v1/sessions/{id}/timeline``); ``session_id`` reads
    ``ORG/DATASET``."""
    store: Store = request.app.state.store
    service: TimelineService = request.app.state.timeline
    container = _existing_dataset(store, org_id, dataset_id)
    page = PageContainer.dataset(container.id, org_id, dataset_id)
    return Response(timeline_json_bytes(service, page, query), media_type="application/json")


# -- deleting a dataset or one of its profiles (mark, then purge: see server/lifecycle.py) -----------


@router.delete("/v0/organizations/{org_id}/datasets/{dataset_id}", status_code=204, response_class=Response)
def delete_dataset(org_id: OrgDep, dataset_id: str, request: Request) -> Response:
    """Delete a dataset with its profiles, their bytes, its timeline, schema, weights and open
    transactions; 204. A later write to the same dataset id starts a new, empty dataset."""
    store: Store = request.app.state.store
    _check_name(dataset_id, "dataset")
    if not lifecycle.delete_dataset(store, org_id, dataset_id):
        raise ApiError(
            404,
            f"Dataset {dataset_id} of organization {org_id} is unknown to this server (never written, or deleted "
            "already); check the org and dataset ids.",
        )
    return Response(status_code=204)


@router.delete(
    "/v0/organizations/{org_id}/datasets/{dataset_id}/profiles/{profile_id}",
    status_code=204,
    response_class=Response,
)
def delete_dataset_profile(org_id: OrgDep, dataset_id: str, profile_id: str, request: Request) -> Response:
    """Delete one profile of a dataset (with uploads that duplicate it) and its bytes, by the id the
    upload operation returned (``log-…``/``ref-…``); 204."""
    store: Store = request.app.state.store
    container = _existing_dataset(store, org_id, dataset_id)
    if not lifecycle.delete_dataset_profile(store, container.id, profile_id):
        raise ApiError(
            404,
            f"Dataset {dataset_id} has no such profile or upload; use the id (log-… or ref-…) an upload "
            "operation returned.",
        )
    return Response(status_code=204)


# -- what an org says of a dataset: column and metric schema, weights (kept, shown with the dataset) --

#: The author named in the metadata of schema and weights (WhyLabs names a user; this server has none).
SETTINGS_AUTHOR = "songbird"
_COLUMN_KEY = COLUMN_KEY
_METRIC_KEY = METRIC_KEY
_WEIGHTS_KEY = WEIGHTS_KEY


def _full(model: ColumnSchema | MetricSchema) -> dict[str, object]:
    """Every field, nulls included: whylabs-client's generated models need them all."""
    return model.model_dump(mode="json", by_alias=True)


def _check_column(column_id: str) -> str:
    if not 1 <= len(column_id) <= 4096:
        raise ApiError(400, "A column name has 1 to 4096 characters; check the column in the path.")
    return column_id


def _settings_metadata(store: Store, container: SessionRecord | None, key: str) -> dict[str, object]:
    versions = store.get_setting(container.id, key + "#version") if container is not None else None
    version, updated = json.loads(versions) if versions else (0, 0)
    return {"author": SETTINGS_AUTHOR, "version": version, "updatedTimestamp": updated}


def _bump(store: Store, container: SessionRecord, key: str) -> None:
    version = _settings_metadata(store, container, key)["version"]
    store.put_setting(container.id, key + "#version", json.dumps([int(str(version)) + 1, now_ms()]))


@router.get("/v0/organizations/{org_id}/models/{dataset_id}/schema/column/{column_id:path}")
def get_column_schema(org_id: OrgDep, dataset_id: str, column_id: str, request: Request) -> Response:
    """The schema kept for a column, or an empty one (every field null) when none was put."""
    store: Store = request.app.state.store
    container = store.find_dataset(org_id, _check_name(dataset_id, "dataset"))
    kept = store.get_setting(container.id, _COLUMN_KEY + _check_column(column_id)) if container else None
    return JSONResponse(json.loads(kept) if kept else _full(ColumnSchema()))


@router.put("/v0/organizations/{org_id}/models/{dataset_id}/schema/column/{column_id:path}")
def put_column_schema(
    org_id: OrgDep, dataset_id: str, column_id: str, body: ColumnSchema, request: Request
) -> Response:
    """Keep a column's schema (whylogs' ``tag_output_columns`` / ``tag_input_columns``); makes the dataset."""
    store: Store = request.app.state.store
    check_text(body)
    container = store.dataset_container(org_id, _check_name(dataset_id, "dataset"))
    store.put_setting(container.id, _COLUMN_KEY + _check_column(column_id), json.dumps(_full(body)))
    _bump(store, container, "schema")
    return JSONResponse({})


@router.put("/v0/organizations/{org_id}/models/{dataset_id}/schema/metric")
def put_metric_schema(org_id: OrgDep, dataset_id: str, body: MetricSchema, request: Request) -> Response:
    """Keep a custom performance metric (whylogs' ``tag_custom_performance_column``), by its label."""
    store: Store = request.app.state.store
    check_text(body)
    container = store.dataset_container(org_id, _check_name(dataset_id, "dataset"))
    store.put_setting(container.id, _METRIC_KEY + body.label, json.dumps(_full(body)))
    _bump(store, container, "schema")
    return JSONResponse({})


@router.get("/v0/organizations/{org_id}/models/{dataset_id}/schema")
def get_entity_schema(org_id: OrgDep, dataset_id: str, request: Request) -> Response:
    """The columns' and metrics' schema kept for a dataset (as put; columns never tagged are not listed)."""
    store: Store = request.app.state.store
    container = store.find_dataset(org_id, _check_name(dataset_id, "dataset"))
    columns = store.list_settings(container.id, _COLUMN_KEY) if container else []
    metrics = store.list_settings(container.id, _METRIC_KEY) if container else []
    return JSONResponse(
        {
            "columns": {key[len(_COLUMN_KEY) :]: json.loads(value) for key, value in columns},
            "metrics": {key[len(_METRIC_KEY) :]: json.loads(value) for key, value in metrics},
            "metadata": _settings_metadata(store, container, "schema"),
        }
    )


@router.put("/v0/organizations/{org_id}/dataset/{dataset_id}/weights")
def put_weights(org_id: OrgDep, dataset_id: str, body: PutWeightsRequest, request: Request) -> Response:
    """Keep the columns' weights (whylogs' ``write_feature_weights``), replacing earlier ones."""
    store: Store = request.app.state.store
    check_text(body)
    container = store.dataset_container(org_id, _check_name(dataset_id, "dataset"))
    weights = [weight.model_dump(mode="json", by_alias=True, exclude_none=True) for weight in body.segment_weights]
    store.put_setting(container.id, _WEIGHTS_KEY, json.dumps(weights))
    _bump(store, container, _WEIGHTS_KEY)
    return JSONResponse({})


@router.get("/v0/organizations/{org_id}/dataset/{dataset_id}/weights")
def get_weights(org_id: OrgDep, dataset_id: str, request: Request) -> Response:
    """The weights kept for a dataset: ``{segmentWeights, metadata}`` (no weights: an empty list)."""
    store: Store = request.app.state.store
    container = store.find_dataset(org_id, _check_name(dataset_id, "dataset"))
    kept = store.get_setting(container.id, _WEIGHTS_KEY) if container else None
    return JSONResponse(
        {
            "segmentWeights": json.loads(kept) if kept else [],
            "metadata": _settings_metadata(store, container, _WEIGHTS_KEY),
        }
    )


# -- transactions: profiles invisible until commit, deleted at abort -----------------------------------

#: How long a transaction stays open (reported as ``expirationTime``; not enforced yet).
TRANSACTION_TTL_SECONDS = 24 * 3600
_TRANSACTION_KEY = "transaction"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{24}")


def _transaction_container(store: Store, org_id: str, transaction_id: str, *, create: bool = False) -> SessionRecord:
    """The container of a transaction: ``<token>.<dataset>`` names the dataset and a container
    ``<dataset>/transaction/<token>`` (no dataset id holds a ``/``, so none meets it)."""
    token, _, dataset_id = transaction_id.partition(".")
    if _TOKEN.fullmatch(token) is None or NAME_PATTERN.fullmatch(dataset_id) is None:
        raise ApiError(
            404, f"Transaction {transaction_id[:80]} is unknown to this server; start one with POST /v1/transaction."
        )
    name = f"{dataset_id}/transaction/{token}"
    found = store.dataset_container(org_id, name) if create else store.find_dataset(org_id, name)
    if found is None:
        raise ApiError(
            404, f"Transaction {transaction_id[:80]} is unknown to this server; start one with POST /v1/transaction."
        )
    return found


def _transaction_state(store: Store, container: SessionRecord) -> dict[str, object]:
    kept = store.get_setting(container.id, _TRANSACTION_KEY)
    return json.loads(kept) if kept else {}


def _set_state(store: Store, container: SessionRecord, state: dict[str, object], new: str) -> None:
    store.put_setting(container.id, _TRANSACTION_KEY, json.dumps({**state, "state": new}))


def _aborted(transaction_id: str) -> ApiError:
    # whylogs reads "Transaction has been aborted" in a 404 as TransactionAbortedException
    return ApiError(
        404, f"Transaction has been aborted: {transaction_id[:80]} takes no profiles and cannot be committed."
    )


@router.post("/v1/transaction")
def start_transaction(org_id: KeyOrgDep, body: TransactionStartRequest, request: Request) -> Response:
    """Start a transaction on a dataset of the key's org: its profiles stay invisible until commit."""
    store: Store = request.app.state.store
    dataset_id = _check_name(body.dataset_id, "dataset")
    transaction_id = f"{secrets.token_urlsafe(18)}.{dataset_id}"
    container = _transaction_container(store, org_id, transaction_id, create=True)
    expires = now_ms() + TRANSACTION_TTL_SECONDS * 1000
    _set_state(store, container, {"expires": expires}, "open")
    expiration = datetime.datetime.fromtimestamp(expires / 1000, tz=datetime.timezone.utc)
    return JSONResponse(
        {
            "orgId": org_id,
            "datasetId": dataset_id,
            "transactionId": transaction_id,
            "expirationTime": expiration.isoformat().replace("+00:00", "Z"),
            "aborted": False,
        }
    )


@router.post("/v1/transaction/log", response_model=AsyncLogResponse)
def log_transaction(org_id: KeyOrgDep, transaction_id: str, body: LogAsyncRequest, request: Request) -> Response:
    """An upload URL for one batch profile of a transaction (as ``log/async``)."""
    store, config, signer = _parts(request)
    check_text(body)
    container = _transaction_container(store, org_id, transaction_id)
    state = _transaction_state(store, container)
    if state.get("state") == "aborted":
        raise _aborted(transaction_id)
    if state.get("state") != "open":
        raise ApiError(409, f"Transaction {transaction_id[:80]} was committed; start a new one for more profiles.")
    tags = _tags(body.segment_tags)
    upload = store.create_upload(
        container.id,
        "batch",
        ttl_seconds=config.url_ttl_seconds,
        dataset_timestamp=body.dataset_timestamp,
        segment_tags=tags,
    )
    return json_answer(
        AsyncLogResponse(
            id=upload.id,
            model_id=transaction_id.partition(".")[2],
            upload_url=upload_url(store, config, signer, base_url(config, request), upload),
            upload_timestamp=upload.created_at,
            tags=Segment(tags=list(body.segment_tags)),
        )
    )


@router.post("/v1/transaction/commit")
def commit_transaction(org_id: KeyOrgDep, transaction_id: str, request: Request) -> Response:
    """Make a transaction's uploaded profiles part of its dataset (a second commit changes nothing)."""
    store: Store = request.app.state.store
    container = _transaction_container(store, org_id, transaction_id)
    state = _transaction_state(store, container)
    if state.get("state") == "aborted":
        raise _aborted(transaction_id)
    dataset = store.dataset_container(org_id, transaction_id.partition(".")[2])
    moved = store.move_stored_uploads(container.id, dataset.id)
    if moved:
        bump_version(store, dataset.id)  # its stored timelines are out of date
    _set_state(store, container, state, "committed")
    if moved:  # the batches land in the dataset now: its timeline and monitors see them (not before)
        request.app.state.timeline.batch_stored(dataset.id)
    logger.info("committed a transaction of %d profiles into a dataset of org %s", len(moved), org_id)
    return JSONResponse({})


@router.post("/v1/transaction/abort")
def abort_transaction(org_id: KeyOrgDep, transaction_id: str, request: Request) -> Response:
    """Drop a transaction: its profiles are deleted, and a later commit answers 404 (aborted)."""
    store: Store = request.app.state.store
    container = _transaction_container(store, org_id, transaction_id)
    state = _transaction_state(store, container)
    if state.get("state") == "committed":
        raise ApiError(409, f"Transaction {transaction_id[:80]} was committed already; its profiles stay.")
    _set_state(store, container, state, "aborted")
    store.delete_uploads(container.id)
    return JSONResponse({})


@router.get("/v1/transaction")
def transaction_status(org_id: KeyOrgDep, transaction_id: str, request: Request) -> Response:
    """``{files: [upload ids]}``: the profiles uploaded to an open transaction so far."""
    store: Store = request.app.state.store
    container = _transaction_container(store, org_id, transaction_id)
    if _transaction_state(store, container).get("state") == "aborted":
        raise _aborted(transaction_id)
    store.learn_landed(container.id)
    return JSONResponse({"files": [upload.id for upload in store.list_profiles(container.id)]})


__all__ = ["DATASET_LINK_TTL_SECONDS", "dataset_link_token", "dataset_page_url", "router"]
