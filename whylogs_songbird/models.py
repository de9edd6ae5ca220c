"""Wire models of the songbird sessions API, shared by the client and the local server.

One definition of the wire format for both ends: Python attributes are snake_case, the JSON is
camelCase, and either spelling is accepted on input. Unknown fields are ignored on input, and
requests serialize only documented fields, leaving out optional ones that are unset.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

# -- wire constants: the one copy of each, for the client and the server --
#: The hosted WhyLabs service (being wound down): the endpoint a client talks to unless told otherwise.
HOSTED_ENDPOINT = "https://api.whylabsapp.com"
#: The request header carrying an API key.
API_KEY_HEADER = "X-API-Key"
#: The answer header of an upload PUT whose bytes repeat a profile already stored for the same
#: session, timestamp and segment: its value is the stored upload's id.
DUPLICATE_HEADER = "X-Songbird-Duplicate-Of"
#: The timeline of a session (JSON), as a path template.
TIMELINE_PATH = "/api/v1/sessions/{session_id}/timeline"

#: The observatory shows at most this many profiles at a time.
MAX_PROFILES_PER_LINK = 3
#: A guest session holds exactly one model.
GUEST_MODEL_ID = "model-1"

#: ``GET /healthz`` answers only ``{"status": "ok"}``, unless the request carries this header with the token
#: kept in ``<data dir>/health.token`` (readable only by the server's user): then also pid, data dir, ...
HEALTH_TOKEN_HEADER = "X-Songbird-Health-Token"  # noqa: S105 - a header name, not a secret
HEALTH_TOKEN_FILE = "health.token"  # noqa: S105 - a file name, not a secret

# -- request limits: the server answers 400 naming the limit, the client refuses before sending --
#: References in one batch request (``BatchLogReferenceRequest.references``).
MAX_REFERENCES_PER_BATCH = 1000
#: Segment tags of one batch profile (``LogAsyncRequest.segmentTags``).
MAX_SEGMENT_TAGS = 64
#: Characters in a segment tag's key.
MAX_TAG_KEY_LENGTH = 256
#: Characters in a segment tag's value.
MAX_TAG_VALUE_LENGTH = 1024
#: Characters in a reference profile's alias.
MAX_ALIAS_LENGTH = 256
#: Characters in a ``userId``, a ``region`` and a profile id in a link request.
MAX_ID_LENGTH = 256

#: Bounds of a timestamp: 64-bit integers, up to the largest one a float holds exactly (2**63 - 1024),
#: because OpenAPI documents carry bounds as floats: so the document states exactly the bound enforced.
MIN_TIMESTAMP, MAX_TIMESTAMP = -(2**63), 2**63 - 1024
#: Epoch milliseconds on the wire: a JSON integer (strict: ``true`` is not 1, ``"5"`` is not 5) of 64 bits.
Timestamp = Annotated[
    int, Field(strict=True, ge=MIN_TIMESTAMP, le=MAX_TIMESTAMP, json_schema_extra={"format": "int64"})
]


class WireModel(BaseModel):
    """Base of every wire model: camelCase JSON, snake_case Python, unknown fields ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict sent on the wire: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class SegmentTag(WireModel):
    key: str
    value: str


class CreateSessionRequest(WireModel):
    user_id: str = Field(max_length=MAX_ID_LENGTH)


class CreateSessionResponse(WireModel):
    id: str


class SessionMetadata(WireModel):
    session_id: str
    org_id: str
    model_id: str
    user_id: str


class GetSessionResponse(WireModel):
    session: SessionMetadata


class LogAsyncRequest(WireModel):
    """Ask for an upload URL for one batch (dataset) profile."""

    dataset_timestamp: Timestamp
    segment_tags: list[SegmentTag] = Field(default_factory=list, max_length=MAX_SEGMENT_TAGS)
    region: str | None = Field(default=None, max_length=MAX_ID_LENGTH)

    @field_validator("segment_tags")
    @classmethod
    def _bounded_tags(cls, tags: list[SegmentTag]) -> list[SegmentTag]:
        for index, tag in enumerate(tags):
            for part, value, limit, name in (
                ("key", tag.key, MAX_TAG_KEY_LENGTH, "MAX_TAG_KEY_LENGTH"),
                ("value", tag.value, MAX_TAG_VALUE_LENGTH, "MAX_TAG_VALUE_LENGTH"),
            ):
                if len(value) > limit:
                    raise ValueError(
                        f"segmentTags[{index}].{part} has {len(value)} characters; the limit is {limit} ({name})"
                    )
        return tags


class CreateDatasetProfileUploadResponse(WireModel):
    id: str
    upload_url: str = Field(repr=False)  # presigned: carries its signature
    observatory_url: str | None = None
    dataset_id: str | None = None
    upload_timestamp: int | None = None


class LogReferenceRequest(WireModel):
    """Ask for an upload URL for one reference profile."""

    alias: str | None = Field(default=None, max_length=MAX_ALIAS_LENGTH)
    dataset_timestamp: Timestamp | None = None
    region: str | None = Field(default=None, max_length=MAX_ID_LENGTH)


class LogSessionReferenceResponse(WireModel):
    id: str
    upload_url: str = Field(repr=False)  # presigned: carries its signature
    model_id: str | None = None
    alias: str | None = None
    observatory_url: str | None = None
    upload_timestamp: int | None = None


class BatchLogReferenceRequest(WireModel):
    references: list[LogReferenceRequest] = Field(min_length=1, max_length=MAX_REFERENCES_PER_BATCH)


class BatchLogSessionReferenceResponse(WireModel):
    references: list[LogSessionReferenceResponse]
    observatory_url: str | None = None


class GetProfileObservatoryLinkRequest(WireModel):
    batch_profile_timestamps: list[Timestamp] = Field(default_factory=list)
    reference_profile_ids: list[Annotated[str, Field(max_length=MAX_ID_LENGTH)]] = Field(default_factory=list)


class GetProfileObservatoryLinkResponse(WireModel):
    observatory_url: str
    individual_observatory_urls: list[str] = Field(default_factory=list)


class ErrorResponse(WireModel):
    """The body of a non-2xx answer."""

    message: str
