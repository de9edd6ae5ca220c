"""The structural check of an uploaded profile (whylogs_songbird/server/profile_check.py) as pure logic.

Profiles are laid out by hand from whylogs' own header messages (``profile_crafting``), so each
test states the exact byte layout: where each chunk starts and ends, how long the body is, what
follows it. The boundaries get both sides: a chunk ending exactly where the next starts passes,
one byte more is refused; ``max_columns`` columns pass, one more is refused.

The property tests mutate real serialized profiles: whatever the mutation, the check answers with
a :class:`ProfileCheckError` or a shape (nothing else escapes), and when only the structure is
mutated (offsets, lengths, trailing bytes: what the check is responsible for), whatever it accepts
whylogs' full parse reads.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import whylogs as why
from conftest import make_profile_bytes
from hypothesis import given
from hypothesis import strategies as st
from profile_crafting import _delimited, corrupt_chunk_messages, rewrite_chunks, split, varint
from whylogs.core import DatasetProfileView
from whylogs.core.proto import ChunkHeader, DatasetProfileHeader, DatasetSegmentHeader
from whylogs.core.schema import DatasetSchema
from whylogs.core.segmentation_partition import segment_on_column

from whylogs_songbird.profiles import serialize_view
from whylogs_songbird.server import profile_check
from whylogs_songbird.server.profile_check import (
    MAGIC,
    MAX_CHUNK_HEADER_BYTES,
    MAX_HEADER_BYTES,
    ProfileCheckError,
    ProfileShape,
    _varint,
    check_profile_bytes,
    check_profile_file,
    header_segment_tags,
)

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/profile_check.py")

COLUMN = ChunkHeader.ChunkType.COLUMN
PLAIN = _delimited(DatasetSegmentHeader(has_segments=False))
SEGMENTED = _delimited(DatasetSegmentHeader(has_segments=True))


def chunk(payload: int, *, length: int | None = None, kind: int = COLUMN) -> bytes:
    """A chunk: its delimited header (saying ``length``, default the payload's) and ``payload`` bytes.

    ``chunk(4)`` is 9 bytes: ``04 | 08 02 18 04 | 07 07 07 07``; ``chunk(0)`` is 3, ``chunk(130)`` 136."""
    return _delimited(ChunkHeader(type=kind, length=payload if length is None else length)) + b"\x07" * payload


def profile(
    chunks: list[bytes],
    columns: dict[str, list[int]] | None = None,
    *,
    length: int | None = None,
    segment: bytes = PLAIN,
    after: bytes = b"",
) -> bytes:
    """The chunks laid end to end as the body; by default column ``c<i>`` names chunk ``i``."""
    body = b"".join(chunks)
    starts = [sum(len(c) for c in chunks[:i]) for i in range(len(chunks))]
    header = DatasetProfileHeader(length=len(body) if length is None else length)
    for name, offsets in (columns if columns is not None else {f"c{i}": [s] for i, s in enumerate(starts)}).items():
        header.column_offsets[name].offsets.extend(offsets)
    return MAGIC + segment + _delimited(header) + body + after


# The structure alone: the hand-made chunks hold no real metrics, and the sketches inside chunk
# messages have tests of their own (test_sketch_check.py).
def refused(data: bytes, max_columns: int = 100) -> str:
    with pytest.raises(ProfileCheckError) as caught:
        check_profile_bytes(data, max_columns=max_columns, sketches=False)
    return str(caught.value)


def shape(data: bytes, max_columns: int = 100) -> ProfileShape:
    return check_profile_bytes(data, max_columns=max_columns, sketches=False)


# -- a real profile, and the layout helpers ----------------------------------------------------------


def test_a_real_profile_is_accepted_with_its_shape():
    data = make_profile_bytes(20)
    _, header, body = split(data)
    assert shape(data, max_columns=3) == ProfileShape(
        columns=3, chunks=3, header_bytes=len(data) - len(body), body_bytes=len(body), segmented=False
    )
    assert header.length == len(body)
    assert check_profile_bytes(memoryview(data), max_columns=3, sketches=False) == shape(data)
    assert check_profile_bytes(bytearray(data), max_columns=3, sketches=False) == shape(data)
    with_sketches = check_profile_bytes(data, max_columns=3)
    assert with_sketches.sketch_memory > 0 and with_sketches == dataclasses.replace(
        shape(data), sketch_memory=with_sketches.sketch_memory
    )


def test_a_hand_made_profile_is_accepted():
    assert (chunk(4).hex(), len(chunk(0)), len(chunk(1)), len(chunk(130))) == ("040802180407070707", 3, 6, 136)
    data = profile([chunk(4), chunk(0), chunk(130)])
    assert shape(data) == ProfileShape(
        columns=3, chunks=3, header_bytes=len(data) - 148, body_bytes=148, segmented=False
    )


# -- varints -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "value", "after"),
    [
        (b"\x00", 0, 1),
        (b"\x01", 1, 1),
        (b"\x7f", 127, 1),
        (b"\x80\x01", 128, 2),
        (b"\xff\x7f", 16383, 2),
        (b"\x80\x80\x01", 16384, 3),
        (b"\x85\x00", 5, 2),  # not the shortest spelling: still 5
        (b"\xff\xff\xff\xff\x0f", 2**32 - 1, 5),
        (b"\xff" * 9 + b"\x01", 2**64 - 1, 10),
        (b"\x80" * 9 + b"\x7f", 127 << 63, 10),  # the tenth byte is the last a varint may have
        (b"\x05\xff", 5, 1),  # stops at the first byte without the high bit
    ],
)
def test_varints(data, value, after):
    assert _varint(data, 0, len(data)) == (value, after)


def test_a_varint_is_read_from_its_position_and_not_past_its_end():
    assert _varint(b"\xaa\x80\x01\xbb", 1, 4) == (128, 3)
    with pytest.raises(ProfileCheckError) as caught:
        _varint(b"\x80\x01", 0, 1)  # the end is before its last byte
    assert str(caught.value) == "a length prefix runs past the end of the data"
    with pytest.raises(ProfileCheckError):
        _varint(b"", 0, 0)
    with pytest.raises(ProfileCheckError):
        _varint(b"\x01", 1, 1)


def test_a_varint_of_more_than_ten_bytes_is_refused():
    with pytest.raises(ProfileCheckError) as caught:
        _varint(b"\x80" * 10 + b"\x01", 0, 11)
    assert str(caught.value) == "a length prefix is not a valid varint"


# -- the headers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"WHY", b"WHY0" + PLAIN, b"why1" + PLAIN, b"\x00WHY1"])
def test_the_magic_bytes_come_first(data):
    assert refused(data) == "it does not start with the whylogs magic bytes WHY1"


def test_the_segment_header_must_fit_and_parse():
    assert refused(MAGIC) == "a length prefix runs past the end of the data"
    assert refused(MAGIC + b"\x80") == "a length prefix runs past the end of the data"
    assert refused(MAGIC + b"\x80" * 11) == "a length prefix is not a valid varint"
    assert refused(MAGIC + b"\x05abcd") == "its segment header is longer than the data"
    assert refused(MAGIC + b"\x02\xff\xff\x00") == "its segment header is not a valid protobuf message"


#: A header limit small enough that a body past it is built and read in microseconds: the check reads
#: the module's MAX_HEADER_BYTES when it runs, so its edge is the same at any value, and the tests
#: below pin the real value (64 MiB, which took seconds per test to build and parse).
SMALL_HEADER_LIMIT = 1000


def test_the_header_limit_is_64_mib():
    assert MAX_HEADER_BYTES == 64 * 1024 * 1024


def test_a_segment_header_over_the_header_limit_is_refused_before_it_is_read(monkeypatch):
    monkeypatch.setattr(profile_check, "MAX_HEADER_BYTES", SMALL_HEADER_LIMIT)
    pad = b"\x00" * (SMALL_HEADER_LIMIT + 2)
    # at the limit the header is read (and found broken); one byte more and it is not even read
    assert refused(MAGIC + varint(SMALL_HEADER_LIMIT) + pad) == "its segment header is not a valid protobuf message"
    assert refused(MAGIC + varint(SMALL_HEADER_LIMIT + 1) + pad) == "its segment header is longer than the data"


def test_the_profile_header_must_exist_fit_and_parse():
    assert refused(MAGIC + PLAIN) == "a length prefix runs past the end of the data"
    assert refused(MAGIC + PLAIN + b"\x00") == "it has no dataset profile header"
    assert refused(MAGIC + PLAIN + b"\x00" + chunk(3)) == "it has no dataset profile header"
    assert refused(MAGIC + PLAIN + b"\x04\x08\x01") == "its dataset profile header is longer than the data"
    assert refused(MAGIC + PLAIN + b"\x02\xff\xff") == "its dataset profile header is not a valid protobuf message"
    # an empty segment header (size 0) is fine
    header = DatasetProfileHeader(length=len(chunk(1)))
    header.column_offsets["a"].offsets.append(0)
    assert shape(MAGIC + b"\x00" + _delimited(header) + chunk(1)).columns == 1


def test_a_profile_header_over_the_header_limit_is_refused_before_it_is_read(monkeypatch):
    monkeypatch.setattr(profile_check, "MAX_HEADER_BYTES", SMALL_HEADER_LIMIT)
    pad = b"\x00" * (SMALL_HEADER_LIMIT + 2)
    at_limit = refused(MAGIC + PLAIN + varint(SMALL_HEADER_LIMIT) + pad)
    assert at_limit == "its dataset profile header is not a valid protobuf message"
    over = refused(MAGIC + PLAIN + varint(SMALL_HEADER_LIMIT + 1) + pad)
    assert over == "its dataset profile header is longer than the data"


# -- the body and what follows it ----------------------------------------------------------------------


def test_the_body_must_be_as_long_as_the_header_says():
    chunks = [chunk(4), chunk(4)]
    assert shape(profile(chunks)).body_bytes == 18
    assert refused(profile(chunks, length=19)) == "its body is 18 bytes but the header says 19"
    assert refused(profile(chunks, length=17)) == "1 bytes follow the end of the profile"


def test_bytes_after_the_body_are_refused():
    chunks = [chunk(4)]
    assert refused(profile(chunks, after=b"\x00")) == "1 bytes follow the end of the profile"
    assert refused(profile(chunks, after=b"junk" * 10)) == "40 bytes follow the end of the profile"


def test_a_segmented_profile_may_end_with_its_segment_header_and_nothing_more():
    chunks = [chunk(4)]
    trailer = _delimited(DatasetSegmentHeader(has_segments=True))
    assert shape(profile(chunks, segment=SEGMENTED)).segmented is True
    with_trailer = profile(chunks, segment=SEGMENTED, after=trailer)
    assert shape(with_trailer) == ProfileShape(
        columns=1, chunks=1, header_bytes=len(with_trailer) - 9 - len(trailer), body_bytes=9, segmented=True
    )
    # a trailer followed by more of a valid message: still bytes after the profile
    assert refused(profile(chunks, segment=SEGMENTED, after=trailer + b"\x08\x01")) == (
        f"{len(trailer) + 2} bytes follow the end of the profile"
    )
    assert refused(profile(chunks, segment=SEGMENTED, after=trailer + b"\x00")) == (
        f"{len(trailer) + 1} bytes follow the end of the profile"
    )
    assert refused(profile(chunks, segment=SEGMENTED, after=trailer[:-1])).endswith(
        "bytes follow the end of the profile"
    )
    assert refused(profile(chunks, segment=SEGMENTED, after=PLAIN)).endswith("bytes follow the end of the profile")
    assert refused(profile(chunks, segment=SEGMENTED, after=b"\x80")) == "1 bytes follow the end of the profile"
    assert refused(profile(chunks, segment=SEGMENTED, after=b"\x02\xff\xff")) == "3 bytes follow the end of the profile"
    # not a segmented profile: no trailer allowed
    assert refused(profile(chunks, after=trailer)) == f"{len(trailer)} bytes follow the end of the profile"


def test_whylogs_segmented_profiles_are_accepted():
    frame = pd.DataFrame({"k": ["a", "b", "a"], "x": [1.0, 2.0, 3.0]})
    segmented = why.log(frame, schema=DatasetSchema(segments=segment_on_column("k")))
    writables = segmented.get_writables()
    assert len(writables) == 2
    for view in writables:
        data = serialize_view(view)
        found = shape(data)
        assert found.segmented is True and found.columns == 2
        assert found.header_bytes + found.body_bytes < len(data)  # the trailer
    assert sorted(shape(serialize_view(view)).segment_tags for view in writables) == [(("k", "a"),), (("k", "b"),)]


# -- chunks --------------------------------------------------------------------------------------------


def test_chunks_laid_end_to_end_are_accepted_and_a_gap_between_them_too():
    a, b = chunk(10), chunk(3)
    assert shape(profile([a, b], {"x": [0], "y": [len(a)]})).chunks == 2
    gap = b"\x00\x00"
    assert shape(profile([a, gap, b], {"x": [0], "y": [len(a) + 2]})).chunks == 2


def test_a_chunk_ending_one_byte_into_the_next_is_refused():
    # the first chunk's header says one byte more than it has: it would run into the second chunk
    first = chunk(10, length=11)  # the header says 11 bytes, 10 follow before the next chunk
    data = profile([first, chunk(3)], {"x": [0], "y": [len(first)]})
    assert refused(data) == "the chunk at offset 0 runs into the next chunk or past the body"
    exact = chunk(10)
    assert shape(profile([exact, chunk(3)], {"x": [0], "y": [len(exact)]})).chunks == 2


def test_the_last_chunk_ends_at_the_body_end_and_not_one_byte_after():
    first, last = chunk(4), chunk(6)
    assert shape(profile([first, last])).body_bytes == len(first) + len(last)
    past = chunk(6, length=7)  # one byte past the body
    assert (
        refused(profile([first, past])) == f"the chunk at offset {len(first)} runs into the next chunk or past the body"
    )


def test_the_order_of_the_columns_does_not_matter():
    a, b = chunk(10, length=11), chunk(3)
    # the column naming the first chunk comes last in the header: it is still bounded by the second
    data = profile([a, b], {"z": [len(a)], "a": [0]})
    assert refused(data) == "the chunk at offset 0 runs into the next chunk or past the body"


def test_a_chunk_header_running_into_the_next_chunk_is_refused():
    a = chunk(10)
    data = profile([a, chunk(3)], {"x": [0], "y": [1]})
    assert refused(data) == "the chunk at offset 0 has a header that overlaps the next chunk"
    # the last chunk's header running past the body
    assert refused(profile([b"\x05\x08\x02"])) == "the chunk at offset 0 has a header that overlaps the next chunk"
    assert refused(profile([b"\x80"])) == "a length prefix runs past the end of the data"


def test_a_chunk_header_one_byte_into_the_next_chunk_is_refused():
    header = b"\x04\x08\x02\x18\x00"  # 4 header bytes: COLUMN, length 0
    fits = profile([header, chunk(3)], {"x": [0], "y": [5]})
    assert shape(fits).chunks == 2
    one_over = profile([header, chunk(3)], {"x": [0], "y": [4]})  # the next chunk starts at its last byte
    assert refused(one_over) == "the chunk at offset 0 has a header that overlaps the next chunk"
    assert refused(profile([header[:-1]])) == "the chunk at offset 0 has a header that overlaps the next chunk"


def raw_chunk_header(size: int) -> bytes:
    """A delimited chunk header of exactly ``size`` bytes (type COLUMN, length 0, padded with an unknown field)."""
    body = b"\x08\x02"  # type = COLUMN
    pad = size - len(body) - 2
    header = body + b"\x7a" + bytes([pad]) + b"p" * pad  # field 15, length-delimited
    assert len(header) == size
    return varint(size) + header


def test_a_chunk_header_of_up_to_64_bytes_is_read_and_a_longer_one_is_not():
    assert MAX_CHUNK_HEADER_BYTES == 64
    assert shape(profile([raw_chunk_header(64)])).chunks == 1
    assert refused(profile([raw_chunk_header(65)])) == "the chunk at offset 0 has a header that overlaps the next chunk"


def test_a_chunk_must_be_a_column_chunk_with_a_valid_header():
    assert ChunkHeader.ChunkType.Name(COLUMN) == "COLUMN"
    other = next(v for v in ChunkHeader.ChunkType.values() if v != COLUMN)
    assert refused(profile([chunk(3, kind=other)])) == "the chunk at offset 0 is not a column chunk"
    assert refused(profile([b"\x02\xff\xff"])) == "the chunk at offset 0 has no valid chunk header"
    assert refused(profile([b"\x00"])) == "the chunk at offset 0 is not a column chunk"  # an empty header


@pytest.mark.parametrize("offset", [9, 10, 2**63])
def test_a_chunk_offset_outside_the_body_is_refused(offset):
    data = profile([chunk(4)], {"x": [offset]})
    assert refused(data) == f"a chunk offset ({offset}) lies outside the body of 9 bytes"


def test_a_chunk_at_the_last_byte_of_the_body_is_read():
    data = profile([chunk(4), b"\x00"], {"x": [0], "y": [9]})  # an empty header: not a column chunk
    assert refused(data) == "the chunk at offset 9 is not a column chunk"


def test_a_chunk_named_twice_is_refused():
    a, b = chunk(4), chunk(4)
    message = "a chunk is named more than once (by two columns, or twice by one)"
    assert refused(profile([a, b], {"x": [0], "y": [0]})) == message
    assert refused(profile([a, b], {"x": [0, 0]})) == message
    one_column = profile([a, b], {"x": [0, len(a)]})
    assert shape(one_column) == ProfileShape(1, 2, len(one_column) - 18, 18, False)


def test_a_column_without_chunks_is_counted_and_checks_nothing():
    data = profile([chunk(2)], {"x": [0], "empty": []})
    assert (shape(data).columns, shape(data).chunks) == (2, 1)


# -- the column cap at N and N + 1 ---------------------------------------------------------------------


def test_max_columns_columns_pass_and_one_more_is_refused():
    data = profile([chunk(1) for _ in range(5)])
    assert shape(data, max_columns=5).columns == 5
    assert refused(data, max_columns=4) == "it has 5 columns, more than this server's limit of 4"


def test_max_columns_chunks_pass_and_one_more_is_refused():
    chunks = [chunk(1) for _ in range(4)]
    starts = [6 * i for i in range(4)]
    assert shape(profile(chunks[:3], {"x": starts[:3]}), max_columns=3).chunks == 3
    assert refused(profile(chunks, {"x": starts}), max_columns=3) == (
        "its columns name more than 3 chunks (the column limit; one chunk per column)"
    )
    assert refused(profile(chunks, {"x": starts[:2], "y": starts[2:]}), max_columns=3) == (
        "its columns name more than 3 chunks (the column limit; one chunk per column)"
    )


# -- files -------------------------------------------------------------------------------------------


def test_a_file_is_checked_like_its_bytes(tmp_path: Path):
    path = tmp_path / "p.bin"
    data = make_profile_bytes(5)
    path.write_bytes(data)
    assert check_profile_file(path, max_columns=3) == check_profile_bytes(data, max_columns=3)
    with pytest.raises(ProfileCheckError) as caught:
        check_profile_file(path, max_columns=2)
    assert str(caught.value) == "it has 3 columns, more than this server's limit of 2"
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(ProfileCheckError) as caught:
        check_profile_file(empty, max_columns=3)
    assert str(caught.value) == "it is empty"
    path.write_bytes(data + b"\x00")
    with pytest.raises(ProfileCheckError, match="1 bytes follow the end of the profile"):
        check_profile_file(path, max_columns=3)


# -- properties on mutated real profiles --------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def real_profiles() -> tuple[bytes, ...]:
    """Real serialized profiles: small, wider with nulls and text, and one segment of a segmented one."""
    rng = np.random.default_rng(0)
    wide = pd.DataFrame({f"c{i}": rng.normal(i, 1, 30) for i in range(6)} | {"t": ["a", None, "b"] * 10})
    segmented = why.log(pd.DataFrame({"k": ["a", "b"] * 5, "x": range(10)}), schema=DatasetSchema(
        segments=segment_on_column("k")))  # fmt: skip
    return (
        make_profile_bytes(8),
        why.log(wide).view().serialize(),
        serialize_view(segmented.get_writables()[0]),
    )


def layout(data: bytes) -> tuple[bytes, DatasetProfileHeader, bytes, bytes]:
    """(magic + segment header, profile header, body, what follows the body) of a real profile."""
    prefix, header, rest = split(data)
    return prefix, header, rest[: header.length], rest[header.length :]


def rebuild(prefix: bytes, header: DatasetProfileHeader, body: bytes, after: bytes) -> bytes:
    return prefix + _delimited(header) + body + after


@st.composite
def structure_mutations(draw) -> bytes:
    """A real profile with its structure changed: offsets moved, swapped, shared or dropped, columns
    added, the body length changed, bytes added or cut at the end. The chunk bytes are left as they are."""
    prefix, original, body, after = layout(draw(st.sampled_from(real_profiles())))
    header = DatasetProfileHeader()
    header.CopyFrom(original)
    names = sorted(header.column_offsets)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["move", "swap", "share", "drop", "add", "length", "append", "cut"]))
        name = draw(st.sampled_from(names))
        offsets = header.column_offsets[name].offsets
        if kind == "move" and offsets:
            offsets[0] = draw(st.integers(0, len(body) + 8))
        elif kind == "swap" and offsets:
            other = header.column_offsets[draw(st.sampled_from(names))].offsets
            if other:
                offsets[0], other[0] = other[0], offsets[0]
        elif kind == "share" and offsets:
            header.column_offsets[draw(st.sampled_from(names))].offsets.append(offsets[0])
        elif kind == "drop":
            del offsets[:]
        elif kind == "add":
            header.column_offsets[f"added{draw(st.integers(0, 3))}"].offsets.append(draw(st.integers(0, len(body))))
        elif kind == "length":
            header.length = max(0, header.length + draw(st.integers(-4, 4)))
        elif kind == "append":
            after += draw(st.binary(min_size=1, max_size=6))
        elif kind == "cut":
            body = body[: len(body) - draw(st.integers(1, 4))]
    return rebuild(prefix, header, body, after)


@given(data=structure_mutations())
def test_property_whatever_structure_the_check_accepts_whylogs_reads(data):
    try:
        found = check_profile_bytes(data, max_columns=100)
    except ProfileCheckError:
        return
    view = DatasetProfileView.deserialize(data)
    assert len(view.get_columns()) <= found.columns


@given(data=st.data())
def test_property_any_damage_gets_a_profile_check_error_or_a_consistent_shape(data):
    original = data.draw(st.sampled_from(real_profiles()))
    damaged = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        # damage the headers most of the time (the first bytes), anywhere sometimes
        limit = data.draw(st.sampled_from([min(len(damaged), 600), len(damaged)]))
        if limit == 0:
            break
        position = data.draw(st.integers(0, limit - 1))
        damaged[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del damaged[data.draw(st.integers(0, len(damaged))) :]
    try:
        found = check_profile_bytes(bytes(damaged), max_columns=100)
    except ProfileCheckError as exc:
        assert str(exc)
        return
    assert found.header_bytes + found.body_bytes <= len(damaged)
    assert found.chunks <= found.columns * 100 and found.columns <= 100


# -- the sketches of each column ---------------------------------------------------------------------------


def logged(**columns: list) -> bytes:
    return serialize_view(why.log(pd.DataFrame(columns)).view())


def sketches_refused(data: bytes) -> str:
    with pytest.raises(ProfileCheckError) as caught:
        check_profile_bytes(data, max_columns=100)
    return str(caught.value)


def sketch_memory(data: bytes) -> int:
    return check_profile_bytes(data, max_columns=100).sketch_memory


def test_a_chunk_message_that_does_not_parse_is_refused_naming_its_column_cut_at_200():
    long_name = "c" * 250
    data = corrupt_chunk_messages(logged(**{long_name: [1.0]}))
    assert sketches_refused(data) == f"the metrics of column {'c' * 200!r} are not a valid chunk message"
    assert check_profile_bytes(data, max_columns=5, sketches=False).columns == 1


def test_a_broken_sketch_is_refused_naming_its_column_and_metric():
    def break_kll(column, message, header):
        for component in message.metric_components.values():
            if component.WhichOneof("value") == "kll":
                component.kll.sketch = b"\x01\x02 not a sketch"

    message = sketches_refused(rewrite_chunks(logged(x=[1.0, 2.0]), break_kll))
    assert message.startswith("column 'x', metric 'distribution/kll': ")


def test_the_sketch_memory_of_a_profile_is_that_of_its_columns_together():
    one = sketch_memory(logged(a=[1.0, 2.0]))
    other = sketch_memory(logged(b=["x", "y"]))
    assert one > 0 and other > 0
    assert sketch_memory(logged(a=[1.0, 2.0], b=["x", "y"])) == one + other


@functools.cache  # bytes, never changed: logged once per process (a mutant's run forks from one that has it)
def forty_string_columns() -> bytes:
    return logged(**{f"s{i}": ["v"] for i in range(40)})


def test_a_profile_whose_sketches_take_more_than_the_limit_is_refused(monkeypatch):
    # 40 string columns: their sketches take a little more than 1 MiB
    data = forty_string_columns()
    memory = sketch_memory(data)
    assert 1024 * 1024 < memory < 2 * 1024 * 1024
    monkeypatch.setattr(profile_check, "MAX_SKETCH_MEMORY", memory)
    assert sketch_memory(data) == memory  # at the limit: accepted
    monkeypatch.setattr(profile_check, "MAX_SKETCH_MEMORY", 1024 * 1024)
    assert sketches_refused(data).endswith("its sketches would take more than 1 MB of memory once read")


def test_a_file_is_checked_without_its_sketches_when_asked(tmp_path: Path):
    path = tmp_path / "p.bin"
    path.write_bytes(corrupt_chunk_messages(make_profile_bytes(5)))
    assert check_profile_file(path, max_columns=3, sketches=False).sketch_memory == 0
    with pytest.raises(ProfileCheckError, match="are not a valid chunk message"):
        check_profile_file(path, max_columns=3)


# -- segment tags in a header --------------------------------------------------------------------------------


def segment_header(tags: int) -> DatasetSegmentHeader:
    header = DatasetSegmentHeader(has_segments=True)
    segment = header.segments.add()
    for i in range(tags):
        segment.tags.add(key=f"whylogs.tag.k{i:02d}", value=str(i))
    return header


def test_a_header_may_name_64_segment_tags_and_not_65():
    assert header_segment_tags(segment_header(64)) == tuple((f"k{i:02d}", str(i)) for i in range(64))
    with pytest.raises(ProfileCheckError) as caught:
        header_segment_tags(segment_header(65))
    assert str(caught.value) == "its header names 65 segment tags, more than the 64 allowed"


def test_a_segment_tag_key_may_have_256_characters_and_a_value_1024_and_not_one_more():
    def one_tag(key: str, value: str) -> DatasetSegmentHeader:
        header = DatasetSegmentHeader(has_segments=True)
        header.segments.add().tags.add(key=key, value=value)
        return header

    assert header_segment_tags(one_tag("whylogs.tag." + "k" * 256, "v" * 1024)) == (("k" * 256, "v" * 1024),)
    assert header_segment_tags(one_tag("plain", "v")) == (("plain", "v"),)  # without whylogs' prefix: as it is
    for key, value in (("k" * 257, "v"), ("k", "v" * 1025)):
        with pytest.raises(ProfileCheckError) as caught:
            header_segment_tags(one_tag("whylogs.tag." + key, value))
        assert str(caught.value) == (
            "a segment tag in its header is longer than the 256-character key or 1024-character value allowed"
        )
