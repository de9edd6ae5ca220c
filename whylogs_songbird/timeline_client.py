"""Read a session's timeline from a songbird-compatible server (``GET /api/v1/sessions/{id}/timeline``),
or an organization's dataset's with an API key (``GET /api/v1/organizations/{org}/datasets/{dataset}/timeline``),
as the JSON document or as a pandas DataFrame for notebooks::

    from whylogs_songbird import timeline_frame

    frame = timeline_frame("http://127.0.0.1:8000", "session-…", granularity="day")
    frame[frame.drift_category == "DRIFT"]

This is the local server's own API (the hosted songbird has no timeline). The endpoint defaults to
the configured one (``SONGBIRD_API_ENDPOINT``, config file); the timeout to the configured timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import requests

from whylogs_songbird.config import resolve_settings
from whylogs_songbird.errors import SongbirdApiError, SongbirdConnectionError, SongbirdProtocolError
from whylogs_songbird.models import API_KEY_HEADER, DATASET_TIMELINE_PATH, TIMELINE_PATH
from whylogs_songbird.timeline import timeline_frame as _frame

logger = logging.getLogger("whylogs_songbird.timeline_client")


def timeline_url(endpoint: str, session_id: str) -> str:
    return endpoint.rstrip("/") + TIMELINE_PATH.format(session_id=quote(session_id, safe=""))


def fetch_timeline(
    session_id: str,
    *,
    endpoint: str | None = None,
    granularity: str | None = None,
    reference: str | None = None,
    segment: str | None = None,
    start: str | int | None = None,
    end: str | int | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """The timeline document of ``session_id`` (see ``docs/timeline.md``); ``start``/``end`` (epoch
    milliseconds or ISO 8601, UTC unless an offset is given) keep the buckets overlapping that range.

    Raises `SongbirdApiError` on a non-2xx answer (its message carries the server's), and
    `SongbirdConnectionError` when the server cannot be reached.
    """
    params = _params(granularity, reference, segment, start, end)
    return _fetch(lambda base: timeline_url(base, session_id), session_id, params, endpoint, timeout, {})


def dataset_timeline_url(endpoint: str, org_id: str, dataset_id: str) -> str:
    path = DATASET_TIMELINE_PATH.format(org_id=quote(org_id, safe=""), dataset_id=quote(dataset_id, safe=""))
    return endpoint.rstrip("/") + path


def fetch_dataset_timeline(
    org_id: str,
    dataset_id: str,
    *,
    api_key: str,
    endpoint: str | None = None,
    granularity: str | None = None,
    reference: str | None = None,
    segment: str | None = None,
    start: str | int | None = None,
    end: str | int | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """The timeline document of an organization's dataset, read with ``api_key`` (a key of that
    organization, sent as ``X-API-Key``); otherwise as :func:`fetch_timeline`. The key never
    appears in an error message."""
    params = _params(granularity, reference, segment, start, end)
    headers = {API_KEY_HEADER: api_key}
    name = f"{org_id}/{dataset_id}"
    return _fetch(lambda base: dataset_timeline_url(base, org_id, dataset_id), name, params, endpoint, timeout, headers)


def _params(
    granularity: str | None,
    reference: str | None,
    segment: str | None,
    start: str | int | None,
    end: str | int | None,
) -> dict[str, str]:
    given: list[tuple[str, str | int | None]] = [("granularity", granularity), ("reference", reference)]
    given += [("segment", segment)]
    given += [("start", start), ("end", end)]
    return {k: str(v) for k, v in given if v is not None and v != ""}


def _fetch(
    url_of: Callable[[str], str],
    name: str,
    params: dict[str, str],
    endpoint: str | None,
    timeout: float | None,
    headers: dict[str, str],
) -> dict[str, Any]:
    settings = resolve_settings({"endpoint": endpoint, "timeout": timeout})
    base = settings.endpoint  # checked by resolve_settings
    if settings.embedded:  # no endpoint set: the local server, started if need be
        from whylogs_songbird.background_server import ensure_server

        ensure_server(settings)
    session_id = name
    url = url_of(base)
    try:
        response = requests.get(
            url, params=params, headers=headers, timeout=(min(5.0, settings.timeout), settings.timeout)
        )
    except requests.RequestException as exc:
        raise SongbirdConnectionError(
            f"the timeline of {session_id} could not be fetched from {base} ({type(exc).__name__}); "
            "check that the server is up (songbird serve) and the endpoint is right"
        ) from None
    if response.status_code != 200:
        try:
            body = response.json()
        except ValueError:
            message = response.text[:200]
        else:
            message = str(body.get("message") or "") if isinstance(body, dict) else ""
        raise SongbirdApiError(
            f"the timeline of {session_id} could not be read: HTTP {response.status_code} {message}".rstrip(),
            status=response.status_code,
            operation="get_timeline",
            server_message=message,
        )
    try:
        data = response.json()
    except ValueError:
        raise SongbirdProtocolError(f"{base} answered the timeline request with something that is not JSON") from None
    if not isinstance(data, dict) or "buckets" not in data or "columns" not in data:
        raise SongbirdProtocolError(f"{base} answered the timeline request without buckets and columns")
    return data


def timeline_frame(
    endpoint: str | None,
    session_id: str,
    *,
    granularity: str | None = None,
    reference: str | None = None,
    segment: str | None = None,
    start: str | int | None = None,
    end: str | int | None = None,
    timeout: float | None = None,
) -> Any:
    """The timeline of ``session_id`` as a pandas DataFrame, one row per (bucket, column)."""
    document = fetch_timeline(
        session_id,
        endpoint=endpoint,
        granularity=granularity,
        reference=reference,
        segment=segment,
        start=start,
        end=end,
        timeout=timeout,
    )
    return _frame(document)


__all__ = ["dataset_timeline_url", "fetch_dataset_timeline", "fetch_timeline", "timeline_frame", "timeline_url"]
