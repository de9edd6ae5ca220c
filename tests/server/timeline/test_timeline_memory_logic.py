"""What the timeline service (whylogs_songbird/server/timeline_service.py) keeps in memory, and
within what bytes: built documents within ``doc_bytes``, the column names the cap on cells counts
within 16 MiB, and nothing else computed (a value dropped from the artefact cache is computed again).

Fakes at the seams only: the session's stored profiles (a list in the test), their loader (small
whylogs views logged in the test) and their column names (counted)."""

from __future__ import annotations

import functools
import json
from typing import Any

import pandas as pd
import pytest
import whylogs as why
from stored_listing import stored
from whylogs.core import DatasetProfileView

from whylogs_songbird.server.timeline_service import MemoryArtefacts, StoredProfile, TimelineQuery, TimelineService

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/timeline_service.py")

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
MiB = 1024 * 1024
DAILY = TimelineQuery(granularity="day")


@functools.cache
def logged(value: float) -> DatasetProfileView:
    return why.log(pd.DataFrame({"x": [value, value + 1.0]})).view()


def batch(name: str, timestamp: int) -> StoredProfile:
    return stored(name, timestamp, stored_at=1)


class Session:
    """Session ``s1``'s stored batches, their loader and their column names (each asking recorded)."""

    def __init__(self, *batches: StoredProfile, names: dict[str, tuple[str, ...]] | None = None) -> None:
        self.batches = list(batches)
        self.names = names or {}
        self.asked: list[str] = []

    def list_profiles(self, session_id: str) -> list[StoredProfile]:
        assert session_id == "s1"
        return list(self.batches)

    def load(self, profile: StoredProfile) -> DatasetProfileView:
        return logged(float(len(profile.id)))

    def column_names(self, profile: StoredProfile) -> tuple[str, ...]:
        self.asked.append(profile.id)
        return self.names.get(profile.id, ("x",))

    def service(self, **options: Any) -> TimelineService:
        return TimelineService(
            self.list_profiles, self.load, MemoryArtefacts(), column_names=self.column_names, **options
        )


def one_day() -> Session:
    return Session(batch("b1", T0 + HOUR), batch("b2", T0 + 2 * HOUR))


@pytest.mark.parametrize(("spare", "kept"), [(0, True), (-1, False)])
def test_a_built_document_is_kept_within_doc_bytes_and_no_computed_value_besides(spare, kept):
    size = len(one_day().service().document_bytes("s1", DAILY))
    service = one_day().service(doc_bytes=size + spare, memo_bytes=1)  # no parsed points kept
    first = service.document_bytes("s1", DAILY)
    assert service.computed == {"points": 1}
    service.cache.drop("s1", "")  # every stored value gone (e.g. dropped as least recently used)
    assert service.document_bytes("s1", DAILY) == first
    # a document of exactly doc_bytes is answered from memory; else its value is computed again (even
    # the last one computed: nothing but parsed points and documents is kept)
    assert service.computed == {"points": 1 if kept else 2}


@pytest.mark.parametrize(("spare", "asked_again"), [(0, []), (1, ["a", "b"])])
def test_the_column_names_counted_by_the_cap_on_cells_are_kept_within_16_mib(spare, asked_again):
    each = 8 * MiB - 64 - 56  # one name: a profile's names take 64 bytes, and 56 and its length per name
    names = {"a": ("a" * each,), "b": ("b" * (each + spare),)}
    session = Session(batch("a", T0 + HOUR), batch("b", T0 + DAY + HOUR), names=names)
    service = session.service()
    service.document_bytes("s1", DAILY)
    assert session.asked == ["a", "b"]
    session.asked.clear()
    ranged = service.document_bytes("s1", TimelineQuery(granularity="day", start=str(T0)))  # built again
    assert [b["profiles"] for b in json.loads(ranged)["buckets"]] == [1, 1]
    assert session.asked == asked_again  # 16 MiB + 1 byte: the least recently read (a, then b) go
