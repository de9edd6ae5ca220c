"""Transport: one method per songbird sessions-API operation, plus the presigned PUT.

`SongbirdClient` owns one `requests.Session` (connection reuse), sends explicit connect/read
timeouts on every call, retries connection errors, 429 and 5xx with exponential backoff and
jitter (honouring ``Retry-After``), and turns every non-2xx answer into a typed error.
Upload URLs carry their signature in the query string: our logs show URLs without it, and a
filter blanks it in urllib3's log lines of our own requests (installed when the first client is
built, and acting only while one of our requests runs: other libraries' log lines are untouched).
"""

from __future__ import annotations

import errno
import html
import json
import logging
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from pydantic import ValidationError
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from whylogs_songbird.errors import (
    AuthError,
    ConfigError,
    RequestLimitError,
    SessionNotFoundError,
    SongbirdApiError,
    SongbirdConnectionError,
    SongbirdProtocolError,
)
from whylogs_songbird.models import (
    API_KEY_HEADER,
    DUPLICATE_HEADER,
    HOSTED_ENDPOINT,
    MAX_JSON_BYTES,
    AsyncLogResponse,
    BatchLogReferenceRequest,
    BatchLogSessionReferenceResponse,
    CreateDatasetProfileUploadResponse,
    CreateReferenceProfileRequest,
    CreateReferenceProfileResponse,
    CreateSessionRequest,
    CreateSessionResponse,
    GetProfileObservatoryLinkRequest,
    GetProfileObservatoryLinkResponse,
    GetSessionResponse,
    LogAsyncRequest,
    LogReferenceRequest,
    LogReferenceResponse,
    LogSessionReferenceResponse,
    Segment,
    SegmentTag,
    WireModel,
)

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = HOSTED_ENDPOINT
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 3
#: Retry n waits about ``backoff_factor * 2**(n-1)`` seconds (the first retry does not wait), plus jitter.
DEFAULT_BACKOFF_FACTOR = 0.25
#: A server asking to wait longer than this is not waited for: the retry happens after this many seconds.
MAX_RETRY_AFTER_SECONDS = 30.0
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

#: Operations that name a session: a 404 or 410 from them means the session is unknown, expired
#: or claimed. (``upload_profile``'s 404 is an unknown upload slot; ``create_session`` names none.)
SESSION_OPERATIONS = frozenset(
    {
        "get_session",
        "create_dataset_profile_upload",
        "create_reference_profile_upload",
        "batch_create_reference_profile_upload",
        "get_session_profile_observatory_link",
        "claim_guest_session",
        "delete_session",
    }
)

#: Operations of the WhyLabs log API on a dataset of an organization (API key in every call).
DATASET_OPERATIONS = frozenset(
    {"log_async", "log_reference", "create_reference_profile", "get_dataset_observatory_link"}
)

#: Operations sent once whatever the answer: urllib3 retries no DELETE, and an import is not idempotent.
UNRETRIED_OPERATIONS = frozenset({"delete_session", "delete_profile", "import_bundle"})

#: Bundles are read from the network in pieces of this size.
BUNDLE_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ImportedSession:
    """The session an import created: its id, how many profiles it holds and its page."""

    session_id: str
    profiles: int
    url: str


M = TypeVar("M", bound=WireModel)
Timeout = float | tuple[float, float]


def validate_endpoint(endpoint: str) -> str:
    """Return ``endpoint`` without a trailing slash, or raise `ConfigError` if it is not an http(s) URL."""
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise ConfigError("The songbird endpoint is empty: pass a URL such as https://api.whylabsapp.com.")
    candidate = endpoint.strip()
    parts = urlsplit(candidate)
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            "The songbird endpoint must not carry a user name or password (user:pass@host): "
            "songbird authenticates with an API key (api_key=... or SONGBIRD_API_KEY)."
        )
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"The songbird endpoint {candidate!r} is not an http(s) URL: "
            "give the full URL with its scheme, e.g. http://127.0.0.1:8737 or https://api.whylabsapp.com."
        )
    if parts.query or parts.fragment:
        shown = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        raise ConfigError(f"The songbird endpoint {shown!r} must not carry a query string or fragment.")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def redact_url(url: str) -> str:
    """The URL without its query string: presigned upload URLs carry their signature there."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


_SESSION_ID = re.compile(r"^[A-Za-z0-9._~-]{1,200}$")


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_name(value: str, what: str) -> str:
    """Return ``value``, or raise `ConfigError` unless it is an org or dataset id (``org-1234``, ``model-1``)."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(
            f"{str(value)[:80]!r} is not a valid {what} id: use 1 to 128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (for example org-1234 or model-1)."
        )
    return value


def validate_session_id(session_id: str) -> str:
    """Return ``session_id``, or raise `ConfigError` if it could change a request's path (``/``, ``..``, ``?``...)."""
    if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id) or session_id in (".", ".."):
        raise ConfigError(
            f"{session_id!r} is not a valid session id: session ids look like 'session-<random>' "
            "and hold only letters, digits and '-', '_', '.', '~'."
        )
    return session_id


_IN_OUR_REQUEST = threading.local()


class _RedactQueries(logging.Filter):
    """Blanks query strings in urllib3's log lines of our own requests, which show full URLs, and
    turns their "Retrying ..." warnings into DEBUG lines. Query strings:
    presigned upload URLs (the local server's ``signature=``, S3's ``X-Amz-Signature``,
    ``X-Amz-Credential``, ``X-Amz-Security-Token``) carry their secrets there. Log lines of
    requests made by other code in the process pass untouched."""

    _QUERY = re.compile(r"\?[^\s'\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_IN_OUR_REQUEST, "active", False):
            if record.levelno == logging.WARNING and str(record.msg).startswith("Retrying"):
                # each retry of ours is detail (DEBUG): the final outcome is what the caller reports
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
                    return False
            message = record.getMessage()
            if "?" in message:
                record.msg, record.args = self._QUERY.sub("?<redacted>", message), None
        return True


#: urllib3's loggers that name a request's URL: its retries, each answer, an answer whose headers
#: do not parse (a WARNING of ``urllib3.connection``) and a redirect.
_URL_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.connection", "urllib3.poolmanager")

_FILTER_LOCK = threading.Lock()
_FILTER_INSTALLED = False


def _install_redaction() -> None:
    global _FILTER_INSTALLED
    with _FILTER_LOCK:
        if _FILTER_INSTALLED:
            return
        for name in _URL_LOGGERS:
            logging.getLogger(name).addFilter(_RedactQueries())
        _FILTER_INSTALLED = True


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, its arguments that are exceptions, its causes and contexts: where the real reason hides."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if current in seen or len(seen) > 20:
            continue
        seen.append(current)
        todo.extend(arg for arg in current.args if isinstance(arg, BaseException))
        for attr in ("reason", "__cause__", "__context__"):
            linked = getattr(current, attr, None)
            if isinstance(linked, BaseException):
                todo.append(linked)
    return seen


def _session() -> requests.Session:
    """A requests session as the client sends with: its User-Agent, and the environment not read by
    requests on every request (proxy variables, CA bundle: a scan of os.environ costs ~0.7 ms a
    request) but once per origin (``SongbirdClient._environment``). Nothing else changes; .netrc is
    not consulted, so no Authorization header can reach a presigned upload URL."""
    session = requests.Session()
    session.headers["User-Agent"] = "whylogs-songbird"
    session.trust_env = False
    return session


def _sentence(advice: str) -> str:
    """The advice of :func:`connection_reason` as a sentence of a message."""
    return f"{advice[0].upper()}{advice[1:]}."


def connection_reason(exc: BaseException) -> tuple[str, str]:
    """(reason, what to do) for a failed connection, in words rather than urllib3 class names."""
    from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError, ReadTimeoutError

    chain = _chain(exc)
    text = " ".join(str(e) for e in chain).lower()
    if (
        any(isinstance(e, NameResolutionError) for e in chain)
        or "name or service not known" in text
        or ("nodename nor servname" in text or "failed to resolve" in text or "getaddrinfo" in text)
    ):
        return "the host name was not resolved", "check the host name in the endpoint"
    if any(isinstance(e, ssl.SSLError) for e in chain) or "ssl" in text:
        if "wrong version number" in text or "record layer" in text or "unknown protocol" in text:
            return (
                "TLS (https) was spoken to a port that speaks plain HTTP",
                "use http:// instead of https:// in the endpoint",
            )
        return "the TLS (https) handshake failed", "check the endpoint's certificate, or use http:// for a local server"
    if (
        any(isinstance(e, ConnectionRefusedError) for e in chain)
        or any(getattr(e, "errno", None) == errno.ECONNREFUSED for e in chain)
        or "connection refused" in text
    ):
        return "the connection was refused (nothing listens there)", "check that the server is running and the port"
    # urllib3's NewConnectionError is a ConnectTimeoutError too: only a real timeout counts here.
    timeouts = (ConnectTimeoutError, ReadTimeoutError, TimeoutError)
    timed_out = [e for e in chain if isinstance(e, timeouts) and not isinstance(e, NewConnectionError)]
    if timed_out or "timed out" in text:
        return "the connection timed out", "check that the server is up and reachable, or raise the timeout"
    if "reset by peer" in text or "remote end closed" in text or "connection aborted" in text:
        return "the server closed the connection", "check the server and any proxy in between"
    return "the connection failed", "check that the server is running and the endpoint is right"


class _Retry(Retry):
    """urllib3's Retry, with a ceiling on how long a ``Retry-After`` header may make us wait."""

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), MAX_RETRY_AFTER_SECONDS)


def _excerpt(response: requests.Response) -> str:
    """The server's ``message`` if the body is JSON, else a short readable excerpt of the body."""
    text = response.text or ""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value[:500]
        return json.dumps(body)[:300]
    content_type = response.headers.get("Content-Type", "")
    if "html" in content_type or text.lstrip().startswith("<"):
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        stripped = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
        stripped = " ".join(html.unescape(stripped).split())
        return f"an HTML page: {stripped[:200]}" if stripped else "an HTML page"
    return " ".join(text.split())[:300]


R = TypeVar("R", bound=WireModel)


def request_model(model: type[R], **fields: Any) -> R:
    """Build a request body, refusing one that breaks the API's limits (see ``models.py``) before
    anything is sent: :class:`RequestLimitError` says which field and which limit."""
    try:
        return model(**fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise RequestLimitError(
            f"Nothing was sent: the {model.__name__} breaks the songbird API's rules ({problems}). "
            "Shorten the values or send fewer items per request."
        ) from None


def reference_batches(
    references: list[LogReferenceRequest], limit: int = MAX_JSON_BYTES
) -> list[list[LogReferenceRequest]]:
    """``references`` split, in order, into batches whose request body (as ``requests`` encodes it:
    ``json.dumps`` with its defaults, so non-ASCII text counts as ``\\uXXXX`` escapes) stays within
    ``limit`` bytes. One reference is at most a few kB, so it always fits a batch of its own."""
    batches: list[list[LogReferenceRequest]] = []
    empty = len(json.dumps({"references": []}))
    separator = len(json.dumps([0, 0])) - len(json.dumps([0])) - 1  # the ", " between items
    current: list[LogReferenceRequest] = []
    size = empty
    for reference in references:
        item = len(json.dumps(reference.to_wire()))
        grown = size + item + (separator if current else 0)
        if current and grown > limit:
            batches.append(current)
            current, grown = [], empty + item
        current.append(reference)
        size = grown
    if current:
        batches.append(current)
    return batches


class SongbirdClient:
    """A client for the songbird sessions API.

    >>> client = SongbirdClient("http://127.0.0.1:8737")          # doctest: +SKIP
    >>> session_id = client.create_session(user_id).id           # doctest: +SKIP

    ``timeout`` is the read timeout in seconds (connecting waits at most 5 s of it), or a
    ``(connect, read)`` pair; ``max_retries=0`` disables retries.
    The API key is sent only where the contract asks for it (get_session, claim, and every call of
    the WhyLabs log API on a dataset) and never appears in logs, reprs or error messages.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        api_key: str | None = None,
        timeout: Timeout | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_factor: float = DEFAULT_BACKOFF_FACTOR,
        pool_size: int = 16,
        prepare: Callable[[], None] | None = None,
    ) -> None:
        self.endpoint = validate_endpoint(endpoint)
        #: Run once before the first request (the embedded default starts its local server there).
        self._prepare = prepare
        self._prepared = prepare is None
        self._prepare_lock = threading.Lock()
        _install_redaction()
        if max_retries < 0:
            raise ConfigError(f"max_retries must be 0 or more, not {max_retries}.")
        self._api_key = api_key or None
        self.timeout = self._check_timeout(timeout)
        self.max_retries = max_retries
        retry = _Retry(
            total=max_retries,
            connect=max_retries,
            read=max_retries,
            status=max_retries,
            other=0,
            allowed_methods=frozenset({"GET", "POST", "PUT"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=backoff_factor,
            backoff_jitter=backoff_factor / 2,
            backoff_max=10.0,
            respect_retry_after_header=True,
            raise_on_status=False,
            raise_on_redirect=False,
        )
        self._http = _session()
        self._environments: dict[str, dict[str, Any]] = {}
        adapter = HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
        self._http.mount("http://", adapter)
        self._http.mount("https://", adapter)

    @staticmethod
    def _check_timeout(timeout: Timeout | None) -> tuple[float, float]:
        """(connect, read) seconds. One number is the read timeout; connecting never waits longer than 5 s."""
        if timeout is None:
            return (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)
        pair: tuple[Any, ...] = ()
        if isinstance(timeout, int | float) and not isinstance(timeout, bool):
            pair = (min(DEFAULT_CONNECT_TIMEOUT, timeout), timeout)
        elif isinstance(timeout, tuple | list):
            pair = tuple(timeout)
        if len(pair) != 2 or any(isinstance(t, bool) or not isinstance(t, int | float) or t <= 0 for t in pair):
            raise ConfigError(
                f"timeout must be a positive number of seconds or a (connect, read) pair, not {timeout!r}."
            )
        return (float(pair[0]), float(pair[1]))

    def __repr__(self) -> str:
        key = ", api_key=***" if self._api_key else ""
        return f"SongbirdClient({self.endpoint!r}{key}, max_retries={self.max_retries})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SongbirdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the seven operations -------------------------------------------------------------

    def create_session(self, user_id: str) -> CreateSessionResponse:
        """Start a guest session for the installation ``user_id``."""
        body = request_model(CreateSessionRequest, user_id=user_id)
        return self._call("create_session", "POST", "/v0/sessions", body, CreateSessionResponse)

    def get_session(self, session_id: str, api_key: str | None = None) -> GetSessionResponse:
        """Describe a session (needs an API key)."""
        path = f"/v0/sessions/{quote(validate_session_id(session_id))}"
        return self._call("get_session", "GET", path, None, GetSessionResponse, api_key=self._key(api_key))

    def create_dataset_profile_upload(
        self,
        session_id: str,
        dataset_timestamp: int,
        segment_tags: list[SegmentTag] | None = None,
        region: str | None = None,
    ) -> CreateDatasetProfileUploadResponse:
        """Ask for an upload URL for one batch profile at ``dataset_timestamp`` (epoch ms)."""
        body = request_model(
            LogAsyncRequest, dataset_timestamp=dataset_timestamp, segment_tags=segment_tags or [], region=region
        )
        path = f"/v0/sessions/{quote(validate_session_id(session_id))}/upload"
        return self._call("create_dataset_profile_upload", "POST", path, body, CreateDatasetProfileUploadResponse)

    def create_reference_profile_upload(
        self,
        session_id: str,
        alias: str | None = None,
        dataset_timestamp: int | None = None,
        region: str | None = None,
    ) -> LogSessionReferenceResponse:
        """Ask for an upload URL for one reference profile."""
        body = request_model(LogReferenceRequest, alias=alias, dataset_timestamp=dataset_timestamp, region=region)
        path = f"/v0/sessions/{quote(validate_session_id(session_id))}/reference"
        return self._call("create_reference_profile_upload", "POST", path, body, LogSessionReferenceResponse)

    def batch_create_reference_profile_upload(
        self, session_id: str, references: list[LogReferenceRequest]
    ) -> BatchLogSessionReferenceResponse:
        """Ask for upload URLs for several reference profiles: one call, or several in order when the
        body would exceed the server's JSON limit (:func:`reference_batches`); the answers are joined."""
        request_model(BatchLogReferenceRequest, references=references)  # the count and each field, before any call
        path = f"/v0/sessions/{quote(validate_session_id(session_id))}/references"
        answered: list[LogSessionReferenceResponse] = []
        observatory_url: str | None = None
        for batch in reference_batches(references):
            body = BatchLogReferenceRequest(references=batch)
            response = self._call(
                "batch_create_reference_profile_upload", "POST", path, body, BatchLogSessionReferenceResponse
            )
            if len(response.references) != len(batch):
                raise SongbirdProtocolError(
                    f"batch_create_reference_profile_upload asked for {len(batch)} upload URLs "
                    f"but the server answered with {len(response.references)}."
                )
            answered.extend(response.references)
            observatory_url = observatory_url or response.observatory_url
        return BatchLogSessionReferenceResponse(references=answered, observatory_url=observatory_url)

    def get_session_profile_observatory_link(
        self,
        session_id: str,
        batch_profile_timestamps: list[int] | None = None,
        reference_profile_ids: list[str] | None = None,
    ) -> GetProfileObservatoryLinkResponse:
        """One observatory link for up to 3 profiles, plus one link per profile."""
        body = GetProfileObservatoryLinkRequest(
            batch_profile_timestamps=batch_profile_timestamps or [],
            reference_profile_ids=reference_profile_ids or [],
        )
        path = f"/v0/sessions/observatory-link/{quote(validate_session_id(session_id))}"
        return self._call("get_session_profile_observatory_link", "POST", path, body, GetProfileObservatoryLinkResponse)

    def claim_guest_session(self, session_id: str, org_id: str, api_key: str | None = None) -> None:
        """Copy a guest session into the organization ``org_id``; the session expires afterwards."""
        if not org_id or not isinstance(org_id, str):
            raise ConfigError("claim_guest_session needs the id of the organization to claim the session into.")
        path = f"/v0/sessions/{quote(validate_session_id(session_id))}/claim"
        self._request("claim_guest_session", "POST", path, None, api_key=self._key(api_key), params={"org_id": org_id})

    # -- the WhyLabs log API: a dataset of an organization, with the API key -------------

    def _dataset_path(self, route: str, org_id: str, dataset_id: str) -> str:
        org = quote(validate_name(org_id, "organization"), safe="")
        return f"/v0/organizations/{org}/log/{route}/{quote(validate_name(dataset_id, 'dataset'), safe='')}"

    def log_async(
        self,
        org_id: str,
        dataset_id: str,
        dataset_timestamp: int,
        segment_tags: list[SegmentTag] | None = None,
        api_key: str | None = None,
    ) -> AsyncLogResponse:
        """Ask for an upload URL for one batch profile (of one segment) of dataset ``dataset_id``."""
        body = request_model(LogAsyncRequest, dataset_timestamp=dataset_timestamp, segment_tags=segment_tags or [])
        path = self._dataset_path("async", org_id, dataset_id)
        return self._call("log_async", "POST", path, body, AsyncLogResponse, api_key=self._key(api_key))

    def log_reference(
        self,
        org_id: str,
        dataset_id: str,
        alias: str | None = None,
        dataset_timestamp: int | None = None,
        api_key: str | None = None,
    ) -> LogReferenceResponse:
        """Ask for an upload URL for one reference profile of dataset ``dataset_id``."""
        body = request_model(LogReferenceRequest, alias=alias, dataset_timestamp=dataset_timestamp)
        path = self._dataset_path("reference", org_id, dataset_id)
        return self._call("log_reference", "POST", path, body, LogReferenceResponse, api_key=self._key(api_key))

    def create_reference_profile(
        self,
        org_id: str,
        dataset_id: str,
        alias: str,
        dataset_timestamp: int | None,
        segments: list[list[SegmentTag]],
        api_key: str | None = None,
    ) -> CreateReferenceProfileResponse:
        """Ask for upload URLs for a segmented reference profile: ``upload_urls[i]`` takes ``segments[i]``."""
        body = request_model(
            CreateReferenceProfileRequest,
            alias=alias,
            dataset_timestamp=dataset_timestamp,
            segments=[Segment(tags=tags) for tags in segments],
        )
        org = quote(validate_name(org_id, "organization"), safe="")
        dataset = quote(validate_name(dataset_id, "dataset"), safe="")
        path = f"/v0/organizations/{org}/dataset-profiles/models/{dataset}/reference-profile"
        response = self._call(
            "create_reference_profile", "POST", path, body, CreateReferenceProfileResponse, api_key=self._key(api_key)
        )
        expected = max(len(segments), 1)  # no segments: one upload URL for the whole profile
        if len(response.upload_urls) != expected:
            raise SongbirdProtocolError(
                f"create_reference_profile asked for {expected} upload URLs "
                f"but the server answered with {len(response.upload_urls)}."
            )
        return response

    def get_dataset_observatory_link(
        self,
        org_id: str,
        dataset_id: str,
        batch_profile_timestamps: list[int] | None = None,
        reference_profile_ids: list[str] | None = None,
        api_key: str | None = None,
    ) -> GetProfileObservatoryLinkResponse:
        """One observatory link for up to 3 profiles of a dataset, plus one link per profile."""
        body = GetProfileObservatoryLinkRequest(
            batch_profile_timestamps=batch_profile_timestamps or [],
            reference_profile_ids=reference_profile_ids or [],
        )
        path = self._dataset_path("observatory-link", org_id, dataset_id)
        return self._call(
            "get_dataset_observatory_link",
            "POST",
            path,
            body,
            GetProfileObservatoryLinkResponse,
            api_key=self._key(api_key),
        )

    def delete_session(self, session_id: str) -> None:
        """Delete a guest session with all its profiles and their bytes (the session id is the
        credential); `SessionNotFoundError` when the server does not know it (or it was claimed)."""
        path = f"/v0/sessions/{quote(validate_session_id(session_id))}"
        self._request("delete_session", "DELETE", path, None)

    def delete_profile(self, session_id: str, profile_id: str) -> None:
        """Delete one profile of a guest session by the id its upload operation returned
        (``log-…`` for a batch, ``ref-…`` for a reference), with its bytes."""
        path = f"/v0/sessions/{quote(validate_session_id(session_id))}/profiles/{quote(profile_id, safe='')}"
        self._request("delete_profile", "DELETE", path, None)

    def export_session(self, session_id: str, target: BinaryIO) -> int:
        """Write the session's bundle (a zip of its profiles and a manifest, see
        ``docs/export-import.md``) to ``target`` as it streams in; the number of bytes written."""
        url = f"{self.endpoint}/api/v1/sessions/{quote(validate_session_id(session_id))}/export"
        response = self._send("export_session", "GET", url, headers={"Accept": "application/zip"}, stream=True)
        with response:
            if response.status_code != 200:
                raise self._error("export_session", response)
            written = 0
            try:
                for chunk in response.iter_content(BUNDLE_CHUNK_BYTES):
                    target.write(chunk)
                    written += len(chunk)
            except requests.exceptions.RequestException:
                raise SongbirdConnectionError(
                    f"export_session: the bundle from {self.endpoint} broke off after {written} bytes; try again."
                ) from None
        return written

    def import_bundle(self, source: BinaryIO) -> ImportedSession:
        """Send a bundle (an open binary file, streamed) to the server, which recreates it as a new
        session. Sent once, never retried: an import is not idempotent."""
        url = f"{self.endpoint}/api/v1/import"
        self._ensure_prepared()
        headers = {"Content-Type": "application/zip", "Accept": "application/json"}
        with _session() as http:  # no retry adapter: a retried POST would send a consumed body
            try:
                response = http.post(
                    url,
                    data=source,
                    headers=headers,
                    timeout=self.timeout,
                    allow_redirects=False,
                    **self._environment(url),
                )
            except requests.exceptions.RequestException as exc:
                reason, todo = connection_reason(exc)
                raise SongbirdConnectionError(
                    f"import_bundle: could not send the bundle to {url}: {reason}. {_sentence(todo)}"
                ) from None
        if response.status_code != 201:
            raise self._error("import_bundle", response)
        body = response.json()
        return ImportedSession(
            session_id=str(body["sessionId"]), profiles=int(body["profiles"]), url=str(body["observatoryUrl"])
        )

    # -- the presigned PUT ----------------------------------------------------------------

    def upload_profile(self, upload_url: str, data: bytes) -> str | None:
        """PUT serialized profile bytes to a presigned ``upload_url``; raises unless the server stored them.

        Returns the id of an earlier upload of identical bytes when the server says it kept that
        one instead (the ``X-Songbird-Duplicate-Of`` header), else None.
        """
        parts = urlsplit(upload_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SongbirdProtocolError(
                f"The server gave an upload URL that is not http(s): {redact_url(upload_url)!r}."
            )
        response = self._send(
            "upload_profile",
            "PUT",
            upload_url,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if not 200 <= response.status_code < 300:
            raise self._error("upload_profile", response)
        duplicate = response.headers.get(DUPLICATE_HEADER)
        return duplicate.strip() if duplicate and duplicate.strip() else None

    # -- plumbing -------------------------------------------------------------------------

    def _key(self, api_key: str | None) -> str:
        key = api_key or self._api_key
        if not key:
            raise ConfigError("This operation needs a WhyLabs API key: pass api_key=..., or set SONGBIRD_API_KEY.")
        return key

    def _call(
        self,
        operation: str,
        method: str,
        path: str,
        body: WireModel | None,
        response_model: type[M],
        api_key: str | None = None,
    ) -> M:
        response = self._request(operation, method, path, body, api_key=api_key)
        try:
            payload = response.json()
        except ValueError:
            raise SongbirdProtocolError(
                f"{operation}: the server at {self.endpoint} answered {response.status_code} with a body that is "
                f"not JSON ({_excerpt(response) or 'empty'}); check that the endpoint is a songbird API."
            ) from None
        try:
            return response_model.model_validate(payload)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()[:5]
            )
            raise SongbirdProtocolError(
                f"{operation}: the server's answer does not match the songbird contract ({problems})."
            ) from None

    def _request(
        self,
        operation: str,
        method: str,
        path: str,
        body: WireModel | None,
        *,
        api_key: str | None = None,
        params: dict[str, str] | None = None,
    ) -> requests.Response:
        headers = {"Accept": "application/json"}
        if api_key:
            headers[API_KEY_HEADER] = api_key
        url = self.endpoint + path
        response = self._send(
            operation,
            method,
            url,
            json=body.to_wire() if body is not None else None,
            headers=headers,
            params=params,
        )
        if not 200 <= response.status_code < 300:  # a redirect is not success: nothing was stored or done
            raise self._error(operation, response)
        return response

    def _ensure_prepared(self) -> None:
        if self._prepared:
            return
        with self._prepare_lock:
            if not self._prepared and self._prepare is not None:
                self._prepare()
                self._prepared = True

    def _retries(self, retried: bool = True) -> str:
        return f", after {self.max_retries} retries" if retried and self.max_retries else ""

    def _environment(self, url: str) -> dict[str, Any]:
        """Proxies and TLS settings from the environment for ``url``'s origin, as requests would read them."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        known = self._environments.get(origin)
        if known is not None:
            return known
        reader = requests.Session()  # trust_env on: exactly requests' own reading of the environment
        try:
            found = dict(reader.merge_environment_settings(origin + "/", {}, None, None, None))
        finally:
            reader.close()
        found.pop("stream", None)
        self._environments[origin] = found
        return found

    def _send(self, operation: str, method: str, url: str, **kwargs: Any) -> requests.Response:
        shown = redact_url(url)
        self._ensure_prepared()
        logger.debug("songbird %s: %s %s", operation, method, shown)
        _IN_OUR_REQUEST.active = True
        try:
            return self._http.request(
                method, url, timeout=self.timeout, allow_redirects=False, **self._environment(url), **kwargs
            )
        except requests.exceptions.Timeout as exc:
            reason = (
                "it did not connect in time"
                if isinstance(exc, requests.exceptions.ConnectTimeout)
                else ("it did not answer in time")
            )
            raise SongbirdConnectionError(
                f"{operation}: {shown} timed out: {reason} (limits {self.timeout[0]:g} s to connect, "
                f"{self.timeout[1]:g} s to answer{self._retries()}). Check that the server is up, or raise the timeout."
            ) from None
        except requests.exceptions.ConnectionError as exc:
            if self._prepare is not None:
                self._prepared = False  # the embedded server may have stopped: check it again next time
            reason, todo = connection_reason(exc)
            raise SongbirdConnectionError(
                f"{operation}: could not reach {shown}: {reason}{self._retries()}. {_sentence(todo)}"
                + self._hosted_hint()
            ) from None
        except requests.exceptions.ChunkedEncodingError:
            raise SongbirdConnectionError(
                f"{operation}: the answer from {shown} broke off before its end (the connection closed mid-answer). "
                "Try again; if it keeps happening, check the server or any proxy in between."
            ) from None
        except requests.exceptions.RequestException as exc:
            raise SongbirdConnectionError(f"{operation}: request to {shown} failed ({type(exc).__name__}).") from None
        finally:
            _IN_OUR_REQUEST.active = False

    def _hosted_hint(self) -> str:
        if self.endpoint != HOSTED_ENDPOINT:  # validate_endpoint dropped any trailing slash
            return ""
        return (
            f" ({HOSTED_ENDPOINT} is the hosted WhyLabs service, which is being wound down: remove the endpoint "
            "setting to publish to a local songbird server, started for you.)"
        )

    def _error(self, operation: str, response: requests.Response) -> SongbirdApiError:
        status = response.status_code
        server_message = _excerpt(response)
        said = f": {server_message.rstrip('. ')}" if server_message else ""
        base = f"{operation}: the server answered {status}{said}"
        kwargs: dict[str, Any] = {"status": status, "operation": operation, "server_message": server_message}
        if operation == "upload_profile" and status == 403:
            return AuthError(
                f"{base}. The upload URL was refused (expired or invalid signature): ask for a new upload URL.",
                **kwargs,
            )
        if status in (401, 403) and operation in DATASET_OPERATIONS:
            reason = (
                "the API key was refused (unknown, revoked or missing on this server)"
                if status == 401
                else "this key belongs to another organization"
            )
            todo = (
                "Check the key (api_key=..., SONGBIRD_API_KEY or WHYLABS_API_KEY)."
                if status == 401
                else "Use a key of the organization you named (org_id=..., SONGBIRD_ORG_ID), or name the key's org."
            )
            return AuthError(f"{operation}: {reason} ({status}). {todo}{self._hosted_hint()}", **kwargs)
        if status in (401, 403):
            hint = (
                "Check the API key (SONGBIRD_API_KEY) and that it belongs to the organization you named."
                if status == 403
                else "Pass a valid API key (api_key=... or SONGBIRD_API_KEY)."
            )
            return AuthError(f"{base}. {hint}{self._hosted_hint()}", **kwargs)
        if 300 <= status < 400:
            location = redact_url(response.headers.get("Location", "")) or "nowhere"
            return SongbirdApiError(
                f"{operation}: the server answered {status}, a redirect to {location}, which is not followed: "
                "nothing was stored or changed. Use the final URL as the endpoint (e.g. https, or without a path).",
                **kwargs,
            )
        if is_session_not_found(operation, status, server_message):
            return SessionNotFoundError(
                f"{base}. The session is unknown, expired or claimed: start a new session.", **kwargs
            )
        retried = self._retries(status in RETRY_STATUSES and operation not in UNRETRIED_OPERATIONS)
        if status == 429:
            return SongbirdApiError(f"{base}. The server is rate limiting{retried}: try again later.", **kwargs)
        if status >= 500:
            if status in RETRY_STATUSES:
                return SongbirdApiError(f"{base}. The server failed{retried}: try again later.", **kwargs)
            return SongbirdApiError(
                f"{base}. The server does not support this request: check that the endpoint is a songbird API."
                + self._hosted_hint(),
                **kwargs,
            )
        not_session = operation not in SESSION_OPERATIONS and operation not in ("upload_profile", "delete_profile")
        if status == 404 and not_session:
            return SongbirdApiError(
                f"{base}. Check that the endpoint is a songbird API.{self._hosted_hint()}", **kwargs
            )
        return SongbirdApiError(base + ".", **kwargs)


_GONE_WORDS = ("not found", "expired", "unknown", "does not exist", "no such", "claimed")


def is_session_not_found(operation: str, status: int, server_message: str = "") -> bool:
    """Does ``status`` from ``operation`` mean that the session is unknown, expired or claimed?

    Only operations that name a session can say so: 404 and 410 always do; 400 does when the
    server's message says the session is gone (the hosted service has answered expired sessions
    with 400), not for a request it found malformed.
    """
    if operation not in SESSION_OPERATIONS:
        return False
    if status in (404, 410):
        return True
    lowered = server_message.lower()
    return status == 400 and "session" in lowered and any(word in lowered for word in _GONE_WORDS)
