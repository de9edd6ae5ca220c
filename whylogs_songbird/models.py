"""Wire models of the songbird sessions API, shared by the client and the local server.

One definition of the wire format for both ends: Python attributes are snake_case, the JSON is
camelCase, and either spelling is accepted on input. Unknown fields are ignored on input, and
requests serialize only documented fields, leaving out optional ones that are unset.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

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
#: The timeline of an organization's dataset (read with a key of the organization, as ``X-API-Key``).
DATASET_TIMELINE_PATH = "/api/v1/organizations/{org_id}/datasets/{dataset_id}/timeline"

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
#: Bytes of a JSON request body the server accepts by default (its ``--max-json-bytes``); the client
#: splits a batch of references whose body would be larger into several requests.
MAX_JSON_BYTES = 1024 * 1024
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


#: Bounds of a profile's ``datasetTimestamp`` when a slot is made: a UTC time in years 1 to 9999, the
#: range every calendar (Python's ``datetime``, the observatory's labels) can show.
MIN_DATASET_TIMESTAMP = -62_135_596_800_000  # 0001-01-01T00:00:00.000Z
MAX_DATASET_TIMESTAMP = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def _in_calendar_range(value: int) -> int:
    if not MIN_DATASET_TIMESTAMP <= value <= MAX_DATASET_TIMESTAMP:
        raise PydanticCustomError(
            "timestamp_range",
            "{value} is outside years 1 to 9999: give epoch milliseconds (UTC) from {low} to {high}",
            {"value": value, "low": MIN_DATASET_TIMESTAMP, "high": MAX_DATASET_TIMESTAMP},
        )
    return value


#: The ``datasetTimestamp`` of a new profile slot: a :data:`Timestamp` within years 1 to 9999 UTC.
#: (Link requests take any :data:`Timestamp`: they look up what is stored.)
DatasetTimestamp = Annotated[
    int,
    Field(
        strict=True,
        json_schema_extra={"format": "int64", "minimum": MIN_DATASET_TIMESTAMP, "maximum": MAX_DATASET_TIMESTAMP},
    ),
    AfterValidator(_in_calendar_range),
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

    dataset_timestamp: DatasetTimestamp
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
    dataset_timestamp: DatasetTimestamp | None = None
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


# -- the WhyLabs log API (datasets of organizations, API keys), as whylogs' WhyLabsWriter calls it --

#: Segments of one segmented reference profile (``CreateReferenceProfileRequest.segments``).
MAX_REFERENCE_SEGMENTS = 1000


class Segment(WireModel):
    """One segment: its tags (WhyLabs' ``Segment``)."""

    tags: list[SegmentTag] = Field(default_factory=list, max_length=MAX_SEGMENT_TAGS)

    @field_validator("tags")
    @classmethod
    def _bounded_tags(cls, tags: list[SegmentTag]) -> list[SegmentTag]:
        return LogAsyncRequest._bounded_tags(tags)  # the same limits as a batch's segment tags


class AsyncLogResponse(WireModel):
    """The answer to ``log/async``: where to PUT one batch profile."""

    id: str
    model_id: str
    upload_url: str = Field(repr=False)  # presigned: carries its signature
    upload_timestamp: int
    tags: Segment


class LogReferenceResponse(WireModel):
    """The answer to ``log/reference``: where to PUT one reference profile."""

    id: str
    model_id: str
    alias: str
    upload_url: str = Field(repr=False)
    upload_timestamp: int


class CreateReferenceProfileRequest(LogReferenceRequest):
    """A reference profile of several segments (``dataset-profiles/.../reference-profile``)."""

    segments: list[Segment] = Field(default_factory=list, max_length=MAX_REFERENCE_SEGMENTS)


class CreateReferenceProfileResponse(WireModel):
    """One reference id; ``uploadUrls`` pair with the request's segments by position."""

    id: str
    alias: str
    dataset_id: str
    upload_timestamp: int
    segments: list[str]
    upload_urls: list[str] = Field(repr=False)


#: Characters of a schema field (``classifier``, ``dataType``, ``discreteness``, a metric's name).
MAX_SCHEMA_WORD = 64
#: Columns in one set of weights.
MAX_WEIGHTED_COLUMNS = 20_000


class ColumnSchema(WireModel):
    """What an org says of one column (``tag_output_columns``): ``classifier`` input or output, ..."""

    classifier: str | None = Field(default=None, max_length=MAX_SCHEMA_WORD)
    data_type: str | None = Field(default=None, max_length=MAX_SCHEMA_WORD)
    discreteness: str | None = Field(default=None, max_length=MAX_SCHEMA_WORD)
    tags: list[Annotated[str, Field(max_length=MAX_ID_LENGTH)]] | None = Field(default=None, max_length=64)


class MetricSchema(WireModel):
    """A custom performance metric of a dataset (``tag_custom_performance_column``)."""

    label: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    column: str = Field(min_length=1, max_length=4096)
    default_metric: str | None = Field(default=None, max_length=MAX_SCHEMA_WORD)
    builtin_metric: str | None = Field(default=None, max_length=MAX_SCHEMA_WORD)


class SegmentWeight(WireModel):
    """The weights of the columns of one segment (None: the whole dataset)."""

    segment: Segment | None = None
    weights: dict[str, Annotated[float, Field(allow_inf_nan=False)]] = Field(max_length=MAX_WEIGHTED_COLUMNS)


class PutWeightsRequest(WireModel):
    """``PUT …/weights`` (whylogs' ``write_feature_weights``)."""

    segment_weights: list[SegmentWeight] = Field(min_length=1, max_length=MAX_REFERENCE_SEGMENTS)


class TransactionStartRequest(WireModel):
    """``POST /v1/transaction``: the dataset whose profiles the transaction holds back until commit."""

    dataset_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
