"""The ingest worker's fast digest equals whylogs' own reading of the same bytes.

``digest_from_bytes`` reads profiles of whylogs' default metrics straight from their protobuf
messages; the expected value is always ``digest_view(DatasetProfileView.deserialize(data))``,
whylogs' deserializer followed by the digest of the view it gives. Where whylogs refuses the
bytes, ``summarise_bytes`` refuses them too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import whylogs as why
from profile_crafting import rewrite_chunks
from whylogs.core import DatasetProfileView
from whylogs.core.metrics.condition_count_metric import Condition, ConditionCountConfig, ConditionCountMetric
from whylogs.core.relations import Predicate
from whylogs.core.resolvers import STANDARD_RESOLVER, MetricSpec, ResolverSpec
from whylogs.core.schema import DatasetSchema, DeclarativeSchema
from whylogs.core.segmentation_partition import segment_on_column

from whylogs_songbird.profiles import serialize_view
from whylogs_songbird.server import digest
from whylogs_songbird.server.digest import digest_from_bytes, digest_view, view_from_digest
from whylogs_songbird.server.sandbox import summarise_bytes
from whylogs_songbird.server.summaries import SummaryError

#: scripts/mutation runs this file against the mutants of these modules
pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/digest.py")


def _refuse(*args, **kwargs):
    raise AssertionError("whylogs' column deserializer was used")


def whylogs_digest(data: bytes) -> bytes:
    return digest_view(DatasetProfileView.deserialize(data))


def assert_whylogs_verdict(data: bytes) -> None:
    """``summarise_bytes`` gives whylogs' digest when whylogs reads ``data``, and refuses it when whylogs does."""
    try:
        expected = whylogs_digest(data)
    except Exception:
        with pytest.raises(SummaryError):
            summarise_bytes(data)
    else:
        assert summarise_bytes(data) == expected


def mixed_frame(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    floats = rng.normal(5, 2, rows)
    floats[::7] = np.nan
    floats[-1] = np.inf
    return pd.DataFrame(
        {
            "ints": rng.integers(-50, 50, rows),
            "floats": floats,
            "strings": rng.choice(["a", "b", "c", None], rows),
            "bools": rng.choice([True, False], rows),
            "objects": [{"k": i} if i % 3 else None for i in range(rows)],
            "all_null": [None] * rows,
            "mixed": [1 if i % 2 else "x" for i in range(rows)],
        }
    )


@pytest.mark.parametrize(
    "frame",
    [
        mixed_frame(),
        mixed_frame(rows=1, seed=3),
        pd.DataFrame({"empty": pd.Series([], dtype=float), "text": pd.Series([], dtype=object)}),
        pd.DataFrame({f"c{i}": np.arange(100) * i for i in range(60)}),
    ],
    ids=["mixed", "one-row", "no-rows", "sixty-columns"],
)
def test_the_fast_digest_equals_whylogs_reading_of_default_profiles(frame, monkeypatch):
    data = why.log(frame).view().serialize()
    expected = whylogs_digest(data)
    with monkeypatch.context() as patched:  # default columns never need whylogs' column deserializer
        patched.setattr(digest.ColumnProfileView, "from_protobuf", _refuse)
        fast = digest_from_bytes(data)
    assert fast == expected
    assert summarise_bytes(data) == fast
    # and what pages rebuild from it has whylogs' own numbers
    rebuilt = view_from_digest(fast).to_pandas()
    expected = DatasetProfileView.deserialize(data).to_pandas()
    for metric in ("counts/n", "counts/null", "distribution/mean", "types/string"):
        pd.testing.assert_series_equal(rebuilt[metric], expected[metric], check_dtype=False)


def test_the_segments_of_a_segmented_profile_digest_like_whylogs():
    segmented = why.log(mixed_frame(), schema=DatasetSchema(segments=segment_on_column("bools")))
    assert len(segmented.segments()) == 2
    for segment in segmented.segments():
        data = serialize_view(segmented.view(segment))  # whylogs' segmented file format
        assert digest_from_bytes(data) == whylogs_digest(data)


def test_columns_with_other_metrics_are_read_by_whylogs_and_still_agree():
    """A condition-count metric is not one of whylogs' default shapes: that column goes through
    whylogs' column deserializer (the digest keeps the metrics it knows), the others are read
    from their messages."""
    conditions = {"has_a": Condition(Predicate().fullmatch(".*a.*"))}
    counted = ResolverSpec(
        column_name="strings", metrics=[MetricSpec(ConditionCountMetric, ConditionCountConfig(conditions=conditions))]
    )
    data = why.log(mixed_frame(), schema=DeclarativeSchema([*STANDARD_RESOLVER, counted])).view().serialize()
    assert "condition_count" in DatasetProfileView.deserialize(data).get_column("strings").get_metric_names()
    assert digest_from_bytes(data) == whylogs_digest(data)


def test_a_column_missing_a_default_component_gets_whylogs_verdict():
    def drop_true(column, message, header):
        index = next(i for i, path in header.indexed_metric_paths.items() if path == "counts/true")
        if index in message.metric_components:
            del message.metric_components[index]

    data = rewrite_chunks(why.log(mixed_frame()).view().serialize(), drop_true)
    assert_whylogs_verdict(data)


@pytest.mark.parametrize("what", ["kll", "hll", "frequent_items"])
def test_a_broken_sketch_is_refused_as_whylogs_refuses_it(what):
    def break_sketch(column, message, header):
        for component in message.metric_components.values():
            if component.WhichOneof("value") == what:
                getattr(component, what).sketch = b"\x01\x02 not a sketch"

    data = rewrite_chunks(why.log(mixed_frame()).view().serialize(), break_sketch)
    with pytest.raises(Exception):
        whylogs_digest(data)
    with pytest.raises(Exception):
        digest_from_bytes(data)
    with pytest.raises(SummaryError):
        summarise_bytes(data)


def test_a_metric_index_missing_from_the_header_is_refused():
    def unknown_index(column, message, header):
        component = next(iter(message.metric_components.values()))
        message.metric_components[9999].CopyFrom(component)

    data = rewrite_chunks(why.log(mixed_frame()).view().serialize(), unknown_index)
    with pytest.raises(Exception):
        whylogs_digest(data)
    with pytest.raises(SummaryError):
        summarise_bytes(data)


def test_a_value_of_the_wrong_kind_is_not_taken_as_a_default_metric():
    """counts/n sent as a double: whylogs reads it as a float component; the digest follows it."""

    def double_count(column, message, header):
        index = next(i for i, path in header.indexed_metric_paths.items() if path == "counts/n")
        if index in message.metric_components:
            value = message.metric_components[index].n
            message.metric_components[index].d = float(value) + 0.5

    data = rewrite_chunks(why.log(mixed_frame()).view().serialize(), double_count)
    assert_whylogs_verdict(data)
