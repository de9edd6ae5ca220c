"""The digest's own logic (whylogs_songbird/server/digest.py): the stored format, the refusals of
bytes the fast reader does not take (each with its message), columns with only some metrics, and
views rebuilt from a digest holding every count and sketch of the profile.

Profiles are crafted in the test, message by message, with whylogs' protobuf classes.
"""

from __future__ import annotations

import base64
import json
import zlib
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import whylogs as why
import whylogs_sketching as ds
from profile_crafting import _delimited as delimited
from profile_crafting import assemble, varint
from whylogs.core.metrics.column_metrics import ColumnCountsMetric
from whylogs.core.proto import ChunkHeader, ChunkMessage, DatasetProfileHeader, MetricComponentMessage
from whylogs.core.view.column_profile_view import ColumnProfileView

from whylogs_songbird.profiles import serialize_view
from whylogs_songbird.server import digest
from whylogs_songbird.server.digest import (
    DigestError,
    _component_values,
    _delimited,
    _pack,
    check_digest,
    columns_of,
    digest_column,
    digest_columns,
    digest_from_bytes,
    digest_view,
    digested_count,
    merge_digested,
    sketches_of,
    view_from_digest,
    view_of,
)

pytestmark = [
    pytest.mark.mutation_fast("whylogs_songbird/server/digest.py"),
    # an infinite value makes whylogs' merged m2 NaN: the counts are what these tests read
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]


def test_the_stored_format_is_compact_json_with_its_version():
    packed = _pack({"a": {"counts": [1, 2, 0, 0, 0]}, "b": {"x": float("nan")}})
    assert zlib.decompress(packed) == b'{"version":1,"columns":{"a":{"counts":[1,2,0,0,0]},"b":{"x":NaN}}}'


def test_a_missing_component_counts_zero():
    metric = SimpleNamespace(n=SimpleNamespace(value=3), true=SimpleNamespace(value=2))
    assert _component_values(metric, ("n", "null", "true")) == [3, 0, 2]


def test_a_column_digests_only_the_metrics_it_has():
    column = ColumnProfileView(metrics={"counts": ColumnCountsMetric.zero()})
    assert digest_column(column) == {"counts": [0, 0, 0, 0, 0]}
    assert digest_column(ColumnProfileView(metrics={})) == {}


# -- refusals of the fast reader ---------------------------------------------------------------------------


def test_a_message_may_end_exactly_at_the_end_of_the_data_and_not_past_it():
    header = ChunkHeader(type=ChunkHeader.ChunkType.COLUMN, length=5)
    data = delimited(header)
    parsed, end = _delimited(data, 0, ChunkHeader)
    assert (parsed, end) == (header, len(data))
    with pytest.raises(ValueError, match="^a message runs past the end of the data$"):
        _delimited(data[:-1], 0, ChunkHeader)


def one_column(chunk_type: int, chunk: ChunkMessage, length: int | None = None, paths: dict | None = None) -> bytes:
    """A profile of one column ``a`` whose one chunk is ``chunk`` under a header of ``chunk_type``."""
    body = chunk.SerializeToString()
    header = DatasetProfileHeader()
    header.column_offsets["a"].offsets.append(0)
    for index, path in (paths or {0: "counts/n"}).items():
        header.indexed_metric_paths[index] = path
    chunk_header = ChunkHeader(type=chunk_type, length=len(body) if length is None else length)
    return assemble(header, delimited(chunk_header) + body)


def counts_chunk() -> ChunkMessage:
    chunk = ChunkMessage()
    chunk.metric_components[0].CopyFrom(MetricComponentMessage(n=7))
    return chunk


def test_bytes_the_fast_reader_does_not_take_are_refused_saying_why():
    with pytest.raises(ValueError, match="^no whylogs magic bytes$"):
        digest_from_bytes(b"WHY2" + bytes(8))
    with pytest.raises(ValueError, match="^no dataset profile header$"):
        digest_from_bytes(b"WHY1" + varint(0) + varint(0))
    with pytest.raises(ValueError, match="^not a column chunk$"):
        digest_from_bytes(one_column(ChunkHeader.ChunkType.DATASET, counts_chunk()))
    too_long = one_column(
        ChunkHeader.ChunkType.COLUMN, counts_chunk(), length=len(counts_chunk().SerializeToString()) + 1
    )
    with pytest.raises(ValueError, match="^not a column chunk$"):
        digest_from_bytes(too_long)
    with pytest.raises(ValueError, match="^metric index 0 is not in the header$"):
        digest_from_bytes(one_column(ChunkHeader.ChunkType.COLUMN, counts_chunk(), paths={1: "counts/n"}))


def test_a_crafted_column_of_the_five_counts_is_read_from_its_messages():
    names = ("n", "null", "nan", "inf", "true")
    chunk = ChunkMessage()
    for index, value in enumerate((7, 1, 2, 3, 4)):
        chunk.metric_components[index].CopyFrom(MetricComponentMessage(n=value))
    data = one_column(ChunkHeader.ChunkType.COLUMN, chunk, paths={i: f"counts/{n}" for i, n in enumerate(names)})
    assert digest_columns(digest_from_bytes(data)) == {"a": {"counts": [7, 1, 2, 3, 4]}}


# -- digests, and views rebuilt from them -------------------------------------------------------------------------


def logged() -> bytes:
    frame = pd.DataFrame(
        {
            "f": [1.5, np.nan, np.inf, 2.5, np.nan],
            "b": [True, False, True, True, None],
            "s": ["a", "b", "a", None, "a"],
        }
    )
    return serialize_view(why.log(frame).view())


def test_a_rebuilt_view_keeps_every_count_and_sketch():
    view = view_from_digest(digest_from_bytes(logged()))
    f = view.get_column("f")
    counts = f.get_metric("counts")
    assert (counts.n.value, counts.null.value, counts.nan.value, counts.inf.value) == (5, 2, 2, 1)
    assert view.get_column("b").get_metric("counts").true.value == 3
    assert round(f.get_metric("cardinality").hll.value.get_estimate()) == 3  # 1.5, inf and 2.5
    items = view.get_column("s").get_metric("frequent_items").to_summary_dict()["frequent_strings"]
    assert [(i.value, i.est) for i in items] == [("a", 3), ("b", 1)]
    assert view.get_column("f").get_metric("distribution").min == 1.5


def test_a_view_is_rebuilt_with_its_components_made_from_scratch(monkeypatch):
    monkeypatch.setattr(digest, "_PROTOTYPES", {})
    view = view_from_digest(digest_from_bytes(logged()))
    assert view.get_column("f").get_metric("counts").n.value == 5
    assert view.get_column("s").get_metric("types").string.value == 4


def test_a_view_of_some_columns_only():
    columns = digest_columns(digest_from_bytes(logged()))
    assert list(view_of(columns, ["s", "nope"]).get_columns()) == ["s"]
    assert list(view_of(columns).get_columns()) == ["b", "f", "s"]


def test_digested_count_and_sketches():
    columns = digest_columns(digest_from_bytes(logged()))
    assert digested_count(columns["f"]) == 5
    assert digested_count({"types": [1]}) is None
    assert sorted(sketches_of(columns["s"])) == ["fi", "hll", "kll"]
    assert sketches_of({"counts": [1, 0, 0, 0, 0]}) == {}


def test_a_digest_holding_a_sketch_the_server_does_not_read_is_refused():
    blob = digest_from_bytes(logged())
    check_digest(blob)
    columns = digest_columns(blob)
    columns["s"]["cardinality"] = "AAAA"
    broken = _pack(columns)
    with pytest.raises(DigestError, match=r"^a stored summary holds a sketch this server does not read \(.+\)$"):
        check_digest(broken)
    with pytest.raises(DigestError):
        view_from_digest(broken)


def test_what_is_not_a_digest_of_this_version_is_refused_saying_so():
    with pytest.raises(DigestError, match=r"^not a stored digest \(error\)$"):
        digest_columns(b"not compressed")
    with pytest.raises(DigestError, match=r"^not a stored digest \(JSONDecodeError\)$"):
        digest_columns(zlib.compress(b"{nope"))
    for payload in ([1, 2], {"version": 2, "columns": {}}, {"columns": {}}):
        with pytest.raises(DigestError, match="^a digest of another version$"):
            digest_columns(zlib.compress(json.dumps(payload).encode()))
    assert digest_columns(digest_view(why.log(pd.DataFrame({"x": [1]})).view())).keys() == {"x"}


def _hll(lg_k: int, kind: Any, *values: str) -> str:
    sketch = ds.hll_sketch(lg_k, kind)
    for value in values:
        sketch.update(value)
    return base64.b64encode(sketch.serialize_compact()).decode()


def test_merged_digested_counters_add_up_a_side_s_only_metrics_are_kept_and_other_shapes_refused():
    only_counts = {"x": {"counts": [2, 0, 0, 0, 0]}}
    with_types = {"x": {"counts": [3, 1, 0, 0, 0], "types": [1, 2, 0, 0, 0, 0]}}
    for order in ([only_counts, with_types], [with_types, only_counts]):
        assert merge_digested(order) == {"x": {"counts": [5, 1, 0, 0, 0], "types": [1, 2, 0, 0, 0, 0]}}
    with pytest.raises(DigestError, match="^a stored summary holds counters of another shape$"):
        merge_digested([only_counts, {"x": {"counts": [1, 0]}}])


def test_merged_distributions_of_no_values_are_zero_and_one_empty_side_takes_the_other_s():
    text = digest_columns(digest_view(why.log(pd.DataFrame({"v": ["a", "b"]})).view()))
    numbers = digest_columns(digest_view(why.log(pd.DataFrame({"v": [1.0, 3.0]})).view()))
    mean, m2, _ = merge_digested([text, text])["v"]["distribution"]
    assert (mean, m2) == (0.0, 0.0)
    for order in ([text, numbers], [numbers, text]):
        mean, m2, _ = merge_digested(order)["v"]["distribution"]
        assert (mean, m2) == (2.0, 2.0)  # the mean of 1 and 3, and the sum of squared deviations


def test_merged_cardinality_sketches_take_the_larger_lg_k_and_the_larger_hll_type():
    small = {"x": {"cardinality": _hll(10, ds.tgt_hll_type.HLL_4, "a", "b")}}
    large = {"x": {"cardinality": _hll(12, ds.tgt_hll_type.HLL_8, "c")}}
    for order in ([small, large], [large, small]):
        merged = ds.hll_sketch.deserialize(merge_digested(order, raw=True)["x"]["cardinality"])
        assert (merged.lg_config_k, merged.tgt_type) == (12, ds.tgt_hll_type.HLL_8)
        assert round(merged.get_estimate()) == 3


def test_a_sketch_only_one_side_of_a_merge_has_is_kept_as_it_is():
    text = digest_columns(digest_view(why.log(pd.DataFrame({"v": ["a", "b", "b"]})).view()))["v"]
    sketches = ("distribution", "cardinality", "frequent_items")
    assert all(name in text for name in sketches)
    bare = {"counts": [0, 0, 0, 0, 0]}
    for order in ([{"v": text}, {"v": bare}], [{"v": bare}, {"v": text}]):
        merged = merge_digested(order)["v"]
        assert {name: merged[name] for name in sketches} == {name: text[name] for name in sketches}


def test_columns_read_as_sketches_take_n_and_null_pad_short_type_counters_and_leave_out_what_is_missing():
    read = columns_of({"a": {"counts": [5, 1, 2, 0, 0], "types": [3, 1]}, "b": {}}).columns
    assert read["a"].counts == (5, 1)  # counts/n and counts/null, not the NaN count after them
    assert read["a"].type_counts == {
        "integral": 3,
        "fractional": 1,
        "boolean": 0,
        "string": 0,
        "object": 0,
        "tensor": 0,
    }
    assert (read["a"].kll, read["a"].mean, read["a"].m2, read["a"].hll, read["a"].frequent) == (None,) * 5
    assert read["a"].standard and not read["b"].standard
    assert (read["b"].counts, read["b"].type_counts, read["b"].mean, read["b"].m2) == (None,) * 4


@pytest.mark.parametrize(
    ("left", "right", "mean", "m2"),
    [
        ([1.0, 3.0], [5.0, 7.0], 4.0, 20.0),  # (1-4)² + (3-4)² + (5-4)² + (7-4)²
        ([1.0, 3.0], [10.0], 14 / 3, 134 / 3),  # sides of unequal counts weigh by their counts
        ([10.0], [1.0, 3.0], 14 / 3, 134 / 3),
    ],
)
def test_merged_distributions_have_the_mean_and_squared_deviations_of_all_values(left, right, mean, m2):
    sides = [digest_columns(digest_view(why.log(pd.DataFrame({"v": values})).view())) for values in (left, right)]
    merged_mean, merged_m2, _ = merge_digested(sides)["v"]["distribution"]
    assert merged_mean == pytest.approx(mean, rel=1e-12) and merged_m2 == pytest.approx(m2, rel=1e-12)


def test_a_raw_digested_column_holds_each_sketch_as_the_bytes_its_text_encodes():
    column = why.log(pd.DataFrame({"v": ["a", "b"]})).view().get_column("v")
    text, raw = digest_column(column), digest_column(column, raw=True)
    for name in ("cardinality", "frequent_items"):
        assert isinstance(raw[name], bytes) and raw[name] == base64.b64decode(text[name])
    assert raw["distribution"][2] == base64.b64decode(text["distribution"][2])


def test_a_digest_s_sketches_are_plain_base64_without_a_line_break():
    column = digest_columns(digest_view(why.log(pd.DataFrame({"v": ["a", "b", 1.5]})).view()))["v"]
    texts = [column["distribution"][2], column["cardinality"], column["frequent_items"]]
    for text in texts:
        assert "\n" not in text
        assert base64.b64encode(base64.b64decode(text, validate=True)).decode() == text


def _text_column(values: list[str]) -> dict[str, Any]:
    return digest_columns(digest_view(why.log(pd.DataFrame({"v": values})).view()))


def test_a_merge_reads_sketches_this_process_serialized_as_it_reads_checked_ones():
    """``own``: the sketches of those profiles are read without the check, to the same merge."""
    left, right = _text_column(["a", "b", "b"]), _text_column(["b", "c"])
    checked = merge_digested([left, right], raw=True)
    trusted = merge_digested([left, right], raw=True, own=[True, True])
    assert trusted == checked
    hll = ds.hll_sketch.deserialize(trusted["v"]["cardinality"])
    assert round(hll.get_estimate()) == 3
    items = ds.frequent_strings_sketch.deserialize(trusted["v"]["frequent_items"])
    counted = {row[0]: row[1] for row in items.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES)}
    assert counted == {"a": 1, "b": 3, "c": 1}
    assert ds.kll_doubles_sketch.deserialize(trusted["v"]["distribution"][2]).get_n() == 0  # text: no numbers


def test_a_sketch_of_a_profile_not_marked_own_is_checked_before_it_is_read():
    good = _text_column(["a"])
    bad = {"v": dict(good["v"], cardinality=base64.b64encode(b"\x02\x01\x07\x0c\x03\x08").decode())}  # cut short
    for own in ((), (False, False), (True, False)):
        with pytest.raises(DigestError):
            merge_digested([good, bad], own=own)
