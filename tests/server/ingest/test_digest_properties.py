"""Property: the ingest worker's fast digest of serialized bytes (``digest_from_bytes``) equals
whylogs' own reading of them (``digest_view(DatasetProfileView.deserialize(data))``), for profiles
of generated frames: integers, floats with NaN and infinities, text, booleans, nulls, mixed types,
and no rows at all. Hand-picked frames are in test_digest_bytes.py."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import whylogs as why
from hypothesis import given, settings
from hypothesis import strategies as st
from whylogs.core import DatasetProfileView

from whylogs_songbird.column_stats import merge_views
from whylogs_songbird.server.digest import (
    digest_column,
    digest_columns,
    digest_from_bytes,
    digest_view,
    merge_digested,
    view_from_digest,
)

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/digest.py")

floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
VALUES = {
    "int": st.integers(-(2**53), 2**53),
    "float": floats,
    "text": st.text(max_size=6),
    "bool": st.booleans(),
    "mixed": st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none(), floats),
}


@st.composite
def frames(draw) -> pd.DataFrame:
    rows = draw(st.integers(0, 12))
    kinds = draw(st.lists(st.sampled_from(sorted(VALUES)), min_size=1, max_size=4))
    columns = {}
    for index, kind in enumerate(kinds):
        values = draw(st.lists(st.one_of(st.none(), VALUES[kind]), min_size=rows, max_size=rows))
        columns[f"{kind}_{index}"] = pd.Series(values, dtype=object if kind in ("text", "mixed", "bool") else None)
    return pd.DataFrame(columns)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # whylogs' variance of huge floats overflows to inf
@settings(max_examples=25)  # each example logs a frame with whylogs
@given(frame=frames())
def test_property_the_fast_digest_equals_whylogs_reading(frame):
    data = why.log(frame).view().serialize()
    expected = digest_view(DatasetProfileView.deserialize(data))
    assert digest_from_bytes(data) == expected
    columns = digest_columns(expected)
    assert sorted(columns) == sorted(frame.columns)
    for name in frame.columns:  # the digest holds the counts whylogs logged
        n, null = columns[name]["counts"][:2]
        assert n == len(frame)
        assert null == sum(1 for v in frame[name] if v is None or (isinstance(v, float) and math.isnan(v)))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@settings(max_examples=15, deadline=None)  # each example logs up to three frames with whylogs
@given(batch=st.lists(frames(), min_size=1, max_size=3))
def test_property_merging_digests_equals_merging_whylogs_views(batch):
    """A rollup's merge made from digested sketches (``merge_digested``) is whylogs' merge of the
    profiles' views, column by column (columns only some profiles have included); a dozen rows never
    fill a KLL sketch, so even its bytes are equal."""
    digests = [digest_from_bytes(why.log(frame).view().serialize()) for frame in batch]
    expected = merge_views([view_from_digest(d) for d in digests])
    merged = merge_digested([digest_columns(d) for d in digests])
    assert sorted(merged) == sorted(expected.get_columns())
    for name, column in expected.get_columns().items():  # NaN means compare as JSON text
        assert json.dumps(merged[name]) == json.dumps(digest_column(column)), name
