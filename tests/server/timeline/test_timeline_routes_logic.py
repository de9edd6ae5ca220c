"""The timeline routes' own logic (whylogs_songbird/server/routes/timeline.py), without HTTP: bucket
labels in UTC, the page's view of a document (headers, comparison links, heatmap cells, alerts),
the query parameters, a stored upload as the timeline sees it, and errors worded for a session
or a dataset. The one fake is the Store, at the service's seam (its uploads and derived values).

The routes over HTTP are tests/server/timeline/test_timeline_server.py's.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pandas as pd
import pytest
import whylogs as why
from whylogs.core import DatasetProfileView

from whylogs_songbird.monitors import Monitor, MonitorsFile
from whylogs_songbird.profiles import serialize_view
from whylogs_songbird.server.digest import digest_view
from whylogs_songbird.server.errors import ApiError
from whylogs_songbird.server.observatory.container import PageContainer
from whylogs_songbird.server.routes.timeline import (
    StoreArtefacts,
    _format_p,
    _label,
    _stored,
    container_document,
    make_service,
    page_view,
    timeline_json_bytes,
    timeline_query,
)
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
        def digest(self, data: bytes) -> bytes:
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

    def digest(self, data: bytes) -> bytes:
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
    service = make_service(store, profiles=profiles)  # type: ignore[arg-type]
    first = service.document_bytes("session-1", TimelineQuery(granularity="week"))
    assert any(k.startswith("timeline/r/") for _, k in store.derived)  # the day rollups
    assert any(k.startswith("timeline/b/") for _, k in store.derived)  # the bucket values
    assert service.document_bytes("session-1", TimelineQuery(granularity="week")) == first
    assert listed == ["session-1"]  # answered at the session's version, without listing again
    service.upload_landed(SimpleNamespace(session_id="session-1", kind="reference"))
    assert ("session-1", "timeline/version") in store.derived
    service.document_bytes("session-1", TimelineQuery(granularity="week"))
    assert listed == ["session-1", "session-1"]


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
