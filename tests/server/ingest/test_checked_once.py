"""Bytes a PUT of this process checked are not checked again by their sandbox child, and only those
very bytes.

The structural check (``profile_check.py``) runs on a PUT's bytes before they are stored, and the
PUT notes their sha256 (``Store.checked``). The ingest worker sends a profile whose recorded
sha256 is noted, under a column cap no larger than the child's, as a ``C`` job carrying that
digest; the child computes the digest of the bytes it received and skips the check only when it is
that one. Everything else (bytes stored otherwise, changed since, checked under a larger cap, or
sent with another digest) is checked in the child before whylogs reads it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import requests
from conftest import make_profile_bytes
from stored_profiles import profile_path, store_profile_bytes

from whylogs_songbird.server.ingest import ingest_one
from whylogs_songbird.server.profile_check import CheckedProfiles
from whylogs_songbird.server.sandbox import Sandbox, SandboxLimits, SandboxRefused, summarise_in_child
from whylogs_songbird.server.store import Store

TIMEOUT = 30
#: Three columns: the structural check of a child whose cap is two columns refuses them.
THREE = make_profile_bytes(4)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def two_columns() -> Iterator[Sandbox]:
    """One real sandbox child whose structural check allows two columns at most."""
    sandbox = Sandbox(SandboxLimits(max_columns=2), max_children=1)
    yield sandbox
    sandbox.close()


@pytest.mark.mutation_fast("whylogs_songbird/server/profile_check.py")
def test_only_digests_noted_under_a_cap_no_larger_are_vouched_for():
    checked = CheckedProfiles(limit=2)
    assert not checked.vouches(sha(b"a"), 10), "nothing noted yet"
    checked.note(sha(b"a"), 10)
    assert len(checked) == 1 and repr(checked) == "CheckedProfiles(limit=2, noted=1)"
    assert not checked.vouches(None, 10), "a profile without a digest is never vouched for"
    assert not checked.vouches(sha(b"b"), 10), "other bytes"
    assert not checked.vouches(sha(b"a"), 9), "checked under a larger cap than the child's"
    assert checked.vouches(sha(b"a"), 10) and checked.vouches(sha(b"a"), 11), "again, and under a larger cap"
    checked.note(sha(b"a"), 8)
    assert checked.vouches(sha(b"a"), 8) and not checked.vouches(sha(b"a"), 7), "the latest note counts"


@pytest.mark.mutation_fast("whylogs_songbird/server/profile_check.py")
def test_the_least_recently_noted_go_first():
    checked = CheckedProfiles(limit=2)
    checked.note(sha(b"1"), 5)
    checked.note(sha(b"2"), 5)
    checked.note(sha(b"1"), 5)  # noted again: now the youngest
    checked.note(sha(b"3"), 5)
    assert len(checked) == 2
    assert not checked.vouches(sha(b"2"), 5)
    assert checked.vouches(sha(b"1"), 5) and checked.vouches(sha(b"3"), 5)


@pytest.mark.mutation_fast("whylogs_songbird/server/profile_check.py")
def test_by_default_4096_digests_are_kept():
    checked = CheckedProfiles()
    for n in range(4096):
        checked.note(f"{n:064x}", 10)
    assert len(checked) == 4096 and checked.vouches(f"{0:064x}", 10)
    checked.note("f" * 64, 10)
    assert len(checked) == 4096 and not checked.vouches(f"{0:064x}", 10) and checked.vouches("f" * 64, 10)


def test_the_child_skips_the_check_only_for_bytes_of_the_digest_it_is_sent(two_columns):
    with pytest.raises(SandboxRefused, match="not a well-formed whylogs profile"):
        two_columns.digest(THREE)  # not vouched for: checked in the child
    digest = two_columns.digest(THREE, sha(THREE))
    assert digest == summarise_in_child(THREE, max_columns=2, checked=True)
    with pytest.raises(SandboxRefused, match="not a well-formed whylogs profile"):
        two_columns.digest(THREE, sha(make_profile_bytes(4, seed=3)))  # another digest: checked
    junk = b"WHY1 not a profile"
    with pytest.raises(SandboxRefused):
        two_columns.digest(junk, sha(junk))  # the checks after the structural one still refuse it
    done, refused = two_columns.digest_many([THREE, THREE], [sha(THREE), None])
    assert done == digest and isinstance(refused, SandboxRefused)


def test_bytes_not_checked_here_or_changed_since_are_checked_in_the_child(tmp_path, two_columns):
    store = Store(tmp_path / "data")
    try:
        session = store.create_session("u")

        def stored(noted: bytes | None, on_disk: bytes | None = None) -> str:
            upload = store_profile_bytes(store, store.create_upload(session.id, "batch", ttl_seconds=60).id, THREE)
            if noted is not None:
                store.checked.note(sha(noted), 2)  # as a PUT of this process would
            if on_disk is not None:
                profile_path(store, upload).write_bytes(on_disk)  # changed after it was stored
            found = store.get_upload(upload.id)
            assert found is not None
            ingest_one(store, found, two_columns)
            after = store.get_upload(upload.id)
            assert after is not None
            return after.ingest_state

        assert stored(noted=None) == "invalid", "bytes no PUT of this process checked"
        assert stored(noted=THREE, on_disk=make_profile_bytes(4, seed=5)) == "invalid", "bytes changed since"
        assert stored(noted=THREE) == "ready", "the very bytes noted are not checked again"
        store.checked.note(sha(THREE), 3)
        assert stored(noted=None) == "invalid", "checked under a larger cap than the child's"
    finally:
        store.close()


def test_a_put_notes_the_digest_of_the_bytes_it_checked(server):
    session_id = requests.post(f"{server.url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]
    body = {"datasetTimestamp": 1_700_000_000_000, "segmentTags": []}
    slot = requests.post(f"{server.url}/v0/sessions/{session_id}/upload", json=body, timeout=TIMEOUT).json()
    data = make_profile_bytes(seed=41)
    assert not server.store.checked.vouches(sha(data), server.config.max_columns)
    assert requests.put(slot["uploadUrl"], data=data, timeout=TIMEOUT).status_code == 200
    assert server.store.checked.vouches(sha(data), server.config.max_columns)
    assert not server.store.checked.vouches(sha(data), server.config.max_columns - 1)
    refused = requests.post(f"{server.url}/v0/sessions/{session_id}/upload", json=body, timeout=TIMEOUT).json()
    assert requests.put(refused["uploadUrl"], data=b"WHY1 junk", timeout=TIMEOUT).status_code == 400
    assert not server.store.checked.vouches(sha(b"WHY1 junk"), server.config.max_columns)
