"""A digest packed from columns whose sketches are bytes (what the sandbox child exercises before
it answers) holds exactly those bytes, so the sketches the server's process will read are the ones
the child read and exercised; and the child's digest is the one whylogs' own reading gives."""

from __future__ import annotations

import logging

import pytest
from conftest import make_profile_bytes
from whylogs.core import DatasetProfileView

from whylogs_songbird.server import digest
from whylogs_songbird.server.digest import (
    digest_columns,
    digest_from_bytes,
    digest_view,
    pack_digest,
    raw_columns_from_bytes,
    raw_view_columns,
    sketch_bytes,
)
from whylogs_songbird.server.sandbox import summarise_in_child

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/digest.py")

SKETCHES = {"distribution": lambda d: d[2], "cardinality": lambda d: d, "frequent_items": lambda d: d}


def sketches(columns: dict) -> dict[tuple[str, str], bytes]:
    return {
        (name, field): sketch_bytes(take(data[field]))
        for name, data in columns.items()
        for field, take in SKETCHES.items()
        if field in data
    }


@pytest.mark.parametrize("seed", [1, 2])
def test_a_packed_digest_holds_exactly_the_sketch_bytes_it_was_packed_from(seed):
    data = make_profile_bytes(40, seed=seed)
    raw = raw_columns_from_bytes(data)
    found = sketches(raw)
    assert len(found) == 8 and all(isinstance(value, bytes) for value in found.values())  # x has no frequent items
    packed = pack_digest(raw)
    assert packed == digest_from_bytes(data) == digest_view(DatasetProfileView.deserialize(data))
    assert sketches(digest_columns(packed)) == found
    view = DatasetProfileView.deserialize(data)
    assert pack_digest(raw_view_columns(view)) == digest_view(view)


def test_the_childs_digest_is_the_packed_one_whether_the_check_ran_here_or_at_the_put():
    data = make_profile_bytes(30, seed=4)
    assert summarise_in_child(data, 10) == summarise_in_child(data, 10, checked=True) == digest_from_bytes(data)


def test_bytes_the_fast_path_does_not_take_are_read_by_whylogs_in_the_child(monkeypatch, caplog):
    data = make_profile_bytes(8, seed=2)
    expected = digest_view(DatasetProfileView.deserialize(data))

    def refuse(given: bytes) -> dict:
        raise ValueError("not a default shape")

    monkeypatch.setattr(digest, "raw_columns_from_bytes", refuse)
    with caplog.at_level(logging.DEBUG, logger="whylogs_songbird.server.sandbox"):
        assert summarise_in_child(data, 10) == expected
    (record,) = caplog.records
    assert record.getMessage() == "sandbox: the fast digest did not take these bytes; asking whylogs"
