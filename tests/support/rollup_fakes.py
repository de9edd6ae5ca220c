"""Rollups over a dict of derived values (the store's seam of ``whylogs_songbird/server/rollups.py``),
with the stored summaries its members are read from, and small profiles' digests to merge: shared by
the rollups' fast tests and their property tests."""

from __future__ import annotations

from typing import Any

from conftest import make_profile_bytes

from whylogs_songbird.column_stats import merge_views
from whylogs_songbird.server.digest import digest_from_bytes, view_from_digest
from whylogs_songbird.server.rollups import Member, Rollup, Rollups
from whylogs_songbird.timeline import column_points

DAY0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
#: Small profiles: a bucket of them never fills a KLL sketch, so every number of a merge is exact
#: (whylogs' KLL merge compacts at random once a sketch is full).
DIGESTS = [digest_from_bytes(make_profile_bytes(8, seed=seed)) for seed in range(8)]


class DictArtefacts:
    """Derived values in a dict (the store's ``get_derived``/``put_derived``/``drop_derived``)."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], bytes] = {}

    def get_derived(self, session_id: str, key: str) -> bytes | None:
        return self.data.get((session_id, key))

    def put_derived(self, session_id: str, key: str, data: bytes) -> None:
        self.data[(session_id, key)] = data

    def drop_derived(self, session_id: str, prefix: str = "", keep: str | None = None) -> int:
        gone = [
            k
            for k in self.data
            if k[0] == session_id and k[1].startswith(prefix) and (keep is None or not k[1].startswith(keep))
        ]
        for key in gone:
            del self.data[key]
        return len(gone)


def member(index: int, timestamp: int, version: int = 0) -> Member:
    sha = f"{index:02d}{version:02d}".ljust(64, "a")
    return Member(timestamp, f"log-{index}:{sha}:1", f"log-{index}", sha)


class Summaries:
    """Stored summaries by (upload id, sha256), as ``Rollups`` reads its members'."""

    def __init__(self) -> None:
        self.by_member: dict[tuple[str, str], bytes] = {}

    def __call__(self, session_id: str, m: Member) -> bytes | None:
        return self.by_member.get((m.upload_id, m.sha256))

    def add(self, rollups: Rollups, m: Member, digest: bytes, segment: str = "") -> None:
        self.by_member[(m.upload_id, m.sha256)] = digest
        rollups.add("s", m, segment, digest)


def merged_points(members: list[Member], summaries: Summaries) -> dict[str, Any]:
    ordered = sorted(members, key=lambda m: m.order)
    return column_points(merge_views([view_from_digest(summaries("s", m) or b"") for m in ordered]))


def rollup_points(rollups: Rollups, rollup: Rollup, summaries: Summaries) -> dict[str, Any]:
    return column_points(rollups.view(rollup, lambda m: view_from_digest(summaries("s", m) or b"")))
