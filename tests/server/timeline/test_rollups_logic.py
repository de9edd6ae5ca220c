"""The rollups module's small parts as logic (whylogs_songbird/server/rollups.py): the timeline
version, keys and key prefixes, the member of an upload record, the binary layout of merged
columns byte for byte (and the messages of what it refuses), the cache of decoded headers and
merged columns (what it keeps, counts and forgets), the writes of an add (one transaction), the
ingest hooks (their logging, and the version and rollups as batches land, land late and are
deleted, what test_rollups_http.py checks over HTTP) and a view's rebuild of a dropped rollup.
Rollups as merges are test_timeline_rollups.py's."""

from __future__ import annotations

import base64
import json
import logging
import struct
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import make_profile_bytes

from whylogs_songbird.server import rollups
from whylogs_songbird.server.digest import DigestError, digest_from_bytes, view_from_digest
from whylogs_songbird.server.rollups import (
    BINARY_MAGIC,
    VERSION_KEY,
    Member,
    Rollup,
    Rollups,
    bucket_prefixes,
    bump_version,
    family_of,
    member_of,
    note_summarised,
    note_summarised_many,
    pack_columns,
    read_version,
    rollup_key,
    store_rollups,
    summary_changing,
    unpack_columns,
)
from whylogs_songbird.timeline import Batch, Bucket, content_key

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/rollups.py")

HOUR = 3_600_000
DAY = 24 * HOUR
DAY0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z


class Derived:
    """A session's derived values in a dict; ``broken``: every write fails."""

    def __init__(self, broken: bool = False) -> None:
        self.data: dict[tuple[str, str], bytes] = {}
        self.broken = broken

    def get_derived(self, session_id: str, key: str) -> bytes | None:
        return self.data.get((session_id, key))

    def put_derived(self, session_id: str, key: str, data: bytes) -> None:
        if self.broken:
            raise OSError("disk full")
        self.data[(session_id, key)] = data

    def drop_derived(self, session_id: str, prefix: str = "", keep: str | None = None) -> int:
        gone = [k for k in self.data if k[0] == session_id and k[1].startswith(prefix)]
        gone = [k for k in gone if keep is None or not k[1].startswith(keep)]
        for key in gone:
            del self.data[key]
        return len(gone)

    def get_summary(self, upload_id: str, sha256: str) -> bytes | None:
        return None


def test_the_version_is_a_new_token_at_each_change_and_empty_before_any():
    derived = Derived()
    assert read_version(derived, "s") == ""
    bump_version(derived, "s")
    first = read_version(derived, "s")
    assert len(first) == 16 and int(first, 16) >= 0 and derived.data[("s", "timeline/version")] == first.encode()
    bump_version(derived, "s")
    assert read_version(derived, "s") not in ("", first) and read_version(derived, "other") == ""
    derived.data[("s", VERSION_KEY)] = b"v\xff1"  # not ASCII: read all the same
    assert read_version(derived, "s") == "v\ufffd1"


def test_keys_families_and_the_prefixes_a_batch_s_deletion_drops():
    assert family_of(None) == family_of("") == "all"
    assert family_of("k=v") == content_key(["k=v"])[:16] and len(family_of("k=v")) == 16
    assert rollup_key("hour", 7, "all") == "timeline/r/hour/7/all"
    assert bucket_prefixes(DAY0 + DAY - 1) == [f"timeline/r/hour/{DAY0 + 23 * HOUR}/", f"timeline/r/day/{DAY0}/"]
    assert bucket_prefixes(DAY0 + DAY) == [f"timeline/r/hour/{DAY0 + DAY}/", f"timeline/r/day/{DAY0 + DAY}/"]


def upload(**fields: Any) -> SimpleNamespace:
    given = {
        "id": "log-1",
        "kind": "batch",
        "dataset_timestamp": DAY0,
        "sha256": "ab" * 32,
        "size": 17,
        "session_id": "s",
        "segment_tags": [],
    }
    return SimpleNamespace(**{**given, **fields})


def test_the_member_of_a_stamped_batch_and_none_of_anything_else():
    assert member_of(upload()) == Member(DAY0, f"log-1:{'ab' * 32}:17", "log-1", "ab" * 32)
    assert member_of(upload(kind="reference")) is None
    assert member_of(upload(dataset_timestamp=None)) is None
    assert member_of(upload(sha256=None)) is None
    assert member_of(SimpleNamespace(id="x")) is None  # no kind at all


def layout(header: dict[str, Any], *sketches: bytes) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    return BINARY_MAGIC + struct.pack("<I", len(text)) + text + b"".join(sketches)


def test_merged_columns_are_a_magic_a_length_a_json_header_and_the_sketches_in_order():
    columns = {
        "x": {"counts": [2, 0, 0, 0, 0], "distribution": [1.5, 0.5, b"kll"], "cardinality": b"hll"},
        "s": {"frequent_items": base64.b64encode(b"fi").decode()},  # base64 text is decoded
    }
    packed = pack_columns(columns)
    expected_header = {"x": {"counts": [2, 0, 0, 0, 0], "distribution": [1.5, 0.5, 3], "cardinality": 3}}
    assert packed == layout({**expected_header, "s": {"frequent_items": 2}}, b"kll", b"hll", b"fi")
    assert packed[:8] == b"SBR1" + bytes([len(packed) - 8 - 8, 0, 0, 0])
    assert unpack_columns(packed) == {
        "x": {"counts": [2, 0, 0, 0, 0], "distribution": [1.5, 0.5, b"kll"], "cardinality": b"hll"},
        "s": {"frequent_items": b"fi"},
    }
    assert unpack_columns(layout({"e": {"cardinality": 0}})) == {"e": {"cardinality": b""}}  # an empty sketch
    assert unpack_columns(b'{"x": {"counts": [1]}}') == {"x": {"counts": [1]}}  # a JSON digest's columns


#: What a rollup's merged columns whose sketch lengths do not fit their bytes are refused with.
PAST_END = "stored rollup columns that cannot be read (a sketch runs past the end)"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"not json", "stored rollup columns that are neither binary nor JSON"),
        (layout({"x": {"cardinality": 3}}, b"ab"), PAST_END),
        (layout({"x": {"cardinality": -1}}, b"ab"), PAST_END),
        (layout({"x": {"cardinality": "2"}}, b"ab"), PAST_END),
        (layout({"x": {"distribution": [0, 0, 3]}}, b"ab"), PAST_END),
        (layout({"x": {"cardinality": 1}}, b"ab"), "stored rollup columns with bytes past their last sketch"),
    ],
)
def test_merged_columns_that_cannot_be_read_are_refused_saying_why(data, message):
    with pytest.raises(DigestError) as caught:
        unpack_columns(data)
    assert str(caught.value) == message


def test_merged_columns_cut_within_their_header_length_are_refused():
    with pytest.raises(DigestError) as caught:
        unpack_columns(BINARY_MAGIC + b"\x01")
    assert str(caught.value).startswith("stored rollup columns that cannot be read (unpack_from requires a buffer")


def test_decoded_headers_are_kept_within_their_bytes_oldest_dropped_first():
    cache = rollups._HeaderCache(max_bytes=40)
    derived = Derived()
    one = Rollup((Member(1, "i", "u", "s"),), ("n",), None)
    cache.keep(derived, "s", "a", b"x" * 10, one)
    cache.keep(derived, "s", "b", b"y" * 10, one)
    assert cache.get(derived, "s", "a", b"x" * 10) is one and cache.entry(derived, "s", "b") == (b"y" * 10, one)
    assert cache.get(derived, "s", "a", b"x" * 9) is None  # only for the very bytes stored
    assert cache.get(derived, "t", "a", b"x" * 10) is None and cache.get(Derived(), "s", "a", b"x" * 10) is None
    cache.keep(derived, "s", "a", b"z" * 10, one)  # replaced: 20 bytes kept, not 30
    assert cache._size == 20
    cache.keep(derived, "s", "c", b"w" * 10, one)
    cache.keep(derived, "s", "d", b"v" * 10, one)  # 40: all kept
    assert [cache.entry(derived, "s", k) is not None for k in "abcd"] == [True] * 4
    cache.keep(derived, "s", "e", b"u" * 10, one)  # 50: the oldest write (b) goes
    assert [cache.entry(derived, "s", k) is not None for k in "abcde"] == [True, False, True, True, True]
    assert cache._size == 40
    cache.keep(derived, "s", "f", b"t" * 11, one)  # more than a quarter of the bytes: not kept
    assert cache.entry(derived, "s", "f") is None and cache._size == 40
    cache.keep(derived, "s", "f", b"t" * 10, one)  # exactly a quarter: kept
    assert cache.entry(derived, "s", "f") is not None


def test_the_header_cache_holds_32_mib_by_default():
    assert rollups._HeaderCache().max_bytes == 32 * 1024 * 1024 == rollups._HEADERS.max_bytes
    assert rollups._HeaderCache()._size == 0


def _two_batches_added() -> tuple[Derived, dict[str, bytes], bytes, Rollups]:
    """Rollups over fresh derived values with batches a and b added to the hour and day of DAY0
    (their summaries in the dict returned, which the rollups read)."""
    derived, summaries = Derived(), {}
    digest = digest_from_bytes(make_profile_bytes(4, seed=1))
    kept = Rollups(derived, lambda session_id, member: summaries.get(member.upload_id))
    for member in (Member(DAY0 + 10, "a", "log-a", "sa"), Member(DAY0 + 20, "b", "log-b", "sb")):
        summaries[member.upload_id] = digest
        kept.add("s", member, "", digest)
    return derived, summaries, digest, kept


def test_a_bucket_whose_member_summary_is_gone_drops_its_own_rollup_and_nothing_else():
    derived, summaries, digest, kept = _two_batches_added()
    later = Member(DAY0 + HOUR, "c", "log-c", "sc")  # alone in the next hour
    summaries["log-c"] = digest
    kept.add("s", later, "", digest)
    bump_version(derived, "s")
    del summaries["log-b"]
    kept.add("s", Member(DAY0 + 15, "d", "log-d", "sd"), "", digest)  # late in hour 0: merged again, b is gone
    assert kept.read("s", "hour", DAY0, "all") is None and kept.read("s", "day", DAY0, "all") is None
    assert {key for _, key in derived.data} == {rollup_key("hour", DAY0 + HOUR, "all"), VERSION_KEY}


def test_artefacts_that_cannot_be_weakly_referenced_are_not_cached():
    cache = rollups._HeaderCache()
    plain: dict[str, bytes] = {}  # a dict takes no weak reference
    cache.keep(plain, "s", "a", b"h", Rollup((Member(1, "i", "u", "s"),), (), None))
    assert cache.entry(plain, "s", "a") is None and cache._size == 0


def test_the_ingest_hooks_log_a_failure_and_never_raise(caplog):
    summary_changing(Derived(broken=True), upload())
    assert [r.getMessage() for r in caplog.records] == ["rollups: changing the timeline version of a session failed"]
    caplog.clear()
    store = Derived(broken=True)
    digest = b"not a digest"
    note_summarised_many(store, [(upload(), digest), (upload(id="log-2"), digest), (upload(kind="reference"), digest)])
    assert [r.getMessage() for r in caplog.records] == ["rollups: merging 2 upload(s) into their buckets failed"]
    assert all(r.levelno == logging.ERROR for r in caplog.records)
    caplog.clear()
    note_summarised_many(store, [(upload(kind="reference"), digest)])  # no batch: nothing to merge
    assert caplog.records == []


class Store(Derived):
    """A store's derived values and stored summaries (by upload id and sha256), as the ingest hooks
    and :func:`~whylogs_songbird.server.rollups.store_rollups` use it."""

    def __init__(self) -> None:
        super().__init__()
        self.summaries: dict[tuple[str, str], bytes] = {}

    def get_summary(self, upload_id: str, sha256: str) -> bytes | None:
        return self.summaries.get((upload_id, sha256))

    def land(self, *records: SimpleNamespace) -> list[str]:
        """What the ingest worker does for each record (the version changes before its summary is
        stored), then the rollups of all of them at once; the version after each change."""
        versions = []
        for record in records:
            summary_changing(self, record)
            versions.append(read_version(self, record.session_id))
            self.summaries[(record.id, record.sha256)] = record.digest
        if len(records) == 1:
            note_summarised(self, records[0], records[0].digest)
        else:
            note_summarised_many(self, [(record, record.digest) for record in records])
        return versions

    def delete(self, record: SimpleNamespace) -> None:
        """What the store does when a profile is deleted: every derived value of the session goes but
        the rollups of other hours and days."""
        del self.summaries[(record.id, record.sha256)]
        for key in [k for k in self.data if not k[1].startswith(rollups.ROLLUP_PREFIX)]:
            del self.data[key]
        for prefix in bucket_prefixes(record.dataset_timestamp):
            self.drop_derived(record.session_id, prefix)


def batch(name: str, timestamp: int, rows: int = 4) -> SimpleNamespace:
    """An upload record of a batch of ``rows`` rows, with its digest."""
    digest = digest_from_bytes(make_profile_bytes(rows, seed=len(name)))
    return upload(id=name, dataset_timestamp=timestamp, sha256=name[-1] * 64, size=rows, digest=digest)


def counted(store: Store, granularity: str, start: int) -> tuple[list[str], int]:
    """The members of a stored rollup (upload ids, in merge order) and its merged count of column n."""
    found = store_rollups(store).read("s", granularity, start, "all")
    assert found is not None, (granularity, start)
    load = lambda m: view_from_digest(store.get_summary(m.upload_id, m.sha256) or b"")  # noqa: E731
    count = store_rollups(store).view(found, load).get_column("n").get_metric("counts").n.value
    return [m.upload_id for m in found.members], int(count)


def test_landed_late_and_deleted_batches_move_the_version_and_only_their_own_rollups():
    store = Store()
    landed = [batch("log-a", DAY0 + HOUR), batch("log-b", DAY0 + 2 * HOUR), batch("log-c", DAY0 + 3 * HOUR)]
    later = batch("log-d", DAY0 + DAY + HOUR, rows=5)
    versions = store.land(*landed, later, upload(id="ref", kind="reference", dataset_timestamp=None, digest=b""))
    assert len(set(versions)) == 5 and "" not in versions  # each change, references too, has its own version
    assert read_version(store, "s") == versions[-1]  # merging the rollups changes no version
    assert counted(store, "day", DAY0) == (["log-a", "log-b", "log-c"], 12)
    assert counted(store, "hour", DAY0 + 2 * HOUR) == (["log-b"], 4)
    assert counted(store, "day", DAY0 + DAY) == (["log-d"], 5)
    day1 = store.data[("s", rollup_key("day", DAY0 + DAY, "all"))]
    hours = {key for _, key in store.data if key.startswith("timeline/r/hour/")}
    assert hours == {rollup_key("hour", DAY0 + h * HOUR, "all") for h in (1, 2, 3, 25)}

    # a late batch, before the others of its day: a new version, its day merged again, day 1 untouched
    late = batch("log-e", DAY0 + 30 * 60_000)
    (version,) = store.land(late)
    assert version not in versions and read_version(store, "s") == version
    assert counted(store, "day", DAY0) == (["log-e", "log-a", "log-b", "log-c"], 16)
    assert counted(store, "hour", DAY0) == (["log-e"], 4)
    assert store.data[("s", rollup_key("day", DAY0 + DAY, "all"))] == day1

    # deleting log-b drops its hour's and day's rollups only; the view of its day merges what is left
    store.delete(landed[1])
    assert store_rollups(store).read("s", "day", DAY0, "all") is None
    assert store_rollups(store).read("s", "hour", DAY0 + 2 * HOUR, "all") is None
    assert counted(store, "hour", DAY0 + HOUR) == (["log-a"], 4)
    assert store.data[("s", rollup_key("day", DAY0 + DAY, "all"))] == day1
    left = [late, landed[0], landed[2]]
    members = [member_of(record) for record in left]
    bucket = Bucket(DAY0, DAY0 + DAY, tuple(Batch(m.identity, m.timestamp) for m in members))
    loaded: list[str] = []

    def load(m: Member) -> Any:
        loaded.append(m.upload_id)
        return view_from_digest(store.get_summary(m.upload_id, m.sha256) or b"")

    rollup, view = store_rollups(store).bucket_rollup("s", "day", "all", bucket, members, load)
    assert loaded == ["log-e", "log-a", "log-c"] and view.get_column("n").get_metric("counts").n.value == 12
    assert rollup.members == tuple(members) and rollup.key == bucket.key
    assert counted(store, "day", DAY0) == (["log-e", "log-a", "log-c"], 12)  # stored for the next view
    loaded.clear()
    again, view = store_rollups(store).bucket_rollup("s", "day", "all", bucket, members, load)
    assert again == rollup and view is None and loaded == []  # read as stored: no profile loaded


def n_count(view: Any) -> int:
    return int(view.get_column("n").get_metric("counts").n.value)


def test_a_view_rebuilds_a_bucket_of_one_or_two_batches_and_reads_a_stored_one_as_columns():
    store = Store()
    one, two = batch("log-a", DAY0 + 10, rows=3), batch("log-b", DAY0 + 20, rows=5)
    store.summaries.update({(r.id, r.sha256): r.digest for r in (one, two)})
    views = {r.id: view_from_digest(r.digest) for r in (one, two)}

    def load(m: Member) -> Any:
        return views[m.upload_id]

    kept = store_rollups(store)
    for records, count in (([one], 3), ([one, two], 8)):
        members = [member_of(r) for r in records]
        bucket = Bucket(DAY0, DAY0 + HOUR, tuple(Batch(m.identity, m.timestamp) for m in members))
        rollup, view = kept.bucket_rollup("s", "hour", "all", bucket, members, load)
        assert n_count(view) == count and (view is views["log-a"]) == (count == 3)  # one batch: its own view
        assert (rollup.digest is None) == (count == 3)
        assert n_count(kept.view(rollup, load)) == count
        columns = kept.columns(rollup, load)
        if count == 3:
            assert columns is views["log-a"]  # one batch: its own summary, loaded
        else:
            assert not isinstance(columns, type(views["log-a"])) and columns.columns["n"].counts == (8, 0)


def test_a_batch_appended_to_a_bucket_of_one_merges_with_its_stored_summary_and_keeps_its_columns():
    import pandas as pd
    import whylogs as why

    store = Store()
    first = batch("log-a", DAY0 + 10, rows=3)
    only_n = digest_from_bytes(why.log(pd.DataFrame({"n": [1, 2]})).view().serialize())
    second = upload(id="log-b", dataset_timestamp=DAY0 + 20, sha256="b" * 64, size=2, digest=only_n)
    store.land(first)
    store.summaries[("log-b", "b" * 64)] = only_n
    store_rollups(store).add("s", member_of(second), "", only_n)  # the first batch's summary read from the store
    found = store_rollups(store).read("s", "hour", DAY0, "all")
    assert found is not None and found.names == ("n", "s", "x")  # the first batch's columns stay named
    assert counted(store, "hour", DAY0) == (["log-a", "log-b"], 5)


def test_a_batch_appended_to_a_bucket_of_one_whose_summary_is_gone_drops_that_bucket_s_rollups():
    derived = Derived()
    digest = digest_from_bytes(make_profile_bytes(4, seed=1))
    summaries = {("s", "log-a"): digest, ("t", "log-a"): digest}  # read by session: each session its own
    kept = Rollups(derived, lambda session_id, member: summaries.get((session_id, member.upload_id)))
    first, later = Member(DAY0 + 10, "a", "log-a", "sa"), Member(DAY0 + 20, "b", "log-b", "sb")
    for session_id in ("s", "t"):
        kept.add(session_id, first, "", digest)
    other_hour = Member(DAY0 + HOUR, "c", "log-c", "sc")
    kept.add("s", other_hour, "", digest)
    del summaries[("s", "log-a")]
    kept.add("s", later, "", digest)  # appended to its hour of one batch, whose summary is gone; late in its day
    assert kept.read("s", "hour", DAY0, "all") is None and kept.read("s", "hour", DAY0 + HOUR, "all") is not None
    assert {key for sid, key in derived.data if sid == "s"} == {rollup_key("hour", DAY0 + HOUR, "all")}
    kept.add("t", later, "", digest)  # in session t the first summary is still there
    found = kept.read("t", "hour", DAY0, "all")
    assert found is not None and [m.upload_id for m in found.members] == ["log-a", "log-b"]


def test_a_late_batch_is_merged_from_the_digest_given_and_only_the_others_summaries_are_read():
    derived = Derived()
    digest = digest_from_bytes(make_profile_bytes(4, seed=1))
    stored = {"log-a": digest, "log-b": digest}  # the late batch's summary is not read back
    read: list[tuple[str, str]] = []

    def member_digest(session_id: str, member: Member) -> bytes | None:
        read.append((session_id, member.upload_id))
        return stored.get(member.upload_id)

    kept = Rollups(derived, member_digest)
    kept.add_many(
        "s", [(Member(DAY0 + 10, "a", "log-a", "sa"), "", digest), (Member(DAY0 + 20, "b", "log-b", "sb"), "", digest)]
    )
    read.clear()
    kept.add("s", Member(DAY0 + 5, "c", "log-c", "sc"), "", digest)
    assert sorted(read) == [
        ("s", "log-a"),
        ("s", "log-a"),
        ("s", "log-b"),
        ("s", "log-b"),
    ]  # its hour's and day's others
    found = kept.read("s", "hour", DAY0, "all")
    assert found is not None and [m.upload_id for m in found.members] == ["log-c", "log-a", "log-b"]


def test_a_header_read_again_is_decoded_once_and_hours_are_written_before_their_days():
    class Recorded(Derived):
        def __init__(self) -> None:
            super().__init__()
            self.writes: list[str] = []

        def put_derived(self, session_id: str, key: str, data: bytes) -> None:
            self.writes.append(key)
            super().put_derived(session_id, key, data)

    derived = Recorded()
    kept = Rollups(derived, lambda session_id, member: None)
    theirs = Rollup((Member(DAY0 + 1, "a", "log-a", "sa"),), ("n",), None)  # written by another host
    derived.put_derived("s", rollup_key("hour", DAY0, "all"), theirs.header())
    first = kept.read("s", "hour", DAY0, "all", merged=False)
    assert first == theirs and kept.read("s", "hour", DAY0, "all", merged=False) is first  # kept decoded
    assert Rollups(derived, lambda session_id, member: None).read("s", "hour", DAY0, "all") is first
    day = Rollup((Member(DAY0 + 2, "b", "log-b", "sb"),), ("n",), None)
    derived.put_derived("s", rollup_key("day", DAY0, "all"), day.header())
    assert kept.read("s", "day", DAY0, "all") == day and kept.read("s", "hour", DAY0, "all") is first  # one per key
    derived.put_derived("t", rollup_key("hour", DAY0, "all"), theirs.header())  # another session's: its own
    assert kept.read("t", "hour", DAY0, "all") == theirs and kept.read("t", "hour", DAY0, "all") is not first
    digest = digest_from_bytes(make_profile_bytes(4, seed=1))
    derived.writes.clear()
    kept.add_many("u", [(Member(DAY0 + DAY + 1, "b", "log-b", "sb"), "k=v", digest)])
    headers = [key for key in derived.writes if key.count("/") == 4]
    family = family_of("k=v")
    assert headers == [
        rollup_key("hour", DAY0 + DAY, "all"),
        rollup_key("hour", DAY0 + DAY, family),
        rollup_key("day", DAY0 + DAY, "all"),
        rollup_key("day", DAY0 + DAY, family),
    ]  # a view that finds a batch in its day finds it in its hour too


def test_a_written_header_is_kept_decoded_as_written():
    derived = Derived()
    kept = Rollups(derived, lambda session_id, member: None)
    rollup = Rollup((Member(DAY0 + 1, "a", "log-a", "sa"),), ("n", "x"), None)
    kept.write("s", "hour", DAY0, "all", rollup)
    key = rollup_key("hour", DAY0, "all")
    assert rollups._HEADERS.entry(derived, "s", key) == (derived.data[("s", key)], rollup)
    assert kept.read("s", "hour", DAY0, "all") is rollups._HEADERS.entry(derived, "s", key)[1]  # no decoding


def test_a_rollup_header_is_compact_json_of_its_format_members_and_names():
    header = Rollup((Member(5, "i", "u", "h"), Member(6, "j", "v", "k")), ("n", "x"), None).header()
    assert header == b'{"v":1,"m":[[5,"i","u","h"],[6,"j","v","k"]],"names":["n","x"]}'


def test_merged_columns_keep_a_nan_or_infinite_mean_and_m2():
    packed = pack_columns({"x": {"distribution": [float("inf"), float("nan"), b"k"]}})
    assert packed == layout({"x": {"distribution": [float("inf"), float("nan"), 1]}}, b"k")
    (mean, m2, sketch) = unpack_columns(packed)["x"]["distribution"]
    assert mean == float("inf") and m2 != m2 and sketch == b"k"  # NaN is the one value unequal to itself


def test_an_hour_and_its_day_holding_the_same_batches_store_one_merge_until_the_day_gets_another_hour():
    # 1500 rows a profile: their KLL sketches are full, so two merges of the same batches compact at
    # random and, over a few appends, differ; an hour and its day that hold the same batches are
    # merged once, and both store that merge
    digests = [digest_from_bytes(make_profile_bytes(1500, seed=seed)) for seed in range(8)]
    members = [Member(DAY0 + 10 * i, f"log-{i}:{i}:1", f"log-{i}", str(i)) for i in range(8)]
    derived = Derived()
    added = Rollups(derived, lambda session_id, member: None)

    def merged_columns(granularity: str, start: int) -> bytes:
        found = added.read("s", granularity, start, "all")
        assert found is not None and found.digest is not None
        return found.digest

    added.add_many("s", [(members[0], "", digests[0]), (members[1], "", digests[1])])
    for index in range(2, 7):
        added.add_many("s", [(members[index], "", digests[index])])
        assert merged_columns("hour", DAY0) == merged_columns("day", DAY0)
    later = Member(DAY0 + HOUR, "log-9:9:1", "log-9", "9")
    added.add_many("s", [(members[7], "", digests[7]), (later, "", digests[0])])  # the day gets another hour
    hour, day = added.read("s", "hour", DAY0, "all"), added.read("s", "day", DAY0, "all")
    assert hour is not None and hour.members == tuple(members)
    assert day is not None and day.members == (*members, later)
    counts = [unpack_columns(merged_columns(granularity, DAY0))["n"]["counts"][0] for granularity in ("hour", "day")]
    assert counts == [12_000, 13_500]


def test_each_batch_s_sketches_are_checked_once_however_many_families_merge_it(monkeypatch):
    from whylogs_songbird.server import digest

    digests = [digest_from_bytes(make_profile_bytes(8, seed=seed)) for seed in range(3)]
    sketches = [
        sketch
        for found in digests
        for column in digest.digest_columns(found).values()
        for sketch in digest.sketches_of(column).values()
    ]
    seen: list[bytes] = []
    for name in ("check_kll_doubles", "check_hll", "check_frequent_strings"):
        check = getattr(digest, name)
        monkeypatch.setattr(digest, name, lambda data, check=check: (seen.append(bytes(data)), check(data))[1])
    members = [Member(DAY0 + 10 * i, f"log-{i}:{i}:1", f"log-{i}", str(i)) for i in range(3)]
    added = Rollups(Derived(), lambda session_id, member: None)
    # three families: every segment (all three batches), segment a (two) and segment b (one)
    added.add_many("s", [(members[0], "a", digests[0]), (members[1], "b", digests[1]), (members[2], "a", digests[2])])
    assert len(sketches) == 24 and sorted(seen) == sorted(sketches)
    assert added.read("s", "hour", DAY0, rollups.family_of("a")).members == (members[0], members[2])


def test_merged_columns_are_kept_with_their_header_within_a_quarter_of_the_cache_and_counted():
    cache = rollups._HeaderCache(max_bytes=40)  # a quarter: 10 bytes
    derived = Derived()
    one = Rollup((Member(1, "i", "u", "s"),), ("n",), None)
    columns = {"n": {"counts": [1, 0]}}
    cache.keep(derived, "s", "a", b"x" * 4, one, columns, 6)  # 10 bytes: exactly a quarter, kept
    assert cache.merged(derived, "s", "a", b"x" * 4) == (one, columns) and cache._size == 10
    assert cache.merged(derived, "s", "a", b"x" * 5) is None  # only with the very header written
    cache.keep(derived, "s", "b", b"y" * 4, one, columns, 7)  # 11 bytes: the header alone is kept
    assert cache.merged(derived, "s", "b", b"y" * 4) is None and cache.entry(derived, "s", "b") == (b"y" * 4, one)
    assert cache._size == 14
    cache.keep(derived, "s", "c", b"z" * 4, one, None, 6)  # no columns: none of their bytes counted
    assert cache.entry(derived, "s", "c") == (b"z" * 4, one) and cache._size == 18


def test_a_forgotten_key_gives_back_its_bytes_and_forgetting_what_is_not_kept_is_harmless():
    cache = rollups._HeaderCache(max_bytes=40)
    derived = Derived()
    one = Rollup((Member(1, "i", "u", "s"),), ("n",), None)
    cache.keep(derived, "s", "a", b"x" * 4, one, {"n": {}}, 6)
    cache.keep(derived, "s", "b", b"y" * 8, one)
    cache.forget(derived, "s", "a")
    assert cache.entry(derived, "s", "a") is None and cache.entry(derived, "s", "b") == (b"y" * 8, one)
    assert cache._size == 8
    cache.forget(derived, "s", "a")  # forgotten already
    cache.forget(derived, "t", "b")  # another session's key
    cache.forget(Derived(), "s", "b")  # artefacts nothing was kept for
    cache.forget({}, "s", "b")  # artefacts that take no weak reference
    assert cache.entry(derived, "s", "b") == (b"y" * 8, one) and cache._size == 8
    cache.forget(derived, "s", "b")
    assert cache.entry(derived, "s", "b") is None and cache._size == 0


def test_a_dropped_rollup_s_header_is_no_longer_kept():
    derived, summaries, digest, kept = _two_batches_added()
    hour, day = rollup_key("hour", DAY0, "all"), rollup_key("day", DAY0, "all")
    assert rollups._HEADERS.entry(derived, "s", hour) is not None
    assert rollups._HEADERS.entry(derived, "s", day) is not None
    del summaries["log-b"]
    kept.add("s", Member(DAY0 + 15, "c", "log-c", "sc"), "", digest)  # late: merged again, b is gone
    assert ("s", hour) not in derived.data and ("s", day) not in derived.data
    assert rollups._HEADERS.entry(derived, "s", hour) is None and rollups._HEADERS.entry(derived, "s", day) is None


class Transactional(Derived):
    """Derived values that take several writes in one transaction (``write_derived``), recorded;
    a single put or drop is recorded apart."""

    def __init__(self) -> None:
        super().__init__()
        self.transactions: list[tuple[str, list[Any]]] = []
        self.single: list[str] = []

    def put_derived(self, session_id: str, key: str, data: bytes) -> None:
        self.single.append(key)
        super().put_derived(session_id, key, data)

    def drop_derived(self, session_id: str, prefix: str = "", keep: str | None = None) -> int:
        self.single.append(prefix)
        return super().drop_derived(session_id, prefix, keep)

    def write_derived(self, session_id: str, writes: Any) -> None:
        self.transactions.append((session_id, list(writes)))
        for op, key, value in writes:
            assert op in ("put", "drop")
            if op == "put":
                self.data[(session_id, key)] = value
            else:
                gone = [k for k in self.data if k[0] == session_id and k[1].startswith(key)]
                for found in [k for k in gone if value is None or not k[1].startswith(value)]:
                    del self.data[found]


def test_each_add_writes_every_bucket_in_one_transaction_puts_then_drops():
    derived = Transactional()
    digest = digest_from_bytes(make_profile_bytes(4, seed=1))
    summaries = {"log-a": digest}
    kept = Rollups(derived, lambda session_id, member: summaries.get(member.upload_id))
    first, second = Member(DAY0 + 10, "a", "log-a", "sa"), Member(DAY0 + 20, "b", "log-b", "sb")
    hour, day = rollup_key("hour", DAY0, "all"), rollup_key("day", DAY0, "all")
    kept.add("s", first, "", digest)
    one = b'{"v":1,"m":[[%d,"a","log-a","sa"]],"names":["n","s","x"]}' % (DAY0 + 10)
    assert derived.transactions == [
        ("s", [("put", hour, one), ("drop", f"{hour}/", None), ("put", day, one), ("drop", f"{day}/", None)])
    ]
    derived.transactions.clear()
    kept.add("s", second, "", digest)
    two = b'{"v":1,"m":[[%d,"a","log-a","sa"],[%d,"b","log-b","sb"]],"names":["n","s","x"]}' % (DAY0 + 10, DAY0 + 20)
    own = content_key(["a", "b"])
    merged = derived.data[("s", f"{hour}/{own}")]
    assert merged.startswith(rollups.KNOWN_MAGIC)
    assert derived.transactions == [
        (
            "s",
            [
                ("put", f"{hour}/{own}", merged),
                ("put", hour, two),
                ("drop", f"{hour}/", f"{hour}/{own}"),
                ("put", f"{day}/{own}", merged),  # the hour's merge: the same batches
                ("put", day, two),
                ("drop", f"{day}/", f"{day}/{own}"),
            ],
        )
    ]
    derived.transactions.clear()
    del summaries["log-a"]
    kept.add("s", Member(DAY0 + 5, "c", "log-c", "sc"), "", digest)  # late, and a's summary is gone
    assert derived.transactions == [("s", [("drop", hour, None), ("drop", day, None)])]
    assert derived.single == [] and {key for _, key in derived.data} == set()


def test_a_header_appended_to_keeps_the_earlier_bytes_and_encodes_only_the_new_members():
    # another host's header, spaced: what is appended to it keeps its members' bytes as they are
    derived = Derived()
    digest = digest_from_bytes(make_profile_bytes(4, seed=1))
    kept = Rollups(derived, lambda session_id, member: digest)
    hour = rollup_key("hour", DAY0, "all")
    derived.data[("s", hour)] = b'{"v": 1, "m": [[%d, "a", "log-a", "sa"]],"names":["n"]}' % (DAY0 + 10)
    kept.add("s", Member(DAY0 + 20, "b", "log-b", "sb"), "", digest)
    both = b'{"v": 1, "m": [[%d, "a", "log-a", "sa"],[%d,"b","log-b","sb"]],"names":["n","s","x"]}'
    assert derived.data[("s", hour)] == both % (DAY0 + 10, DAY0 + 20)
    third = Member(DAY0 + 30, "c", "log-c", "sc")
    kept.write("s", "hour", DAY0, "all", Rollup((*kept.read("s", "hour", DAY0, "all").members, third), ("n",), b"m"))
    three = b'{"v": 1, "m": [[%d, "a", "log-a", "sa"],[%d,"b","log-b","sb"],[%d,"c","log-c","sc"]],"names":["n"]}'
    assert derived.data[("s", hour)] == three % (DAY0 + 10, DAY0 + 20, DAY0 + 30)


def test_merged_columns_written_are_kept_with_their_header_and_a_single_batch_leaves_no_merged_columns():
    derived = Derived()
    kept = Rollups(derived, lambda session_id, member: None)
    hour = rollup_key("hour", DAY0, "all")
    members = (Member(DAY0 + 10, "a", "log-a", "sa"), Member(DAY0 + 20, "b", "log-b", "sb"))
    columns = {"n": {"counts": [8, 0]}}
    kept.write("s", "hour", DAY0, "all", Rollup(members, ("n",), b"merged"), columns)
    assert rollups._HEADERS.merged(derived, "s", hour, derived.data[("s", hour)]) == (
        Rollup(members, ("n",), None),
        columns,
    )
    derived.data[("s", f"{hour}/{content_key(['a'])}")] = b"left by an older merge"
    kept.write("s", "hour", DAY0, "all", Rollup(members[:1], ("n",), None))
    assert {key for _, key in derived.data} == {hour}
    assert rollups._HEADERS.merged(derived, "s", hour, derived.data[("s", hour)]) is None  # no columns: none kept


def test_a_batch_appended_to_merged_columns_this_process_kept_checks_only_its_own_sketches(monkeypatch):
    from whylogs_songbird.server import digest

    digests = [digest_from_bytes(make_profile_bytes(8, seed=seed)) for seed in range(3)]
    last = [
        sketch
        for column in digest.digest_columns(digests[2]).values()
        for sketch in digest.sketches_of(column).values()
    ]
    members = [Member(DAY0 + 10 * i, f"log-{i}:{i}:1", f"log-{i}", str(i)) for i in range(4)]
    derived = Derived()
    added = Rollups(derived, lambda session_id, member: None)
    added.add_many("s", [(members[0], "", digests[0]), (members[1], "", digests[1])])
    seen: list[bytes] = []
    for name in ("check_kll_doubles", "check_hll", "check_frequent_strings"):
        check = getattr(digest, name)
        monkeypatch.setattr(digest, name, lambda data, check=check: (seen.append(bytes(data)), check(data))[1])
    added.add_many("s", [(members[2], "", digests[2])])  # the hour's and day's kept columns: not checked again
    assert len(last) == 8 and sorted(seen) == sorted(last)
    # the same buckets in another store's copy (nothing kept for them): the hour's and the day's
    # stored columns are checked as they are read (8 sketches each), the new batch's once
    copy = Derived()
    copy.data = dict(derived.data)
    seen.clear()
    Rollups(copy, lambda session_id, member: None).add_many("s", [(members[3], "", digests[2])])
    assert len(seen) == 24


def test_an_hour_and_its_day_appending_the_same_batch_to_the_same_columns_keep_one_merge_among_other_families():
    digest = digest_from_bytes(make_profile_bytes(4, seed=1))
    derived = Derived()
    added = Rollups(derived, lambda session_id, member: digest)
    a, b, c = (Member(DAY0 + 10 * i, name, f"log-{name}", name) for i, name in enumerate("abc", 1))
    added.add_many("s", [(a, "k=v", digest), (b, "", digest)])  # every segment: a and b; segment k=v: a
    added.add_many("s", [(c, "k=v", digest)])  # appended to every segment's kept columns and to a's summary

    def kept(granularity: str, family: str) -> Any:
        key = rollup_key(granularity, DAY0, family)
        found = rollups._HEADERS.merged(derived, "s", key, derived.data[("s", key)])
        assert found is not None and found[0].members == ((a, b, c) if family == "all" else (a, c))
        return found[1]

    family = family_of("k=v")  # its hour's and day's columns were each read from a's summary: two merges
    assert kept("hour", "all") is kept("day", "all") and kept("hour", family) is not kept("day", family)
