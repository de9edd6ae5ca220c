"""Property tests of rollups (whylogs_songbird/server/rollups.py): whatever the arrival order and
however batches are grouped as they land, each hour and day rollup is the merge of its bucket.

Apart from test_timeline_rollups.py's fast cases: a mutation run gives a mutant's tests file by
file, so these slower ones run after the fast files' tests, which kill most mutants first."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rollup_fakes import DAY0, DIGESTS, DictArtefacts, Summaries, member, merged_points, rollup_points

from whylogs_songbird.server.rollups import ALL_SEGMENTS, ROLLUP_PREFIX, Member, Rollups
from whylogs_songbird.timeline import HOUR_MS, bucket_bounds


@pytest.mark.mutation_fast("whylogs_songbird/server/rollups.py")
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, 47), st.integers(0, 59)), min_size=1, max_size=7),
    st.randoms(use_true_random=False),
)
def test_a_rollup_is_the_merge_of_its_bucket_in_any_arrival_order(stamps: list[tuple[int, int]], rng: Any) -> None:
    artefacts, summaries = DictArtefacts(), Summaries()
    rollups = Rollups(artefacts, summaries)
    members = [member(i, DAY0 + hour * HOUR_MS + minute * 60_000) for i, (hour, minute) in enumerate(stamps)]
    arrival = list(range(len(members)))
    rng.shuffle(arrival)
    for index in arrival:
        summaries.add(rollups, members[index], DIGESTS[index % len(DIGESTS)])
    for granularity in ("hour", "day"):
        buckets: dict[int, list[Member]] = {}
        for m in members:
            buckets.setdefault(bucket_bounds(m.timestamp, granularity)[0], []).append(m)  # type: ignore[arg-type]
        stored = [
            k for (_, k) in artefacts.data if k.startswith(f"{ROLLUP_PREFIX}{granularity}/") and k.count("/") == 4
        ]
        assert len(stored) == len(buckets)
        for start, inside in buckets.items():
            rollup = rollups.read("s", granularity, start, ALL_SEGMENTS)
            assert rollup is not None
            assert list(rollup.members) == sorted(inside, key=lambda m: m.order)
            assert (rollup.digest is None) == (len(inside) == 1)
            assert rollup_points(rollups, rollup, summaries) == merged_points(inside, summaries)


@pytest.mark.mutation_fast("whylogs_songbird/server/rollups.py")
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 59), st.booleans()), min_size=1, max_size=9),
    st.lists(st.integers(1, 4), min_size=1, max_size=9),
    st.randoms(use_true_random=False),
)
def test_batches_added_in_groups_leave_the_rollups_one_by_one_adds_leave(
    stamps: list[tuple[int, int, bool]], sizes: list[int], rng: Any
) -> None:
    """The ingest worker merges a burst of summarised batches at once (``add_many``): in whatever
    groups they come (late ones, a slot PUT again within its group or after it, segments), each
    bucket ends with the same members and merge as adding them one by one."""
    members, segments = [], []
    for i, (hour, minute, again) in enumerate(stamps):
        index = i - 1 if again and i else i  # the slot of the batch before, PUT again
        members.append(member(index, DAY0 + hour * HOUR_MS + minute * 60_000, version=i))
        segments.append(f"k={index % 2}")
    arrival = list(range(len(members)))
    rng.shuffle(arrival)
    one_by_one, grouped = (DictArtefacts(), Summaries()), (DictArtefacts(), Summaries())
    for index in arrival:
        one_by_one[1].add(Rollups(*one_by_one), members[index], DIGESTS[index % len(DIGESTS)], segments[index])
    at = 0
    for size in [*sizes, len(arrival)]:
        group = arrival[at : at + size]
        at += size
        for index in group:
            grouped[1].by_member[(members[index].upload_id, members[index].sha256)] = DIGESTS[index % len(DIGESTS)]
        Rollups(*grouped).add_many("s", [(members[i], segments[i], DIGESTS[i % len(DIGESTS)]) for i in group])
    for artefacts, summaries in (one_by_one, grouped):
        rollups = Rollups(artefacts, summaries)
        for key in sorted({k for _, k in one_by_one[0].data} | {k for _, k in grouped[0].data}):
            if key.count("/") != 4:
                continue
            _, _, granularity, start, family = key.split("/")
            mine = rollups.read("s", granularity, int(start), family)
            theirs = Rollups(*one_by_one).read("s", granularity, int(start), family)
            assert (mine is None) == (theirs is None), key
            if mine is not None and theirs is not None:
                assert mine.members == theirs.members and sorted(mine.names) == sorted(theirs.names)
                assert rollup_points(rollups, mine, summaries) == merged_points(list(mine.members), summaries)
