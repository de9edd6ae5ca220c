"""The timeline routes' own logic (whylogs_songbird/server/routes/timeline.py), without HTTP: bucket
labels in UTC, the page's view of a document (headers, comparison links, heatmap cells, alerts),
the query parameters, a stored upload as the timeline sees it, and errors worded for a session
or a dataset. The routes' answers too: the session check, the JSON and its errors, the page (kept by the document
it shows) and its error pages, a dataset's page and JSON once a link's token opens them, and the router
and its mounting, whose endpoints are called directly. The fakes are the Store (its uploads, derived
values, guest sessions and datasets), the observatory's view cache and, for one test, the templates.

The routes over HTTP are tests/server/timeline/test_timeline_server.py's.
"""

from __future__ import annotations

import dataclasses
import html as html_text
import json
import re
import sys
import time
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pandas as pd
import pytest
import whylogs as why
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from jinja2 import DictLoader, Environment
from starlette.requests import Request
from whylogs.core import DatasetProfileView

from whylogs_songbird.column_stats import ProfileColumns
from whylogs_songbird.monitors import Monitor, MonitorsFile
from whylogs_songbird.profiles import serialize_view
from whylogs_songbird.server.datasets import link_token
from whylogs_songbird.server.digest import DigestError, digest_columns, digest_view
from whylogs_songbird.server.errors import ApiError
from whylogs_songbird.server.observatory.cache import LruCache
from whylogs_songbird.server.observatory.container import PageContainer
from whylogs_songbird.server.observatory.page import make_environment
from whylogs_songbird.server.rollups import read_version
from whylogs_songbird.server.routes.timeline import (
    PAGE_CACHE_BYTES,
    StoreArtefacts,
    TimelineSite,
    _format_p,
    _label,
    _stored,
    api_parameters,
    base_url,
    check_session,
    container_document,
    dataset_data,
    dataset_page,
    error_links,
    find_dataset,
    make_service,
    mount_timeline,
    no_dataset,
    page_cache,
    page_error,
    page_view,
    render_page,
    server_timing,
    session_json,
    session_page,
    timeline_json_bytes,
    timeline_query,
    timeline_router,
)
from whylogs_songbird.server.signing import UrlSigner
from whylogs_songbird.server.storage.base import UploadRecord
from whylogs_songbird.server.summaries import SummaryError
from whylogs_songbird.server.timeline_service import MemoryArtefacts, TimelineQuery, TimelineRequestError

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/routes/timeline.py")

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC, a Thursday


# -- labels -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "granularity", "label", "title"),
    [
        (T0 + 13 * HOUR, "hour", "01-01 13h", "2026-01-01 13:00 UTC"),
        (T0 - HOUR, "hour", "12-31 23h", "2025-12-31 23:00 UTC"),
        (T0, "day", "01-01", "2026-01-01 (UTC)"),
        (1_709_164_800_000, "day", "02-29", "2024-02-29 (UTC)"),
        # the Monday 2025-12-29 starts ISO week 1 of 2026
        (T0 - 3 * DAY, "week", "W01 12-29", "week 2026-W01 from 2025-12-29 (UTC)"),
        (T0 + 4 * DAY, "week", "W02 01-05", "week 2026-W02 from 2026-01-05 (UTC)"),
        (1_703_462_400_000, "week", "W52 12-25", "week 2023-W52 from 2023-12-25 (UTC)"),
        (1_706_745_600_000, "month", "2024-02", "February 2024 (UTC)"),
        (T0 - 31 * DAY, "month", "2025-12", "December 2025 (UTC)"),
        # year 10000 has no ISO week in Python's calendar; the bucket still has a label
        (253_402_300_800_000 + 2 * DAY, "week", "01-03", "week from 10000-01-03 (UTC)"),
        (-62_135_596_800_000 - DAY, "day", "12-31", "0000-12-31 (UTC)"),
    ],
)
def test_a_bucket_label_in_utc(start, granularity, label, title):
    assert _label(start, granularity) == (label, title)


def test_a_p_value_shows_three_significant_digits():
    assert _format_p(None) == ""
    assert _format_p(0.012345) == " p=0.0123"
    assert _format_p(1.0) == " p=1"


# -- the page's view of a document ---------------------------------------------------------------------------


def document(**changes: Any) -> dict[str, Any]:
    """Two days; column b drifted in the second, column a absent from it."""
    doc: dict[str, Any] = {
        "session_id": "session-1",
        "granularity": "day",
        "reference": {"id": "ref-1", "alias": "base", "timestamp": None},
        "segment": None,
        "buckets": [
            {"start": T0, "end": T0 + DAY, "profiles": 3},
            {"start": T0 + DAY, "end": T0 + 2 * DAY, "profiles": 2},
        ],
        "batch_timestamps": [[T0 + 1, T0 + 2, T0 + 3], [T0 + DAY + 1, T0 + DAY + 2]],
        "columns": {
            "a": {"count": [4, None], "drift_category": ["NO_DRIFT", None], "drift_p_value": [0.5, None],
                  "worst_drift": "NO_DRIFT"},
            "b": {"count": [4, 2], "drift_category": ["POSSIBLE_DRIFT", "DRIFT"], "drift_p_value": [0.01234, None],
                  "worst_drift": "DRIFT"},
            "c": {"count": [4, 2], "drift_category": [None, "WEIRD"], "drift_p_value": [None, 0.2],
                  "worst_drift": None},
        },
        "column_order": ["b", "a", "c"],
        "alerts": [{"monitor": "m", "column": "b", "start": T0 + DAY, "value": 2}],
        "references": [{"id": "ref-1"}],
        "segments": ["k=v"],
        "pending": ["log-1", "log-2"],
    }  # fmt: skip
    doc.update(changes)
    return doc


def query_of(link: str) -> tuple[str, list[tuple[str, str]]]:
    parts = urlsplit(link)
    return f"{parts.scheme}://{parts.netloc}{parts.path}", parse_qsl(parts.query)


def test_the_page_view_of_a_session_s_document():
    view = page_view(document(), "http://h")
    first, second = view["buckets"]
    assert (first["label"], first["start"], first["profiles"]) == ("01-01", T0, 3)
    # with a reference a comparison shows 2 profiles more: of 3 batches, only the last one
    assert first["title"] == "2026-01-01 (UTC): 3 profiles, the comparison opens the last one"
    assert query_of(first["link"]) == (
        "http://h/resources/model-1/profiles",
        [("profile", "ref-1"), ("profile", str(T0 + 3)), ("sessionToken", "session-1")],
    )
    assert second["title"] == "2026-01-02 (UTC)"
    assert query_of(second["link"])[1] == [
        ("profile", "ref-1"),
        ("profile", str(T0 + DAY + 1)),
        ("profile", str(T0 + DAY + 2)),
        ("sessionToken", "session-1"),
    ]
    assert view["rows"] == [
        {
            "name": "b",
            "worst": "DRIFT",
            "rank": 0,
            "cells": [("hP", "b · 01-01: POSSIBLE_DRIFT p=0.0123"), ("hD", "b · 01-02: DRIFT")],
        },
        {
            "name": "a",
            "worst": "NO_DRIFT",
            "rank": 2,
            "cells": [("hN", "a · 01-01: NO_DRIFT p=0.5"), ("hA", "a · 01-02: absent")],
        },
        {
            "name": "c",
            "worst": "",
            "rank": 3,
            "cells": [("hX", "c · 01-01: nothing to compare"), ("hX", "c · 01-02: WEIRD p=0.2")],
        },
    ]
    assert view["alerts"] == [{"monitor": "m", "column": "b", "start": T0 + DAY, "value": 2, "bucket": "01-02"}]
    assert (view["granularity"], view["segment"], view["segments"]) == ("day", None, ["k=v"])
    assert view["reference"] == {"id": "ref-1", "alias": "base", "timestamp": None}
    assert view["references"] == [{"id": "ref-1"}]
    assert (view["profiles"], view["pending"]) == (5, 2)


def test_without_a_reference_a_comparison_takes_three_batches_and_links_carry_the_segment():
    doc = document(reference=None, segment="k=v")
    doc["batch_timestamps"] = [[T0 + 1, T0 + 2, T0 + 3], [T0 + DAY + 1, T0 + DAY + 2, T0 + DAY + 3, T0 + DAY + 4]]
    first, second = page_view(doc, "http://h")["buckets"]
    assert first["title"] == "2026-01-01 (UTC)"
    assert [v for k, v in query_of(first["link"])[1] if k == "profile"] == [str(T0 + 1), str(T0 + 2), str(T0 + 3)]
    assert ("segment", "k=v") in query_of(first["link"])[1]
    assert [v for k, v in query_of(second["link"])[1] if k == "profile"] == [str(T0 + DAY + 4)]
    assert second["title"].endswith(": 2 profiles, the comparison opens the last one")


def test_a_dataset_s_links_go_to_its_own_pages_and_sparse_documents_have_defaults():
    dataset = PageContainer.dataset("c-1", "org-1", "model-1")
    doc = document(alerts=None, pending=None, references=None, segments=None)
    view = page_view(doc, "http://h", dataset)
    assert query_of(view["buckets"][0]["link"]) == (
        "http://h/organizations/org-1/datasets/model-1/profiles",
        [("profile", "ref-1"), ("profile", str(T0 + 3))],
    )
    assert (view["alerts"], view["pending"], view["references"], view["segments"]) == ([], 0, [], [])
    del doc["batch_timestamps"]
    assert page_view(doc, "http://h", dataset)["buckets"] == []


# -- query parameters and stored uploads ------------------------------------------------------------------------


def test_an_empty_parameter_is_no_parameter():
    assert timeline_query("", "", "", "", "") == TimelineQuery()
    assert timeline_query("day", "base", "k=v", "2024-01-01", "2024-02-01") == TimelineQuery(
        "day", "base", "k=v", "2024-01-01", "2024-02-01"
    )


def upload(id: str, **fields: Any) -> UploadRecord:
    values: dict[str, Any] = {
        "session_id": "session-1",
        "kind": "batch",
        "dataset_timestamp": T0,
        "alias": None,
        "segment_tags": (),
        "created_at": 1,
        "expires_at": 2,
        "stored_at": 5,
        "size": 10,
        "sha256": "abc",
    }
    values.update(fields)
    return UploadRecord(id=id, **values)


def test_a_stored_upload_as_the_timeline_sees_it():
    record = upload("log-1", segment_tags=(("k", "v"), ("z", "1")), alias="x", ingest_state="pending")
    profile = _stored(record)
    assert (profile.id, profile.kind, profile.dataset_timestamp, profile.alias) == ("log-1", "batch", T0, "x")
    assert (profile.segment, profile.identity, profile.stored_at, profile.pending) == (
        "k=v,z=1",
        "log-1:abc:10",
        5,
        True,
    )
    assert profile.record is record
    plain = _stored(upload("ref-1", kind="reference", stored_at=None, ingest_state="ready"))
    assert (plain.kind, plain.segment, plain.stored_at, plain.pending) == ("reference", "", 0, False)


# -- the service over a store, and errors worded for a session or a dataset -------------------------------------


class FakeStore:
    """The Store methods the timeline service uses: uploads, their bytes and the derived values."""

    def __init__(self, uploads: list[UploadRecord], data: dict[str, bytes] | None = None) -> None:
        self.uploads = uploads
        self.data = data or {}
        self.derived: dict[tuple[str, str], bytes] = {}
        self.nudged: list[str] = []
        self.containers: dict[str, Any] = {}
        self.guests: set[str] = set()
        self.datasets: dict[tuple[str, str], Any] = {}

    def list_profiles(self, session_id: str, kind: str | None = None) -> list[UploadRecord]:
        return [u for u in self.uploads if u.session_id == session_id and kind in (None, u.kind)]

    def _timed(self, session_id: str) -> list[UploadRecord]:
        return [u for u in self.list_profiles(session_id, "batch") if u.dataset_timestamp is not None]

    def batch_profiles_between(self, session_id: str, start: int | None, end: int | None) -> list[UploadRecord]:
        return [
            u
            for u in self._timed(session_id)
            if (start is None or u.dataset_timestamp >= start) and (end is None or u.dataset_timestamp < end)
        ]

    def batch_timestamp_span(self, session_id: str) -> tuple[int, int] | None:
        stamps = [u.dataset_timestamp for u in self._timed(session_id) if not u.invalid]
        return (min(stamps), max(stamps)) if stamps else None

    def batch_segments(self, session_id: str) -> list[tuple[tuple[str, str], ...]]:
        return list({u.segment_tags for u in self._timed(session_id) if not u.invalid})

    def batch_bucket_counts(self, session_id: str, size: int, offset: int = 0) -> tuple[int, int]:
        rows = [u for u in self._timed(session_id) if not u.invalid]
        every = {(u.dataset_timestamp + offset) // size for u in rows}
        return len(every), len({(u.dataset_timestamp + offset) // size for u in rows if u.ingest_state != "pending"})

    def batch_day_marks(self, session_id: str) -> dict[int, tuple[int, ...]]:
        marks: dict[int, list[tuple[str, str | None, int | None]]] = {}
        for u in self._timed(session_id):
            marks.setdefault(u.dataset_timestamp // 86_400_000, []).append((u.id, u.ingest_state, u.stored_at))
        return {day: tuple(sorted(found, key=str)) for day, found in marks.items()}  # type: ignore[misc]

    def batch_timestamps(self, session_id: str) -> list[tuple[int, tuple[tuple[str, str], ...], bool]]:
        return list(
            {
                (u.dataset_timestamp, u.segment_tags, u.ingest_state == "pending")
                for u in self._timed(session_id)
                if not u.invalid
            }
        )

    def read_profile_bytes(self, upload: UploadRecord) -> bytes:
        return self.data[upload.id]

    def get_derived(self, session_id: str, key: str) -> bytes | None:
        return self.derived.get((session_id, key))

    def put_derived(self, session_id: str, key: str, value: bytes) -> None:
        self.derived[(session_id, key)] = value

    def drop_derived(self, session_id: str, prefix: str, keep: str | None = None) -> None:
        for s, k in list(self.derived):
            if s == session_id and k.startswith(prefix) and (keep is None or not k.startswith(keep)):
                del self.derived[(s, k)]

    def nudge_landed(self, session_id: str) -> None:
        self.nudged.append(session_id)

    def container(self, container_id: str) -> Any:
        return self.containers.get(container_id)

    def get_summary(self, upload_id: str, sha256: str) -> bytes | None:
        return None

    def guest_session(self, session_id: str) -> Any:
        return SimpleNamespace(id=session_id) if session_id in self.guests else None

    def find_dataset(self, org_id: str, dataset_id: str) -> Any:
        return self.datasets.get((org_id, dataset_id))


def test_store_artefacts_are_the_store_s_derived_values():
    store = FakeStore([])
    artefacts = StoreArtefacts(store)  # type: ignore[arg-type]
    artefacts.put("s", "p/1", b"1")
    artefacts.put("s", "p/keep/2", b"2")
    artefacts.put("s", "q", b"3")
    assert artefacts.get("s", "p/1") == b"1" and artefacts.get("t", "p/1") is None
    artefacts.drop("s", "p/", "p/keep/")
    assert store.derived == {("s", "p/keep/2"): b"2", ("s", "q"): b"3"}


class FakeProfiles:
    """The observatory's view cache (the service's loader when the server has one)."""

    def __init__(self, views: dict[str, Any]) -> None:
        self.views = views

    def upload_view(self, upload: UploadRecord) -> Any:
        return self.views[upload.id]

    def state(self, upload: UploadRecord, patient: bool) -> str:
        return "pending" if upload.id == "log-3" else "ready"

    def upload_digest(self, upload: UploadRecord) -> dict[str, Any]:
        return dict.fromkeys(self.views[upload.id].get_columns())


def views() -> dict[str, Any]:
    return {
        "log-1": why.log(pd.DataFrame({"x": [1.0, 2.0]})).view(),
        "log-2": why.log(pd.DataFrame({"x": [3.0, 4.0, 5.0]})).view(),
        "log-3": why.log(pd.DataFrame({"x": [3.0]})).view(),
    }


def three_uploads() -> list[UploadRecord]:
    return [
        upload("log-1"),
        upload("log-2", dataset_timestamp=T0 + DAY),
        upload("log-3", dataset_timestamp=T0 + DAY, ingest_state="pending"),
        upload("log-4", dataset_timestamp=T0 + 2 * DAY, ingest_state="invalid"),
    ]


def test_the_service_bumps_the_version_itself_only_over_a_store_that_does_not_record_it():
    """A store whose recording of an upload changes the timeline version (the server's Store) needs
    no second change from the service; over any other store the service changes it itself."""
    plain = FakeStore(three_uploads())
    bumping = make_service(plain, profiles=FakeProfiles(views()))  # type: ignore[arg-type]
    assert bumping.bump is not None
    before = read_version(plain, "session-1")  # type: ignore[arg-type]
    bumping.bump("session-1")
    assert read_version(plain, "session-1") != before  # type: ignore[arg-type]
    recording = FakeStore(three_uploads())
    recording.records_timeline_version = True  # type: ignore[attr-defined]
    assert make_service(recording, profiles=FakeProfiles(views())).bump is None  # type: ignore[arg-type]


def test_the_service_over_a_store_reads_views_through_the_view_cache():
    store = FakeStore(three_uploads())
    service = make_service(store, profiles=FakeProfiles(views()))  # type: ignore[arg-type]
    found = service.document("session-1", TimelineQuery(granularity="day"))
    assert [b["profiles"] for b in found["buckets"]] == [1, 1]  # log-3 pending, log-4 invalid
    assert found["pending"] == ["log-3"]
    assert found["columns"]["x"]["count"] == [2, 3]
    assert store.nudged == ["session-1"]  # the ingest worker looks for uploads PUT to an object store
    assert service.computed == {"points": 2, "drift": 1}
    assert service.target_of("session-1") == ("session", "session-1")
    store.containers["c-1"] = type("Record", (), {"org_id": "org-1", "dataset_id": "model-1"})()
    assert service.target_of("c-1") == ("dataset", "org-1/model-1")


def test_the_service_without_a_view_cache_reads_digests_made_in_a_sandbox():
    from whylogs_songbird.server.sandbox import SandboxError

    class Sandbox:
        def digest(self, data: bytes, checked: object = None) -> bytes:
            raise SandboxError(f"cannot digest {len(data)} bytes")

    store = FakeStore([upload("log-1")], {"log-1": b"12345"})
    service = make_service(store, sandbox=Sandbox())  # type: ignore[arg-type]
    with pytest.raises(SummaryError) as caught:
        service.document("session-1", TimelineQuery())
    assert str(caught.value) == "cannot digest 5 bytes"


def test_a_dataset_s_document_names_it_and_errors_name_it_too():
    store = FakeStore(
        [upload("log-1", session_id="c-1"), upload("log-2", session_id="c-1", dataset_timestamp=T0 + DAY)]
    )
    service = make_service(store, profiles=FakeProfiles(views()))  # type: ignore[arg-type]
    dataset = PageContainer.dataset("c-1", "org-1", "model-1")
    found = json.loads(container_document(service, dataset, TimelineQuery()))
    assert found["session_id"] == "org-1/model-1"
    assert json.loads(timeline_json_bytes(service, dataset, TimelineQuery())) == found
    assert json.loads(container_document(service, PageContainer.session("c-1"), TimelineQuery()))["session_id"] == "c-1"
    with pytest.raises(ApiError) as caught:
        timeline_json_bytes(service, dataset, TimelineQuery(segment="k=v"))
    assert (caught.value.status, caught.value.message) == (
        404,
        "Dataset org-1/model-1 has no segment 'k=v'; its segments: none: its batches are not segmented.",
    )


class UnreadableProfiles(FakeProfiles):
    def upload_view(self, upload: UploadRecord) -> Any:
        raise SummaryError("its bytes are no profile")


def test_an_unreadable_profile_is_a_422_naming_the_container():
    store = FakeStore([upload("log-1", session_id="c-1")])
    service = make_service(store, profiles=UnreadableProfiles(views()))  # type: ignore[arg-type]
    for container, named in (
        (PageContainer.session("c-1"), "session c-1"),
        (PageContainer.dataset("c-1", "org-1", "model-1"), "dataset org-1/model-1"),
    ):
        with pytest.raises(ApiError) as caught:
            timeline_json_bytes(service, container, TimelineQuery())
        assert (caught.value.status, caught.value.message) == (
            422,
            f"A stored profile of {named} cannot be read: its bytes are no profile.",
        )


class DigestingSandbox:
    """A sandbox that digests the bytes it is given as the real one does (in this process)."""

    def __init__(self) -> None:
        self.digested = 0

    def digest(self, data: bytes, checked: object = None) -> bytes:
        self.digested += 1
        return digest_view(DatasetProfileView.deserialize(data))


class RecordingProfiles(FakeProfiles):
    def __init__(self, views: dict[str, Any]) -> None:
        super().__init__(views)
        self.asked: list[tuple[str, Any]] = []
        self.opened: list[str] = []

    def upload_view(self, upload: UploadRecord) -> Any:
        self.opened.append(upload.id)
        return super().upload_view(upload)

    def state(self, upload: UploadRecord, patient: bool) -> str:
        self.asked.append((upload.id, patient))
        return super().state(upload, patient)


def test_without_a_view_cache_every_stored_profile_is_ready_and_digested_in_the_sandbox():
    data = {k: serialize_view(v) for k, v in views().items()}
    store = FakeStore(three_uploads(), data)
    sandbox = DigestingSandbox()
    found = make_service(store, sandbox=sandbox).document("session-1", TimelineQuery(granularity="day"))  # type: ignore[arg-type]
    assert "pending" not in found  # nothing tells it log-3 is still held: it is read
    assert found["columns"]["x"]["count"] == [2, 4]
    assert sandbox.digested >= 3


def test_the_service_keeps_its_version_rollups_and_views_in_the_store():
    store = FakeStore([u for u in three_uploads() if u.id != "log-3"])  # none pending: the view is stored
    profiles = RecordingProfiles(views())
    listed: list[str] = []
    list_profiles = store.list_profiles

    def listing(session_id: str, kind: str | None = None) -> list[UploadRecord]:
        if kind is None:  # the whole session listed
            listed.append(session_id)
        return list_profiles(session_id, kind)

    store.list_profiles = listing  # type: ignore[method-assign]
    between = store.batch_profiles_between
    days: list[int | None] = []

    def day(session_id: str, start: int | None, end: int | None) -> list[UploadRecord]:
        days.append(start)
        return between(session_id, start, end)

    store.batch_profiles_between = day  # type: ignore[method-assign]
    service = make_service(store, profiles=profiles)  # type: ignore[arg-type]
    first = service.document_bytes("session-1", TimelineQuery(granularity="week"))
    assert any(k.startswith("timeline/r/") for _, k in store.derived)  # the day rollups
    assert any(k.startswith("timeline/b/") for _, k in store.derived)  # the bucket values
    # the batches read day by day (the store's day marks, an invalid batch's day too), never the whole session
    assert listed == [] and len(days) == len(store.batch_day_marks("session-1")) == 3
    assert service.document_bytes("session-1", TimelineQuery(granularity="week")) == first
    assert len(days) == 3  # answered at the session's version, without reading again
    version = store.derived.get(("session-1", "timeline/version"))
    service.upload_landed(SimpleNamespace(session_id="session-1", kind="reference"))
    assert store.derived[("session-1", "timeline/version")] != version
    read: list[str] = []
    get_derived = store.get_derived

    def reading(session_id: str, key: str) -> bytes | None:
        read.append(key)
        return get_derived(session_id, key)

    store.get_derived = reading  # type: ignore[method-assign]
    # a new version: built again, from the days kept (their marks did not change), and the names of
    # the unchanged rollups kept too: none of their headers (which name every member) is read again
    assert service.document_bytes("session-1", TimelineQuery(granularity="week")) == first
    assert listed == [] and len(days) == 3
    assert read and not [key for key in read if key.startswith("timeline/r/")]


def test_the_column_names_are_read_from_the_stored_digests():
    store = FakeStore(three_uploads())

    class NamesOnly(FakeProfiles):
        def upload_digest(self, upload: UploadRecord) -> dict[str, Any]:
            return dict.fromkeys(["x", "y", "z"])

    service = make_service(store, profiles=NamesOnly(views()))  # type: ignore[arg-type]
    service.max_cells = 5  # 2 days × 3 names from the digests; the views have one column
    with pytest.raises(TimelineRequestError, match="2 buckets × 3\\+ columns"):
        service.document("session-1", TimelineQuery(granularity="day"))


def test_a_given_cache_and_monitors_are_used():
    store = FakeStore(three_uploads())
    cache = MemoryArtefacts()
    monitors = MonitorsFile(monitors=(Monitor(name="rows", columns=("x",), metric="count", max=2.5),))
    profiles = RecordingProfiles(views())
    service = make_service(store, profiles=profiles, cache=cache, monitors=monitors)  # type: ignore[arg-type]
    found = service.document("session-1", TimelineQuery(granularity="day"))
    assert profiles.asked == [("log-3", False)]  # a request does not wait for the ingest worker
    assert found["pending"] == ["log-3"]
    assert [(a["monitor"], a["start"]) for a in found["alerts"]] == [("rows", T0 + DAY)]
    assert not any(k.startswith("timeline/b/") for _, k in store.derived)
    assert any(k.startswith("timeline/b/") for _, k in cache._data)


def test_a_container_s_document_is_watched_and_compact():
    store = FakeStore([upload("log-1", session_id="c-1")])
    service = make_service(store, profiles=FakeProfiles(views()))  # type: ignore[arg-type]
    data = container_document(service, PageContainer.dataset("c-1", "org-1", "model-1"), TimelineQuery())
    assert b", " not in data and b'": ' not in data
    assert ("c-1", "timeline/watched") in store.derived


def test_without_a_sandbox_the_service_makes_its_own_and_a_profile_s_missing_bytes_are_the_store_s_error():
    class Gone(FakeStore):
        def read_profile_bytes(self, upload: UploadRecord) -> bytes:
            raise FileNotFoundError(f"the bytes of {upload.id} are gone")

    service = make_service(Gone([upload("log-1")]))  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="the bytes of log-1 are gone"):
        service.document("session-1", TimelineQuery())


# -- the routes' answers ------------------------------------------------------------------------------------------

SID = "session-" + "a" * 16
OTHER_SID = "session-" + "b" * 16
SIGNER = UrlSigner(b"k" * 32)
#: What a dataset's access reads of the app: the server's signer and its configured public URL.
APP = SimpleNamespace(state=SimpleNamespace(signer=SIGNER, config=SimpleNamespace(public_url=None)))
DATASET_PATH = "/organizations/org-1/datasets/model-1"
LOCAL = "http://127.0.0.1:8123"


def request(path: str = "/", query: str = "", port: int = 8123, root_path: str = "") -> Request:
    """A GET as the server would be given it, on loopback (``root_path``: where a proxy mounts it)."""
    return Request(
        {
            "type": "http",
            "method": "GET",
            "scheme": "http",
            "server": ("127.0.0.1", port),
            "path": path,
            "root_path": root_path,
            "query_string": query.encode(),
            "headers": [],
            "app": APP,
        }
    )


def with_token(path: str, dataset_id: str = "model-1") -> Request:
    """A request opened by the token of a link to dataset ``dataset_id`` of org-1 (valid for an hour)."""
    return request(path, f"token={link_token(SIGNER, 'org-1', dataset_id, int(time.time()) + 3600)}")


def error_shown(page: Any) -> tuple[int, str, str]:
    """(status, title, message) an error page shows."""
    text = page.body.decode()
    shown = re.search(
        r'data-status="(\d+)".*id="error-title"><bdi>(.*?)</bdi>.*id="error-message"><bdi>(.*?)</bdi>', text, re.S
    )
    assert shown is not None, text
    return int(shown[1]), html_text.unescape(shown[2]), html_text.unescape(shown[3])


def session_store() -> FakeStore:
    """A guest session of two days (2 rows, then 3) and a reference aliased ``base``."""
    store = FakeStore(
        [
            upload("log-1", session_id=SID),
            upload("log-2", session_id=SID, dataset_timestamp=T0 + DAY),
            upload("ref-1", session_id=SID, kind="reference", alias="base"),
        ]
    )
    store.guests.add(SID)
    return store


def site_of(store: FakeStore, public_url: str | None = None, profiles: FakeProfiles | None = None) -> TimelineSite:
    all_views = {**views(), "ref-1": why.log(pd.DataFrame({"x": [1.0, 2.0, 3.0]})).view()}
    service = make_service(store, profiles=profiles or FakeProfiles(all_views))  # type: ignore[arg-type]
    return TimelineSite(store, service, make_environment(), page_cache(), public_url)  # type: ignore[arg-type]


def timing(response: Any, name: str, *, cpu: bool = False) -> bool:
    """Whether the answer's Server-Timing is ``name``'s milliseconds (and, with ``cpu``, ``name-cpu``'s)."""
    pattern = rf"{name};dur=\d+\.\d" + (rf", {name}-cpu;dur=\d+\.\d" if cpu else "")
    return re.fullmatch(pattern, response.headers["server-timing"]) is not None


def test_server_timing_is_milliseconds_with_one_decimal():
    assert server_timing("render", 2.0, 2.25) == "render;dur=250.0"
    assert server_timing("timeline", 1.0, 1.03125) == "timeline;dur=31.2"
    assert server_timing("x", 5.0, 5.0) == "x;dur=0.0"
    assert re.fullmatch(r"timeline;dur=\d+\.\d", server_timing("timeline", time.perf_counter()))


def test_links_start_at_the_public_url_else_where_the_request_was_sent():
    assert base_url(None, request()) == LOCAL
    assert base_url("", request(port=9)) == "http://127.0.0.1:9"
    assert base_url("http://127.0.0.1:9000/songbird//", request()) == "http://127.0.0.1:9000/songbird"
    # only slashes go, never the last letters of a path
    assert base_url("http://127.0.0.1:9000/BOX/", request()) == "http://127.0.0.1:9000/BOX"
    assert base_url(None, request(root_path="/BOX")) == f"{LOCAL}/BOX"


def test_only_a_guest_session_has_a_timeline():
    store = session_store()
    store.guests.add("session-short")  # no session id has this shape: never asked for
    assert check_session(store, SID) is None  # type: ignore[arg-type]
    cases = [
        ("model-1", 400, "'model-1' is not a session id: session ids look like session-…"),
        ("x" * 100, 400, f"'{'x' * 80}' is not a session id: session ids look like session-…"),
        (
            "session-short",
            404,
            "Session session-short is unknown to this server, or was claimed into an organization; "
            "a claimed session has no timeline here",
        ),
        (
            OTHER_SID,
            404,
            f"Session {OTHER_SID} is unknown to this server, or was claimed into an organization; "
            "a claimed session has no timeline here",
        ),
    ]
    for session_id, status, message in cases:
        with pytest.raises(TimelineRequestError) as caught:
            check_session(store, session_id)  # type: ignore[arg-type]
        assert (caught.value.status, caught.value.message) == (status, message)


def test_a_check_refuses_a_container_before_its_document_is_made():
    store = FakeStore([upload("log-1", session_id="c-1")])
    service = make_service(store, profiles=FakeProfiles(views()))  # type: ignore[arg-type]
    checked: list[str] = []

    def refuse(container_id: str) -> None:
        checked.append(container_id)
        raise TimelineRequestError(404, f"session {container_id} is gone")

    dataset = PageContainer.dataset("c-1", "org-1", "model-1")
    with pytest.raises(ApiError) as caught:
        timeline_json_bytes(service, dataset, TimelineQuery(), refuse)
    assert (caught.value.status, caught.value.message) == (404, "Dataset org-1/model-1 is gone.")
    assert checked == ["c-1"] and store.derived == {}
    assert json.loads(timeline_json_bytes(service, dataset, TimelineQuery(), checked.append))["session_id"] == (
        "org-1/model-1"
    )
    assert checked == ["c-1", "c-1"]


def test_a_session_s_json_and_its_errors():
    site = site_of(session_store())
    response = session_json(site, SID, TimelineQuery(granularity="day", reference="base"))
    assert (response.status_code, response.headers["content-type"]) == (200, "application/json")
    assert timing(response, "timeline", cpu=True)
    found = json.loads(response.body)
    assert (found["session_id"], found["reference"]["id"]) == (SID, "ref-1")
    assert [b["profiles"] for b in found["buckets"]] == [1, 1]
    assert found["columns"]["x"]["count"] == [2, 3]
    assert (SID, "timeline/watched") in site.store.derived  # type: ignore[attr-defined]
    cases = [
        (SID, TimelineQuery(granularity="fortnight"), 400, "Unknown granularity 'fortnight': give one of hour, day, "),
        ("model-1", TimelineQuery(), 400, "'model-1' is not a session id: session ids look like session-…."),
        (OTHER_SID, TimelineQuery(), 404, f"Session {OTHER_SID} is unknown to this server, or was claimed into an "),
    ]
    for session_id, query, status, message in cases:
        with pytest.raises(ApiError) as caught:
            session_json(site, session_id, query)
        assert caught.value.status == status and caught.value.message.startswith(message), caught.value.message
        assert caught.value.message.endswith(".")
    unreadable = site_of(session_store(), profiles=UnreadableProfiles(views()))
    with pytest.raises(ApiError) as caught:
        session_json(unreadable, SID, TimelineQuery())
    assert (caught.value.status, caught.value.message) == (
        422,
        f"A stored profile of session {SID} cannot be read: its bytes are no profile.",
    )


def test_a_session_s_json_times_its_wall_and_cpu_milliseconds_by_the_two_clocks(monkeypatch):
    """Server-Timing's two figures are each clock's difference across the document, in milliseconds."""
    from whylogs_songbird.server.routes import timeline as timeline_routes

    clocks = SimpleNamespace(perf_counter=iter([10.0, 10.5]).__next__, thread_time=iter([2.0, 2.25]).__next__)
    site = site_of(session_store())
    monkeypatch.setattr(timeline_routes, "time", clocks)
    response = session_json(site, SID, TimelineQuery(granularity="day"))
    assert response.headers["server-timing"] == "timeline;dur=500.0, timeline-cpu;dur=250.0"


def test_the_page_s_link_to_its_json_carries_the_given_parameters_in_order():
    assert api_parameters(TimelineQuery()) == []
    assert api_parameters(TimelineQuery("week", "base", "k=v", "2024-01-01", "2024-02-01")) == [
        ("granularity", "week"),
        ("reference", "base"),
        ("segment", "k=v"),
        ("start", "2024-01-01"),
        ("end", "2024-02-01"),
    ]
    assert api_parameters(TimelineQuery(segment="k=v", end="5")) == [("segment", "k=v"), ("end", "5")]


def test_an_error_page_says_what_went_wrong_and_leads_back():
    session = PageContainer.session(SID)
    dataset = PageContainer.dataset("c-1", "org-1", "model-1")
    refused = page_error(TimelineRequestError(404, f"session {SID} has no reference profiles yet"), session)
    assert (refused.status, refused.title, refused.message) == (
        404,
        "Timeline unavailable",
        f"Session {SID} has no reference profiles yet.",
    )
    for container, kind in ((session, "session"), (dataset, "dataset")):
        unreadable = page_error(SummaryError("its bytes are no profile"), container)
        assert (unreadable.status, unreadable.title, unreadable.message) == (
            422,
            "Profile cannot be read",
            f"A stored profile of this {kind} is unreadable: its bytes are no profile.",
        )
    store = session_store()
    assert error_links(store, dataset) == {"home_url": DATASET_PATH, "home_label": "org-1/model-1"}  # type: ignore[arg-type]
    assert error_links(store, session) == {"session_id": SID}  # type: ignore[arg-type]
    assert error_links(store, PageContainer.session(OTHER_SID)) == {"session_id": None}  # type: ignore[arg-type]


def test_a_session_s_page():
    site = site_of(session_store())
    page = render_page(
        site, PageContainer.session(SID), request(), TimelineQuery(granularity="day", start="2026-01-01")
    )
    html = page.body.decode()
    assert page.status_code == 200 and timing(page, "render")
    assert f"<title>Timeline · {SID} · " in html
    assert f'href="/api/v1/sessions/{SID}/timeline?granularity=day&amp;start=2026-01-01" id="timeline-json"' in html
    assert 'id="start" value="2026-01-01"' in html and 'id="end" value=""' in html
    assert '<option value="day" selected>day</option>' in html and '<option value="month">month</option>' in html
    assert (
        f'data-link="{LOCAL}/resources/model-1/profiles?profile=ref-1&amp;profile={T0}&amp;sessionToken={SID}"' in html
    )
    assert html.count('<td class="hN"') == 2  # x in both days, no drift against ref-1
    assert f'<a href="/sessions/{SID}">session <code>{SID}</code></a>' in html  # the crumbs: the session's pages
    assert f'method="get" action="/sessions/{SID}/timeline">' in html  # the form asks this page again
    until = render_page(site, PageContainer.session(SID), request(), TimelineQuery(end="2026-01-02")).body.decode()
    assert 'id="start" value=""' in until and 'id="end" value="2026-01-02"' in until
    assert until.count('<td class="hN"') == 1  # only the first day


def test_a_page_is_kept_by_the_document_the_links_and_the_json_it_shows():
    site = site_of(session_store())
    session = PageContainer.session(SID)
    first = render_page(site, session, request(), TimelineQuery(reference="base"))
    assert render_page(site, session, request(), TimelineQuery(reference="base")).body == first.body
    assert (site.pages.hits, len(site.pages)) == (1, 1)
    # the same document, asked for on another address: its own links
    elsewhere = render_page(site, session, request(port=9), TimelineQuery(reference="base")).body.decode()
    assert 'data-link="http://127.0.0.1:9/resources/' in elsewhere and LOCAL not in elsewhere
    # the same document, its reference named by id: the page's JSON link says so
    by_id = render_page(site, session, request(), TimelineQuery(reference="ref-1")).body.decode()
    assert f'href="/api/v1/sessions/{SID}/timeline?reference=ref-1" id="timeline-json"' in by_id
    # another document at the same address and JSON link: its own page
    fewer = session_store()
    fewer.uploads = [u for u in fewer.uploads if u.id != "log-2"]
    other = dataclasses.replace(site_of(fewer), pages=site.pages)
    single = render_page(other, session, request(), TimelineQuery(reference="base")).body.decode()
    assert single.count('<td class="hN"') == 1 and first.body.decode().count('<td class="hN"') == 2
    assert (site.pages.hits, len(site.pages)) == (1, 4)


def test_a_page_the_service_refuses_is_an_error_page_leading_back():
    site = site_of(session_store())
    bad = render_page(site, PageContainer.session(SID), request(), TimelineQuery(granularity="fortnight"))
    assert bad.status_code == 400 and timing(bad, "render")
    assert error_shown(bad) == (
        400,
        "Timeline unavailable",
        "Unknown granularity 'fortnight': give one of hour, day, week, month.",
    )
    assert f'<a href="/sessions/{SID}">Open the session\'s profiles</a>' in bad.body.decode()
    refused = session_page(site, OTHER_SID, request(), TimelineQuery())
    assert refused.status_code == 404 and error_shown(refused)[2].endswith("a claimed session has no timeline here.")
    assert 'href="/sessions/' not in refused.body.decode() and timing(refused, "render")
    assert session_page(site, "model-1", request(), TimelineQuery()).status_code == 400
    assert session_page(site, SID, request(), TimelineQuery()).status_code == 200
    unreadable = site_of(session_store(), profiles=UnreadableProfiles(views()))
    page = render_page(unreadable, PageContainer.dataset(SID, "org-1", "model-1"), request(), TimelineQuery())
    assert page.status_code == 422 and error_shown(page) == (
        422,
        "Profile cannot be read",
        "A stored profile of this dataset is unreadable: its bytes are no profile.",
    )
    assert f'<a href="{DATASET_PATH}">Open the dataset\'s profiles</a>' in page.body.decode()


def dataset_store() -> FakeStore:
    store = FakeStore(
        [upload("log-1", session_id="c-1"), upload("log-2", session_id="c-1", dataset_timestamp=T0 + DAY)]
    )
    store.datasets[("org-1", "model-1")] = SimpleNamespace(id="c-1")
    return store


def test_a_dataset_is_found_by_its_org_and_name():
    store = dataset_store()
    assert find_dataset(store, "org-1", "model-1") == PageContainer.dataset("c-1", "org-1", "model-1")  # type: ignore[arg-type]
    assert find_dataset(store, "org-1", "model-2") is None  # type: ignore[arg-type]
    assert no_dataset("org-1", "model-2") == (
        "Dataset model-2 of organization org-1 has no profiles on this server (never written, or deleted); "
        "write one with whylogs' writer('whylabs') pointed here."
    )


def opened(response: Any) -> bool:
    """Whether the answer keeps no copy and sets the cookie a link's first use sets."""
    cookie = response.headers.get("set-cookie", "")
    return response.headers["cache-control"] == "private, no-store" and cookie.startswith("songbird_dataset=")


def test_a_dataset_s_page_opened_by_a_link():
    site = site_of(dataset_store())
    page = dataset_page(site, "org-1", "model-1", with_token(f"{DATASET_PATH}/timeline"), TimelineQuery("day"))
    html = page.body.decode()
    assert page.status_code == 200 and opened(page) and timing(page, "render")
    assert f'href="{DATASET_PATH}/timeline/data?granularity=day" id="timeline-json"' in html
    assert f'data-link="{LOCAL}{DATASET_PATH}/profiles?profile={T0}"' in html
    missing = dataset_page(site, "org-1", "model-2", with_token("/", "model-2"), TimelineQuery())
    assert missing.status_code == 404 and opened(missing)
    assert error_shown(missing) == (404, "Dataset not found", no_dataset("org-1", "model-2"))
    login = dataset_page(site, "org-1", "model-1", request(f"{DATASET_PATH}/timeline"), TimelineQuery())
    assert (login.status_code, login.headers["location"]) == (
        303,
        "/login?next=%2Forganizations%2Forg-1%2Fdatasets%2Fmodel-1%2Ftimeline",
    )
    expired = dataset_page(site, "org-1", "model-1", with_token("/", "model-2"), TimelineQuery())  # another's link
    assert expired.status_code == 401 and error_shown(expired)[1] == "Link expired"


def test_a_dataset_s_json_opened_by_a_link():
    site = site_of(dataset_store())
    data = dataset_data(site, "org-1", "model-1", with_token(f"{DATASET_PATH}/timeline/data"), TimelineQuery("day"))
    assert (data.status_code, data.headers["content-type"]) == (200, "application/json") and opened(data)
    found = json.loads(data.body)
    assert (found["session_id"], [b["profiles"] for b in found["buckets"]]) == ("org-1/model-1", [1, 1])
    with pytest.raises(ApiError) as caught:
        dataset_data(site, "org-1", "model-2", with_token("/", "model-2"), TimelineQuery())
    assert (caught.value.status, caught.value.message) == (404, no_dataset("org-1", "model-2"))
    with pytest.raises(ApiError) as caught:
        dataset_data(
            site, "org-1", "model-1", with_token(f"{DATASET_PATH}/timeline/data"), TimelineQuery(reference="x")
        )
    assert (caught.value.status, caught.value.message) == (404, "Dataset org-1/model-1 has no reference profiles yet.")
    refused = dataset_data(site, "org-1", "model-1", request(f"{DATASET_PATH}/timeline/data"), TimelineQuery())
    assert refused.status_code == 401
    assert json.loads(refused.body)["message"] == (
        "The pages of organization org-1's datasets need an API key of the organization, or a link that carries a "
        "token. Send X-API-Key, or open the dataset's pages (a login or a link sets their cookie)."
    )


def test_the_page_cache_is_bounded_by_bytes():
    assert PAGE_CACHE_BYTES == 33_554_432
    cache = page_cache()
    assert (cache.max_bytes, cache.max_entries, cache.size_of) == (PAGE_CACHE_BYTES, None, sys.getsizeof)
    assert page_cache(1000).max_bytes == 1000


def endpoints(routes: list[Any]) -> dict[str, Any]:
    """The timeline routes among ``routes``, by path (an included router's too: newer FastAPI keeps one whole)."""
    found: dict[str, Any] = {}
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            found.update(endpoints(inner.routes))
        elif getattr(route, "path", "").endswith(("/timeline", "/timeline/data")):
            found[route.path] = route
    return found


def test_the_router_s_routes_answer_from_its_store_service_templates_and_cache():
    store = session_store()
    store.datasets[("org-1", "model-1")] = SimpleNamespace(id=SID)
    service = site_of(store).service
    templates = Environment(loader=DictLoader({"timeline.html": "page of {{ session_id }} at {{ api_url }}"}))
    pages = page_cache()
    router = timeline_router(store, service, public_url="http://127.0.0.1:9000/", env=templates, pages=pages)  # type: ignore[arg-type]
    found = endpoints(router.routes)
    described = {
        path: (
            sorted(route.methods),
            route.include_in_schema,
            route.response_class is HTMLResponse,
            route.summary,
            route.tags,
        )
        for path, route in found.items()
    }
    html_route = (["GET"], False, True, None, [])
    assert described == {
        "/api/v1/sessions/{session_id}/timeline": (
            ["GET"],
            True,
            False,
            "The timeline of a session: per-bucket series and drift of every column",
            ["timeline"],
        ),
        "/sessions/{session_id}/timeline": html_route,
        "/organizations/{org_id}/datasets/{dataset_id}/timeline": html_route,
        "/organizations/{org_id}/datasets/{dataset_id}/timeline/data": (["GET"], False, False, None, []),
    }
    answer = found["/api/v1/sessions/{session_id}/timeline"].endpoint(session_id=SID, query=TimelineQuery())
    assert json.loads(answer.body)["session_id"] == SID and timing(answer, "timeline", cpu=True)
    page = found["/sessions/{session_id}/timeline"].endpoint(
        session_id=SID, request=request(), query=TimelineQuery("day")
    )
    assert page.body.decode() == f"page of {SID} at /api/v1/sessions/{SID}/timeline?granularity=day"
    assert len(pages) == 1
    dataset = found["/organizations/{org_id}/datasets/{dataset_id}/timeline"].endpoint(
        org_id="org-1", dataset_id="model-1", request=with_token(DATASET_PATH), query=TimelineQuery("week")
    )
    assert dataset.body.decode() == f"page of org-1/model-1 at {DATASET_PATH}/timeline/data?granularity=week"
    assert opened(dataset) and len(pages) == 2
    data = found["/organizations/{org_id}/datasets/{dataset_id}/timeline/data"].endpoint(
        org_id="org-1", dataset_id="model-1", request=with_token(DATASET_PATH), query=TimelineQuery("week")
    )
    assert json.loads(data.body)["session_id"] == "org-1/model-1" and opened(data)
    # by default: the pages' templates, a cache of its own, links at the address asked
    plain = endpoints(timeline_router(store, service).routes)["/sessions/{session_id}/timeline"]  # type: ignore[arg-type]
    html = plain.endpoint(session_id=SID, request=request(), query=TimelineQuery()).body.decode()
    assert f"<title>Timeline · {SID} · " in html and f'data-link="{LOCAL}/resources/model-1/profiles?' in html
    assert len(pages) == 2


def test_mounted_routes_share_the_app_s_view_cache_and_keep_pages_in_the_app_s_state():
    store = session_store()
    app = FastAPI()
    app.state.observatory_cache = RecordingProfiles({**views(), "ref-1": views()["log-1"]})
    cache = MemoryArtefacts()
    monitors = MonitorsFile(monitors=(Monitor(name="rows", columns=("x",), metric="count", max=2.5),))
    service = mount_timeline(app, store, public_url="http://127.0.0.1:9000", monitors=monitors, cache=cache)  # type: ignore[arg-type]
    assert app.state.timeline is service
    pages = app.state.timeline_pages
    assert isinstance(pages, LruCache) and pages.max_bytes == PAGE_CACHE_BYTES and len(pages) == 0
    found = endpoints(app.routes)
    assert sorted(found) == [
        "/api/v1/sessions/{session_id}/timeline",
        "/organizations/{org_id}/datasets/{dataset_id}/timeline",
        "/organizations/{org_id}/datasets/{dataset_id}/timeline/data",
        "/sessions/{session_id}/timeline",
    ]
    page = found["/sessions/{session_id}/timeline"].endpoint(
        session_id=SID, request=request(), query=TimelineQuery("day")
    )
    assert 'data-link="http://127.0.0.1:9000/resources/model-1/profiles?' in page.body.decode() and len(pages) == 1
    assert app.state.observatory_cache.opened  # views through the app's view cache
    document = service.document(SID, TimelineQuery(granularity="day"))
    assert [(a["monitor"], a["start"]) for a in document["alerts"]] == [("rows", T0 + DAY)]
    assert any(k.startswith("timeline/b/") for _, k in cache._data)
    assert not any(k.startswith("timeline/b/") for _, k in store.derived)  # the bucket values: in the cache given
    bare = FastAPI()  # no view cache: profiles are digested in a sandbox; an empty session needs none
    empty = FakeStore([])
    assert mount_timeline(bare, empty).document(SID, TimelineQuery())["buckets"] == []  # type: ignore[arg-type]


# -- the service's reads of a store, one by one ----------------------------------------------------------


def two_sessions() -> FakeStore:
    """session-1: three valid batches over two days (two of one segment, one pending) and an invalid one;
    session-2: one batch of its own."""
    return FakeStore(
        [
            upload("log-1", segment_tags=(("k", "v"),)),
            upload("log-2", dataset_timestamp=T0 + DAY, segment_tags=(("k", "v"),), ingest_state="pending"),
            upload("log-3", dataset_timestamp=T0 + DAY + HOUR),
            upload("log-4", dataset_timestamp=T0 + 3 * DAY, ingest_state="invalid"),
            upload("ref-1", kind="reference"),
            upload("log-9", session_id="session-2", dataset_timestamp=T0 - DAY, segment_tags=(("z", "1"),)),
        ]
    )


def test_the_outline_reads_only_the_asked_session_s_batches():
    outline = make_service(two_sessions()).outline  # type: ignore[arg-type]
    assert outline is not None
    assert sorted(outline.segments("session-1")) == ["", "k=v"]
    assert list(outline.segments("session-2")) == ["z=1"]
    assert outline.span("session-1") == (T0, T0 + DAY + HOUR)
    assert outline.span("session-2") == (T0 - DAY, T0 - DAY)
    # by day, the two days; shifted by 23 hours (or back by one), log-1 and log-2 share a day and log-3 is
    # the next one's: three buckets, two of them without the pending log-2
    assert outline.bucket_counts("session-1", DAY, 0) == (2, 2)
    assert outline.bucket_counts("session-1", DAY, 23 * HOUR) == (3, 2)
    assert outline.bucket_counts("session-1", DAY, -HOUR) == (3, 2)
    assert outline.bucket_counts("session-1", HOUR, 0) == (3, 2)
    # two days from an odd day (T0 is day 20454): log-1 alone, then log-2 and log-3 together
    assert outline.bucket_counts("session-1", 2 * DAY, DAY) == (2, 2)
    assert outline.bucket_counts("session-1", 2 * DAY, 0) == (1, 1)
    assert outline.bucket_counts("session-2", HOUR, 0) == (1, 1)
    assert sorted(outline.timestamps("session-1")) == [
        (T0, "k=v", False),
        (T0 + DAY, "k=v", True),
        (T0 + DAY + HOUR, "", False),
    ]
    assert list(outline.timestamps("session-2")) == [(T0 - DAY, "z=1", False)]
    assert sorted(outline.day_marks("session-2")) == [(T0 - DAY) // DAY]
    assert [p.id for p in outline.references("session-1")] == ["ref-1"]
    assert [p.id for p in outline.batches_between("session-1", T0 + DAY, None)] == ["log-2", "log-3"]


def test_the_outline_labels_each_row_of_a_segment_alike():
    store = FakeStore(
        [upload(f"log-{i}", dataset_timestamp=T0 + i * HOUR, segment_tags=(("a", "1"), ("b", "2"))) for i in range(3)]
    )
    outline = make_service(store).outline  # type: ignore[arg-type]
    assert outline is not None
    assert sorted(outline.timestamps("session-1")) == [(T0 + i * HOUR, "a=1,b=2", False) for i in range(3)]
    assert list(outline.timestamps("session-2")) == []


class DigestProfiles(FakeProfiles):
    """A view cache whose digests are the real ones of its views."""

    def upload_digest(self, upload: UploadRecord) -> dict[str, Any]:
        return digest_columns(digest_view(self.views[upload.id]))


def test_a_profile_s_columns_come_from_its_digest_with_a_view_cache_else_from_its_view():
    store = FakeStore(three_uploads(), {k: serialize_view(v) for k, v in views().items()})
    stored = _stored(three_uploads()[1])
    with_cache = make_service(store, profiles=DigestProfiles(views())).columns(stored)  # type: ignore[arg-type]
    assert isinstance(with_cache, ProfileColumns) and list(with_cache.columns) == ["x"]
    assert with_cache.view(None).get_column("x").get_metric("counts").n.value == 3
    without = make_service(store, sandbox=DigestingSandbox()).columns(stored)  # type: ignore[arg-type]
    assert isinstance(without, DatasetProfileView)
    assert without.get_column("x").get_metric("counts").n.value == 3


def test_a_torn_digest_is_a_summary_error_saying_why():
    class Torn(FakeProfiles):
        def upload_digest(self, upload: UploadRecord) -> dict[str, Any]:
            raise DigestError(f"the digest of {upload.id} is torn")

    service = make_service(FakeStore(three_uploads()), profiles=Torn(views()))  # type: ignore[arg-type]
    with pytest.raises(SummaryError) as caught:
        service.columns(_stored(three_uploads()[0]))
    assert str(caught.value) == "the digest of log-1 is torn"


def test_the_service_s_version_is_the_store_s():
    store = FakeStore([])
    service = make_service(store, cache=MemoryArtefacts())  # type: ignore[arg-type]
    assert service.version is not None and service.version("session-1") == ""
    store.put_derived("session-1", "timeline/version", b"v7")
    assert (service.version("session-1"), service.version("session-2")) == ("v7", "")


def test_a_session_s_json_counts_the_cpu_its_document_took_within_its_time():
    site = site_of(session_store())
    while time.thread_time() < 0.2:  # a thread that has run a while: its CPU clock is far from zero
        pass
    response = session_json(site, SID, TimelineQuery(granularity="day"))
    # the CPU clock is read inside the span the other clock times, in one thread: it cannot say more,
    # and a document made of whylogs views takes some
    wall, cpu = (float(d) for d in re.findall(r"dur=(\d+\.\d)", response.headers["server-timing"]))
    assert 0 < cpu <= wall + 0.1, response.headers["server-timing"]
