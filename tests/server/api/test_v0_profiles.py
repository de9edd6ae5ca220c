"""whylogs v0 profiles (``DatasetProfileMessage``), as whylogs 1.6 itself writes them: the cheap check
(``profile_check.py``) takes them with their sketches checked, and the sandbox's digest reads them
with whylogs' own v0 reader."""

from __future__ import annotations

import functools
import io

import pandas as pd
import pytest
import whylogs as why
import whylogs_sketching as ds
from whylogs.core.proto.v0 import DatasetProfileMessageV0
from whylogs.core.schema import DatasetSchema
from whylogs.core.segmentation_partition import segment_on_column
from whylogs.core.utils import read_delimited_protobuf, write_delimited_protobuf

from whylogs_songbird.server.digest import digest_columns, digested_count
from whylogs_songbird.server.profile_check import ProfileCheckError, check_profile_bytes
from whylogs_songbird.server.sandbox import summarise_in_child
from whylogs_songbird.server.sketch_check import (
    SketchCheckError,
    check_frequent_strings,
    check_hll,
    check_kll_doubles,
    check_kll_floats,
)

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/profile_check.py")

FRAME = pd.DataFrame(
    {
        "amount": [float(i) for i in range(40)],
        "region": ["north" if i % 4 else "south" for i in range(40)],
        "label": [f"v{i % 3}" for i in range(40)],
    }
)


@functools.cache  # bytes: never changed by a test
def v0_bytes(segmented: bool = True) -> bytes:
    """A v0 profile written by whylogs' own code: a segment with ``use_v0``, or (unsegmented) a
    profile with model-performance metrics, which whylogs always writes as v0."""
    out = io.BytesIO()
    out.name = "profile.bin"
    if segmented:
        results = why.log(FRAME, schema=DatasetSchema(segments=segment_on_column("region")))
        view = [v for v in results.get_writables() if v.segment.key == ("south",)][0]
        view._write(file=out, use_v0=True)
    else:
        scored = pd.DataFrame({"pred": [1, 0, 1], "target": [1, 1, 1], "score": [0.9, 0.2, 0.7]})
        results = why.log_classification_metrics(
            scored, target_column="target", prediction_column="pred", score_column="score", log_full_data=True
        )
        results.view()._write(file=out)
    data = out.getvalue()
    assert not data.startswith(b"WHY1")
    return data


def message_of(data: bytes) -> DatasetProfileMessageV0:
    return read_delimited_protobuf(io.BytesIO(data), DatasetProfileMessageV0)


def framed(message: DatasetProfileMessageV0) -> bytes:
    out = io.BytesIO()
    write_delimited_protobuf(out, message)
    return out.getvalue()


def test_a_segmented_v0_profile_is_taken_with_its_segment():
    shape = check_profile_bytes(v0_bytes(), max_columns=3)
    assert (shape.v0, shape.columns, shape.segmented) == (True, 3, True)
    assert shape.segment_tags == (("region", "south"),)
    with pytest.raises(ProfileCheckError, match="it has 3 columns, more than this server's limit of 2"):
        check_profile_bytes(v0_bytes(), max_columns=2)


def test_a_v0_profile_with_model_metrics_is_digested_by_whylogs_v0_reader():
    data = v0_bytes(segmented=False)
    assert message_of(data).HasField("modeProfile")
    shape = check_profile_bytes(data, max_columns=100)
    assert shape.v0 and not shape.segmented and shape.segment_tags == ()
    columns = digest_columns(summarise_in_child(data, 100))
    assert {name: digested_count(column) for name, column in columns.items()} == {"pred": 3, "target": 3, "score": 3}


def test_the_digest_of_a_v0_segment_counts_its_rows():
    columns = digest_columns(summarise_in_child(v0_bytes(), 100))
    assert digested_count(columns["amount"]) == 10 and set(columns) == {"amount", "region", "label"}


@pytest.mark.parametrize(
    "field, bad, expected",
    [
        ("cardinality_tracker", b"\x02\x01\x07\x1e\x03\x08\x00\x00", "HLL"),
        ("frequent_items", b"\x04\x01\x0a\x40\x03\x00\x00\x00", "frequent"),
        ("histogram", b"\x06\x01\x0f\x00\x00\x04\x08\x00", "KLL"),
    ],
)
def test_a_v0_sketch_the_library_would_trust_is_refused_naming_the_column(field, bad, expected):
    message = message_of(v0_bytes())
    column = message.columns["amount"]
    if field == "histogram":
        column.numbers.histogram = bad
    else:
        getattr(column, field).sketch = bad
    with pytest.raises(ProfileCheckError) as caught:
        check_profile_bytes(framed(message), max_columns=10)
    assert "column 'amount' of this v0 profile" in str(caught.value) and expected in str(caught.value)


def test_what_is_not_one_v0_message():
    data = v0_bytes()
    for bad in (data + b"\x00", data[:-1], b"\x00", b"\x05\xff\xff\xff\xff\xff"):
        with pytest.raises(ProfileCheckError) as caught:
            check_profile_bytes(bad, max_columns=10)
        assert "WHY1" in str(caught.value) or "v0" in str(caught.value)
    with pytest.raises(ProfileCheckError, match="framed as a whylogs v0 profile"):
        check_profile_bytes(b"\x03\x0a\xff\xff", max_columns=10)


def test_kll_floats_and_doubles_sketches_each_pass_their_own_check():
    floats, doubles = ds.kll_floats_sketch(200), ds.kll_doubles_sketch(200)
    for value in range(1000):
        floats.update(float(value))
        doubles.update(float(value))
    assert check_kll_floats(floats.serialize()) > 0 and check_kll_doubles(doubles.serialize()) > 0
    with pytest.raises(SketchCheckError, match="the KLL floats sketch declares preamble ints = 6"):
        check_kll_floats(doubles.serialize())
    with pytest.raises(SketchCheckError, match="the KLL sketch declares preamble ints = 5"):
        check_kll_doubles(floats.serialize())
    cut = floats.serialize()[:-4]
    with pytest.raises(SketchCheckError, match="the KLL floats sketch is 1332 bytes but its header implies 1336"):
        check_kll_floats(cut)
    one = ds.kll_floats_sketch(200)
    one.update(1.0)
    assert check_kll_floats(one.serialize()) == 3 * 4 * 200


# -- the shape the check gives of a v0 profile ------------------------------------------------------------------


def test_the_shape_of_a_v0_segment():
    data = v0_bytes()
    message = message_of(data)
    shape = check_profile_bytes(data, max_columns=3)
    assert (shape.columns, shape.chunks, shape.v0, shape.segmented) == (3, 0, True, True)
    assert (shape.header_bytes, shape.body_bytes) == (len(data) - message.ByteSize(), message.ByteSize())
    assert shape.segment_tags == (("region", "south"),)
    assert shape.sketch_memory > 0
    assert check_profile_bytes(data, max_columns=3, sketches=False).sketch_memory == 0
    with pytest.raises(ProfileCheckError, match="^it has 3 columns, more than this server's limit of 2$"):
        check_profile_bytes(data, max_columns=2)


def test_only_whylogs_segment_tags_of_a_v0_profile_name_its_segment():
    message = message_of(v0_bytes())
    message.properties.tags["owner"] = "someone"  # not a whylogs.tag.: no segment
    assert check_profile_bytes(framed(message), max_columns=3).segment_tags == (("region", "south"),)
    del message.properties.tags["whylogs.tag.region"]
    shape = check_profile_bytes(framed(message), max_columns=3)
    assert (shape.segmented, shape.segment_tags) == (False, ())
    unsegmented = check_profile_bytes(v0_bytes(segmented=False), max_columns=50)
    assert (unsegmented.v0, unsegmented.segmented, unsegmented.segment_tags) == (True, False, ())


def test_the_sketches_of_a_v0_profile_count_towards_the_memory_limit(monkeypatch):
    from whylogs_songbird.server import profile_check

    data = v0_bytes()
    memory = check_profile_bytes(data, max_columns=3).sketch_memory
    one_column = message_of(data)
    for name in ("region", "label"):
        del one_column.columns[name]
    assert 0 < check_profile_bytes(framed(one_column), max_columns=3).sketch_memory < memory
    monkeypatch.setattr(profile_check, "MAX_SKETCH_MEMORY", memory)
    assert check_profile_bytes(data, max_columns=3).sketch_memory == memory
    monkeypatch.setattr(profile_check, "MAX_SKETCH_MEMORY", memory - 1)
    with pytest.raises(ProfileCheckError, match="^its sketches would take more than 0 MB of memory once read$"):
        check_profile_bytes(data, max_columns=3)


def test_a_v0_column_without_sketches_takes_no_memory():
    message = message_of(v0_bytes())
    column = message.columns["amount"]
    column.numbers.histogram = b""
    column.ClearField("cardinality_tracker")
    column.frequent_items.sketch = b""
    for name in ("region", "label"):
        del message.columns[name]
    assert check_profile_bytes(framed(message), max_columns=3).sketch_memory == 0


def test_an_empty_v0_message_is_not_a_profile():
    empty = DatasetProfileMessageV0()
    for data in (b"\x00", framed(empty)):
        with pytest.raises(ProfileCheckError, match="WHY1"):
            check_profile_bytes(data, max_columns=3)


def test_the_memory_of_a_v0_column_is_that_of_its_three_sketches():
    message = message_of(v0_bytes())
    column = message.columns["amount"]
    for name in ("region", "label"):
        del message.columns[name]
    hll = check_hll(column.cardinality_tracker.sketch)
    expected = check_kll_doubles(column.numbers.histogram) + hll + check_frequent_strings(column.frequent_items.sketch)
    assert check_profile_bytes(framed(message), max_columns=3).sketch_memory == expected
    column.cardinality_tracker.SetInParent()
    column.cardinality_tracker.sketch = b""  # a tracker without a sketch is not read
    assert check_profile_bytes(framed(message), max_columns=3).sketch_memory == expected - hll


def test_a_broken_v0_sketch_names_its_column_cut_at_200_characters():
    message = message_of(v0_bytes())
    message.columns["c" * 250].CopyFrom(message.columns["amount"])
    message.columns["c" * 250].numbers.histogram = b"\x01\x02 not a sketch"
    with pytest.raises(ProfileCheckError) as caught:
        check_profile_bytes(framed(message), max_columns=10)
    assert str(caught.value).startswith(f"column {'c' * 200!r} of this v0 profile: ")


def test_the_v0_memory_limit_is_shown_in_mebibytes(monkeypatch):
    from whylogs_songbird.server import profile_check

    message = message_of(v0_bytes())
    for i in range(260):  # about 4 KiB of sketches each
        message.columns[f"copy{i}"].CopyFrom(message.columns["label"])
    data = framed(message)
    assert check_profile_bytes(data, max_columns=300).sketch_memory > 1024 * 1024
    monkeypatch.setattr(profile_check, "MAX_SKETCH_MEMORY", 1024 * 1024)
    with pytest.raises(ProfileCheckError, match="^its sketches would take more than 1 MB of memory once read$"):
        check_profile_bytes(data, max_columns=300)


def test_a_v0_message_with_properties_or_columns_is_one():
    only_properties = DatasetProfileMessageV0()
    only_properties.properties.session_id = "s"
    shape = check_profile_bytes(framed(only_properties), max_columns=3)
    assert (shape.v0, shape.columns) == (True, 0)
    only_columns = DatasetProfileMessageV0()
    only_columns.columns["amount"].CopyFrom(message_of(v0_bytes()).columns["amount"])
    shape = check_profile_bytes(framed(only_columns), max_columns=3)
    assert (shape.v0, shape.columns) == (True, 1)


def test_a_v0_frame_whose_message_does_not_parse_is_refused_saying_so():
    with pytest.raises(ProfileCheckError) as caught:
        check_profile_bytes(b"\x03\x0a\xff\xff", max_columns=10)
    assert str(caught.value) == (
        "it is framed as a whylogs v0 profile (DatasetProfileMessage) but its message does not parse"
    )


def test_a_one_byte_v0_frame_is_judged_as_one():
    """A frame of size 1 is a v0 frame (only size 0 is not): its one byte, tag 0, does not parse."""
    with pytest.raises(ProfileCheckError) as caught:
        check_profile_bytes(b"\x01\x00", max_columns=10)
    assert "framed as a whylogs v0 profile" in str(caught.value)
