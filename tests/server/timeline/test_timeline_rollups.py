"""Rollups of hour and day buckets and the session's timeline version: the merge kept as batches
land is the merge of the bucket's profiles, a late or replaced batch changes only its own bucket,
deleting a profile drops only its buckets' rollups, the version changes when something lands or is
deleted (never when a view is read). Their property tests are test_rollups_properties.py's.

Pure logic over a dict of derived values (the store's own behaviour over HTTP, on both stores, is
test_rollups_http.py's: it starts a server, too slow for these modules' mutation runs)."""

from __future__ import annotations

import json
import struct
import sys

import pytest
import whylogs_sketching as ds
from rollup_fakes import DAY0, DIGESTS, DictArtefacts, Summaries, member, merged_points, rollup_points

from whylogs_songbird.column_stats import (
    KS_POINTS,
    Split,
    drift_scores,
    known_quantiles,
    merge_views,
    sketch_quantiles,
)
from whylogs_songbird.server.digest import (
    DigestError,
    columns_of,
    digest_column,
    digest_columns,
    view_from_digest,
    view_of,
)
from whylogs_songbird.server.rollups import (
    ALL_SEGMENTS,
    BINARY_MAGIC,
    KNOWN_MAGIC,
    Rollup,
    Rollups,
    _doubles_at,
    decode_columns,
    decode_view,
    encode_view,
    family_of,
    pack_columns,
    rollup_key,
    unpack_columns,
    unpack_known,
)
from whylogs_songbird.timeline import (
    BAND_QUANTILES,
    DAY_MS,
    HOUR_MS,
    column_points,
)


@pytest.mark.mutation_fast("whylogs_songbird/server/rollups.py")
def test_a_late_batch_changes_only_its_own_hour_and_day() -> None:
    artefacts, summaries = DictArtefacts(), Summaries()
    rollups = Rollups(artefacts, summaries)
    for index, stamp in enumerate([DAY0 + HOUR_MS, DAY0 + 2 * HOUR_MS, DAY0 + 3 * HOUR_MS, DAY0 + DAY_MS + HOUR_MS]):
        summaries.add(rollups, member(index, stamp), DIGESTS[index])
    before = dict(artefacts.data)
    late = member(9, DAY0 + 2 * HOUR_MS - 60_000)  # within hour 1, before the batch already there
    summaries.add(rollups, late, DIGESTS[5])
    changed = {key for _, key in {*artefacts.data, *before} if artefacts.data.get(("s", key)) != before.get(("s", key))}
    own = (rollup_key("hour", DAY0 + HOUR_MS, ALL_SEGMENTS), rollup_key("day", DAY0, ALL_SEGMENTS))
    assert set(own) <= changed and all(key.startswith(own) for key in changed), changed
    day = rollups.read("s", "day", DAY0, ALL_SEGMENTS)
    assert day is not None and [m.upload_id for m in day.members] == ["log-0", "log-9", "log-1", "log-2"]
    assert rollup_points(rollups, day, summaries) == merged_points(list(day.members), summaries)
    # the same batch noted twice changes nothing
    again = dict(artefacts.data)
    rollups.add("s", late, "", DIGESTS[5])
    assert artefacts.data == again


@pytest.mark.mutation_fast("whylogs_songbird/server/rollups.py")
def test_a_replaced_upload_replaces_its_member_and_segments_have_their_own_rollups() -> None:
    artefacts, summaries = DictArtefacts(), Summaries()
    rollups = Rollups(artefacts, summaries)
    summaries.add(rollups, member(0, DAY0 + 10), DIGESTS[0], segment="k=a")
    summaries.add(rollups, member(1, DAY0 + 20), DIGESTS[1], segment="k=b")
    summaries.add(rollups, member(0, DAY0 + 10, version=1), DIGESTS[2], segment="k=a")  # the slot PUT again
    every = rollups.read("s", "hour", DAY0, ALL_SEGMENTS)
    assert every is not None and [m.identity for m in every.members] == [
        member(0, 10, 1).identity,
        member(1, 20).identity,
    ]
    assert rollup_points(rollups, every, summaries) == merged_points(list(every.members), summaries)
    only_a = rollups.read("s", "day", DAY0, family_of("k=a"))
    assert only_a is not None and only_a.members == (member(0, DAY0 + 10, version=1),)
    assert only_a.digest is None and rollup_points(rollups, only_a, summaries) == merged_points(
        [only_a.members[0]], summaries
    )
    only_b = rollups.read("s", "day", DAY0, family_of("k=b"))
    assert only_b is not None and [m.upload_id for m in only_b.members] == ["log-1"]
    # a member whose summary is gone: the rollup is dropped (a view merges the bucket again)
    del summaries.by_member[("log-1", member(1, 0).sha256)]
    rollups.add("s", member(2, DAY0 + 5), "", DIGESTS[3])  # late: the bucket is merged again from its members
    assert rollups.read("s", "hour", DAY0, ALL_SEGMENTS) is None


@pytest.mark.mutation_fast("whylogs_songbird/server/rollups.py")
def test_a_header_another_host_replaced_is_read_as_stored_not_as_this_process_wrote_it() -> None:
    """Headers this process wrote are kept decoded, but only ever used for the very bytes stored."""
    artefacts, summaries = DictArtefacts(), Summaries()
    rollups = Rollups(artefacts, summaries)
    for index in range(3):
        summaries.add(rollups, member(index, DAY0 + index), DIGESTS[index])
    key = rollup_key("hour", DAY0, ALL_SEGMENTS)
    mine = rollups.read("s", "hour", DAY0, ALL_SEGMENTS, merged=False)
    assert mine is not None and [m.upload_id for m in mine.members] == ["log-0", "log-1", "log-2"]
    theirs = Rollup((member(7, DAY0 + 9),), ("n",), None)  # another host's write of the same bucket
    artefacts.put_derived("s", key, theirs.header())
    assert rollups.read("s", "hour", DAY0, ALL_SEGMENTS) == theirs
    assert Rollups(artefacts, summaries).read("s", "hour", DAY0, ALL_SEGMENTS) == theirs


@pytest.mark.mutation_fast("whylogs_songbird/server/rollups.py")
@pytest.mark.parametrize(
    ("before", "after", "names"),
    [
        ([0, 1], [0, 1, 2], ("n",)),  # appended
        ([0], [0, 1, 2, 3], ("n", 'a "quoted" ],"names": column')),  # appended, with a new column
        ([0, 1], [0, 1], ("n",)),  # nothing new
        ([0, 1], [0, 1, 2], ('a "quoted" ],"names": column', "n")),  # appended, that column named before
        ([0, 1], [1, 2], ("n",)),  # not an append: encoded whole
        ([0, 2], [0, 1, 2], ("n",)),  # a late member: encoded whole
    ],
)
def test_a_header_made_from_the_one_before_is_the_header(before: list[int], after: list[int], names: tuple) -> None:
    earlier = Rollup(tuple(member(i, DAY0 + i) for i in before), names[:1], None)
    later = Rollup(tuple(member(i, DAY0 + i) for i in after), names, None)
    made = later.header_after(earlier.header(), earlier)
    assert made == later.header() and Rollup.decode(made) == later


@pytest.mark.mutation_fast("whylogs_songbird/server/rollups.py")
def test_a_stored_rollup_survives_its_encoding_and_junk_is_not_one() -> None:
    rollup = Rollups.merge([member(0, 1), member(1, 2)], [view_from_digest(DIGESTS[0]), view_from_digest(DIGESTS[1])])
    assert Rollup.decode(rollup.header(), rollup.digest) == rollup and sorted(rollup.names) == ["n", "s", "x"]
    single = Rollups.merge([member(0, 1)], [view_from_digest(DIGESTS[0])])
    assert single.digest is None and Rollup.decode(single.header()) == single
    for junk in (b"", b"{}", b'{"v":2,"m":[],"names":[]}', b'{"v":1,"m":[],"names":[]}', b"\x00", b'{"v":1,"m":[[1]]}'):
        assert Rollup.decode(junk) is None
    # stored: the header and the merged columns of exactly its members; a header whose merged
    # columns were replaced (another host's write) is no rollup
    artefacts = DictArtefacts()
    rollups = Rollups(artefacts, Summaries())
    rollups.write("s", "day", 0, ALL_SEGMENTS, rollup)
    assert rollups.read("s", "day", 0, ALL_SEGMENTS) == rollup
    assert rollups.read("s", "day", 0, ALL_SEGMENTS, merged=False) == Rollup(rollup.members, rollup.names, None)
    other = Rollups.merge([member(0, 1), member(2, 3)], [view_from_digest(DIGESTS[0]), view_from_digest(DIGESTS[2])])
    rollups.write("s", "day", 0, ALL_SEGMENTS, other)
    assert sorted(k for _, k in artefacts.data) == sorted(
        [rollup_key("day", 0, ALL_SEGMENTS), rollup_key("day", 0, ALL_SEGMENTS) + "/" + other.key]
    )
    artefacts.put_derived("s", rollup_key("day", 0, ALL_SEGMENTS), rollup.header())
    assert rollups.read("s", "day", 0, ALL_SEGMENTS) is None
    rollups.write("s", "day", 0, ALL_SEGMENTS, single)
    assert [k for _, k in artefacts.data] == [rollup_key("day", 0, ALL_SEGMENTS)]


@pytest.mark.mutation_fast("whylogs_songbird/server/rollups.py")
def test_rollup_columns_are_stored_as_sketch_bytes_and_read_as_a_json_digest_was() -> None:
    view = merge_views([view_from_digest(d) for d in DIGESTS[:3]])
    encoded = encode_view(view)
    assert encoded.startswith(KNOWN_MAGIC) and b'"distribution"' in encoded
    as_json = json.dumps({n: digest_column(c) for n, c in view.get_columns().items()}).encode()  # as stored before
    columns = unpack_columns(encoded)
    without_known = pack_columns(columns)  # as rollups were stored before they kept known quantiles
    assert without_known.startswith(BINARY_MAGIC)
    expected = column_points(view)
    for stored in (encoded, without_known, as_json):
        assert column_points(decode_view(stored)) == expected
        assert column_points(decode_columns(stored)) == expected  # the sketches, no view built
    assert list(columns) == list(view.get_columns())
    assert isinstance(columns["x"]["distribution"][2], bytes) and isinstance(columns["s"]["frequent_items"], bytes)
    assert pack_columns(columns, known=True) == encoded
    for junk in (encoded[:-1], encoded + b"\0", BINARY_MAGIC + b"\xff\xff\xff\x7f{}", b"not json", BINARY_MAGIC):
        with pytest.raises(DigestError):
            unpack_columns(junk)


@pytest.mark.mutation_fast("whylogs_songbird/server/rollups.py")
def test_a_rollup_keeps_each_kll_sketchs_quantiles_which_a_view_reads_instead_of_taking_them() -> None:
    view = merge_views([view_from_digest(d) for d in DIGESTS[:4]])
    encoded = encode_view(view)
    columns, known = unpack_known(encoded)
    numeric = [n for n, c in view.get_columns().items() if c.get_metric("distribution").kll.value.get_n() > 0]
    assert numeric and sorted(known) == sorted(numeric)  # every non-empty KLL sketch, nothing else
    for name in numeric:
        sketch = view.get_columns()[name].get_metric("distribution").kll.value
        taken = known_quantiles(sketch, BAND_QUANTILES)
        assert taken is not None and known[name].fractions == taken.fractions
        assert list(known[name].values) == list(taken.values) and known[name].split == taken.split
        stored = columns[name]["distribution"][2]
        assert stored[3] & 2  # its first level sorted (and marked): a CDF of it costs a few microseconds
        assert ds.kll_doubles_sketch.deserialize(stored).get_quantiles(list(taken.fractions)) == list(taken.values)
    sketch_quantiles.clear()
    decoded = decode_columns(encoded)
    ks_points = sketch_quantiles.points(KS_POINTS)
    for name in numeric:  # handed to the quantile cache as the columns are read
        kept = sketch_quantiles._kept(decoded.columns[name].kll, ks_points)
        assert kept is not None and list(kept) == list(known[name].values[: len(KS_POINTS)])
    assert column_points(decoded) == column_points(view)
    reference = view_from_digest(DIGESTS[5])
    assert drift_scores(decoded, reference) == drift_scores(view, reference)
    assert drift_scores(reference, decoded) == drift_scores(reference, view)
    # known quantiles whose counts do not fit the bytes are refused like any other damage
    shifted = encoded.replace(b'"q":[103,', b'"q":[104,', 1)
    assert shifted != encoded
    with pytest.raises(DigestError):
        unpack_columns(shifted)


@pytest.mark.mutation_fast("whylogs_songbird/server/digest.py")
def test_digested_columns_read_as_sketches_give_their_views_numbers_and_drift() -> None:
    digests = [digest_columns(d) for d in DIGESTS[:2]]
    views, sketches = [view_of(d) for d in digests], [columns_of(d) for d in digests]
    assert all(s.standard for s in sketches) and list(sketches[0].columns) == list(views[0].get_columns())
    for view, columns in zip(views, sketches):
        assert column_points(columns) == column_points(view)
    assert drift_scores(sketches[1], sketches[0]) == drift_scores(views[1], views[0])
    assert column_points(sketches[0].view(["x"])) == {"x": column_points(views[0])["x"]}  # its view, built on demand
    del digests[0]["x"]["counts"]  # not whylogs' standard metrics: drift on the view, by whylogs' drift map
    assert not columns_of(digests[0]).standard
    assert drift_scores(columns_of(digests[1]), columns_of(digests[0])) == drift_scores(views[1], view_of(digests[0]))
    digests[1]["x"]["distribution"][2] = "AAAA"  # a sketch that fails its check, as view_of refuses it
    with pytest.raises(DigestError):
        columns_of(digests[1])


def _known_layout(header: dict[str, object], tail: bytes) -> bytes:
    """Merged columns in the known-quantiles layout, written by hand: magic, header length, header, tail."""
    text = json.dumps(header, separators=(",", ":")).encode()
    return KNOWN_MAGIC + struct.pack("<I", len(text)) + text + tail


@pytest.mark.mutation_fast("whylogs_songbird/server/rollups.py")
def test_known_quantiles_taken_at_other_points_are_skipped_and_the_next_columns_still_read() -> None:
    values = [float(i) / 4 for i in range(len(KS_POINTS) + len(BAND_QUANTILES))]  # 103 doubles
    data = _known_layout(
        {"a": {"q": [2, 0]}, "b": {"q": [103, 0]}, "c": {"q": [103, 2]}},
        struct.pack("<2d", 7.0, 8.0)
        + struct.pack("<103d", *values)
        + struct.pack("<103d", *reversed(values))
        + struct.pack("<4d", 1.5, 2.5, 0.25, 1.0),
    )
    header, known = unpack_known(data)
    assert header == {"a": {}, "b": {}, "c": {}}
    assert sorted(known) == ["b", "c"]  # "a" was taken at 2 points, not the 103 a rollup keeps
    assert known["b"].fractions == (*KS_POINTS, 0.05, 0.5, 0.95)
    assert list(known["b"].values) == values and known["b"].split is None  # no split points stored
    assert list(known["c"].values) == values[::-1]
    assert known["c"].split == Split([1.5, 2.5], [0.25, 1.0])
    assert unpack_known(_known_layout({"a": {"q": [0, 0]}}, b"")) == ({"a": {}}, {})
    # quantiles stored for a column without a KLL sketch: nothing to hand them to when read
    alone = _known_layout({"b": {"q": [103, 0]}}, struct.pack("<103d", *values))
    assert decode_columns(alone).columns["b"].kll is None
    with pytest.raises(DigestError, match=r"\(known quantiles of a negative count\)"):
        unpack_known(_known_layout({"a": {"q": [-2, 1]}}, b""))


@pytest.mark.parametrize(
    "header, tail",
    [
        ({"a": {"q": [-2, 1]}}, b""),  # together they ask for no bytes, yet neither count is a count
        # 103 values less one split point, followed by another column's 2 values: all of it is there
        ({"a": {"q": [103, -1]}, "b": {"q": [2, 0]}}, struct.pack("<103d", *range(103))),
        ({"a": {"q": [1.0, 0]}}, struct.pack("<d", 1.0)),
        ({"a": {"q": [1, "0"]}}, struct.pack("<d", 1.0)),
    ],
)
@pytest.mark.mutation_fast("whylogs_songbird/server/rollups.py")
def test_known_quantiles_with_counts_that_are_not_counts_are_refused(header: dict[str, object], tail: bytes) -> None:
    with pytest.raises(DigestError, match="cannot be read"):
        unpack_known(_known_layout(header, tail))


@pytest.mark.mutation_fast("whylogs_songbird/server/rollups.py")
def test_a_q_field_given_to_pack_is_never_stored_and_only_the_known_layout_reads_one() -> None:
    given = {"a": {"q": [5, 5], "counts": [1, 0]}}
    for known in (False, True):
        packed = pack_columns(given, known=known)
        assert packed.startswith(KNOWN_MAGIC if known else BINARY_MAGIC)
        assert unpack_known(packed) == ({"a": {"counts": [1, 0]}}, {})
    assert given == {"a": {"q": [5, 5], "counts": [1, 0]}}  # the caller's columns are left as they were
    text = b'{"a":{"q":[0,0]}}'
    assert unpack_known(BINARY_MAGIC + struct.pack("<I", len(text)) + text) == ({"a": {"q": [0, 0]}}, {})


@pytest.mark.mutation_fast("whylogs_songbird/server/rollups.py")
def test_kll_sketches_without_known_quantiles_are_stored_as_given() -> None:
    empty = ds.kll_doubles_sketch(200).serialize()
    for sketch in (empty, b"junkjunk", b"junk"):  # empty, and bytes no KLL sketch reads
        packed = pack_columns({"x": {"distribution": [0.5, 0.0, sketch]}}, known=True)
        assert unpack_known(packed) == ({"x": {"distribution": [0.5, 0.0, sketch]}}, {})


@pytest.mark.mutation_fast("whylogs_songbird/server/rollups.py")
def test_a_sketch_with_an_infinite_value_keeps_its_quantiles_without_a_split() -> None:
    sketch = ds.kll_doubles_sketch(200)
    for value in (1.0, 2.0, float("inf")):
        sketch.update(value)
    taken = known_quantiles(sketch, BAND_QUANTILES)
    assert taken is not None and taken.split is None and taken.values[-1] == float("inf")
    columns, known = unpack_known(pack_columns({"x": {"distribution": [1.5, 0.5, sketch.serialize()]}}, known=True))
    assert list(known["x"].values) == list(taken.values) and known["x"].split is None
    assert ds.kll_doubles_sketch.deserialize(columns["x"]["distribution"][2]).get_n() == 3


@pytest.mark.parametrize("byteorder", ["little", "big"])
@pytest.mark.mutation_fast("whylogs_songbird/server/rollups.py")
def test_stored_doubles_read_the_same_on_either_byte_order(monkeypatch: pytest.MonkeyPatch, byteorder: str) -> None:
    data = b"xy" + struct.pack("<3d", 1.5, -2.0, 3.25)
    monkeypatch.setattr(sys, "byteorder", byteorder)
    assert _doubles_at(data, 2, 2) == [1.5, -2.0]
    assert _doubles_at(data, 10, 2) == [-2.0, 3.25]
    assert _doubles_at(data, 2, 0) == []


@pytest.mark.mutation_fast("whylogs_songbird/server/rollups.py")
def test_rollups_written_as_batches_land_keep_their_known_quantiles() -> None:
    artefacts = DictArtefacts()
    rollups = Rollups(artefacts, lambda session_id, m: DIGESTS[0] if m.upload_id == "log-0" else None)
    rollups.add_many("s", [(member(0, DAY0 + 10), "", DIGESTS[0]), (member(1, DAY0 + 20), "", DIGESTS[1])])
    rollups.add("s", member(2, DAY0 + 30), "", DIGESTS[2])  # appended to the stored merge
    both = merge_views([view_from_digest(d) for d in DIGESTS[:2]])
    three = merge_views([view_from_digest(d) for d in DIGESTS[:3]])
    first = Rollups(artefacts, lambda session_id, m: None)  # a fresh reader: nothing cached
    for granularity in ("hour", "day"):
        found = first.read("s", granularity, DAY0, ALL_SEGMENTS)
        assert found is not None and found.digest is not None and found.digest.startswith(KNOWN_MAGIC)
        assert sorted(unpack_known(found.digest)[1]) == sorted(_numeric(three))
    single = Rollups(DictArtefacts(), lambda session_id, m: None)
    single.add_many("s", [(member(0, DAY0 + 10), "", DIGESTS[0]), (member(1, DAY0 + 20), "", DIGESTS[1])])
    found = single.read("s", "hour", DAY0, ALL_SEGMENTS)
    assert found is not None and found.digest is not None and found.digest.startswith(KNOWN_MAGIC)
    assert sorted(unpack_known(found.digest)[1]) == sorted(_numeric(both))


def _numeric(view: object) -> list[str]:
    return [n for n, c in view.get_columns().items() if c.get_metric("distribution").kll.value.get_n() > 0]  # type: ignore[attr-defined]
