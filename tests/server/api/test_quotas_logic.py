"""Per-session limits (whylogs_songbird/server/quotas.py) on the real embedded store.

Slots and profiles are made on a real SQLite store in a temporary directory, so that what counts
as held (stored profiles, open slots, a replaced profile) is the store's own answer. Each limit is
tried at N (granted) and N+1 (refused, with nothing created), with the exact message and status.
"""

from __future__ import annotations

import dataclasses

import pytest
from stored_profiles import store_profile_bytes

from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.errors import ApiError
from whylogs_songbird.server.quotas import (
    GUEST_OFF_STATUS,
    OPEN_SLOTS_STATUS,
    QUOTA_STATUS,
    check_guest_writes,
    check_session_quota,
    create_slots,
)
from whylogs_songbird.server.store import NewUpload, Store

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/quotas.py")

TS = 1_700_000_000_000


def batch(n: int) -> list[NewUpload]:
    return [NewUpload("batch", dataset_timestamp=TS + i) for i in range(n)]


def holding(store: Store, sizes: list[int]) -> tuple[str, list[str]]:
    """A session holding stored profiles of these sizes (distinct bytes), and their upload ids."""
    session_id = store.create_session("user").id
    ids = []
    for i, size in enumerate(sizes):
        upload = store.create_uploads(session_id, batch(1), ttl_seconds=900)[0]
        store_profile_bytes(store, upload.id, bytes([65 + i]) * size)
        ids.append(upload.id)
    return session_id, ids


def test_statuses():
    assert (QUOTA_STATUS, OPEN_SLOTS_STATUS, GUEST_OFF_STATUS) == (403, 429, 403)


def test_guest_writes_are_refused_only_with_guest_sessions_off():
    check_guest_writes(ServerConfig(guest_sessions=True))
    with pytest.raises(ApiError) as refused:
        check_guest_writes(ServerConfig(guest_sessions=False))
    assert refused.value.status == 403 and refused.value.headers is None
    assert refused.value.message == (
        "This server takes no guest sessions or guest uploads (it runs with --guest-sessions off): it only takes "
        "writes made with an API key. Ask its operator for a key, or publish to another server."
    )


# -- create_slots -----------------------------------------------------------------------------------


def test_slots_up_to_the_open_limit_are_created_with_the_configured_ttl(store):
    session_id = store.create_session("user").id
    created = create_slots(store, ServerConfig(max_open_slots=3, url_ttl_seconds=60), session_id, batch(3))
    assert [u.dataset_timestamp for u in created] == [TS, TS + 1, TS + 2]
    assert all(u.session_id == session_id and u.kind == "batch" for u in created)
    assert {u.expires_at - u.created_at // 1000 for u in created} <= {60, 59}  # expires_at in seconds


def test_one_request_asking_for_more_than_the_open_limit_is_told_to_ask_for_fewer(store):
    session_id = store.create_session("user").id
    with pytest.raises(ApiError) as refused:
        create_slots(store, ServerConfig(max_open_slots=3), session_id, batch(4))
    assert refused.value.status == 429 and refused.value.headers is None
    assert refused.value.message == (
        "This request asks for 4 upload slots, more than the 3 open slots this server allows per session "
        "(--max-open-slots), so nothing was created; ask for at most 3 per request."
    )
    assert store.list_profiles(session_id) == []
    assert len(create_slots(store, ServerConfig(max_open_slots=3), session_id, batch(3))) == 3  # nothing was held


def test_slots_past_the_open_limit_wait_for_puts(store):
    session_id = store.create_session("user").id
    config = ServerConfig(max_open_slots=3, url_ttl_seconds=120)
    first = create_slots(store, config, session_id, batch(2))
    with pytest.raises(ApiError) as refused:
        create_slots(store, config, session_id, batch(2))  # 2 + 2 > 3, though 2 alone is allowed
    assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "1"}
    assert refused.value.message == (
        f"Session {session_id} has 2 upload slots open (asked for and not PUT yet) and this server allows 3 per "
        "session (--max-open-slots), so none of the 2 asked for was created. PUT the profiles to the upload URLs "
        "already given (unused ones expire after 120 s), then ask again."
    )
    with pytest.raises(ApiError) as asked_the_limit:
        create_slots(store, config, session_id, batch(3))  # exactly the limit in one request: the held message
    assert asked_the_limit.value.headers == {"Retry-After": "1"}
    assert "has 2 upload slots open" in asked_the_limit.value.message
    create_slots(store, config, session_id, batch(1))  # 3: at the limit
    store_profile_bytes(store, first[0].id, b"x")
    assert len(create_slots(store, config, session_id, batch(1))) == 1  # a PUT frees a place


def test_profiles_past_the_session_quota_are_refused_at_slot_time(store):
    session_id, _ = holding(store, [1, 1])
    config = ServerConfig(max_session_profiles=4, max_open_slots=None)
    create_slots(store, config, session_id, batch(1))  # 2 stored + 1 open + 1 = 4: at the quota
    with pytest.raises(ApiError) as refused:
        create_slots(store, config, session_id, batch(2))
    assert refused.value.status == 403 and refused.value.headers is None
    assert refused.value.message == (
        f"Session {session_id} holds 3 profiles and open upload slots and this server allows 4 per session "
        "(--max-session-profiles), so nothing was created; start a new session for more profiles."
    )
    create_slots(store, config, session_id, batch(1))


def test_no_limits_create_any_number(store):
    session_id = store.create_session("user").id
    config = ServerConfig(max_open_slots=None, max_session_profiles=None)
    assert len(create_slots(store, config, session_id, batch(50))) == 50


# -- check_session_quota -----------------------------------------------------------------------------


class UntouchableStore:
    def list_profiles(self, session_id):
        raise AssertionError("the store was read with no quota set")


def test_no_quota_reads_nothing():
    check_session_quota(UntouchableStore(), ServerConfig(), "session-x", new_profiles=10**6, new_bytes=10**12)  # type: ignore[arg-type]


def test_the_profile_quota_at_n_and_n_plus_one(store):
    session_id, ids = holding(store, [1, 1])
    config = ServerConfig(max_session_profiles=3)
    check_session_quota(store, config, session_id, new_profiles=1)
    check_session_quota(store, config, session_id, new_profiles=0)
    with pytest.raises(ApiError) as refused:
        check_session_quota(store, config, session_id, new_profiles=2)
    assert refused.value.status == 403 and refused.value.headers is None
    assert refused.value.message == (
        f"Session {session_id} holds 2 profiles and this server allows 3 per session (--max-session-profiles), "
        "so nothing was stored; start a new session for more profiles."
    )
    full = ServerConfig(max_session_profiles=2)
    with pytest.raises(ApiError, match="holds 2 profiles"):
        check_session_quota(store, full, session_id, new_profiles=1)
    # a PUT replacing a stored profile counts it once
    check_session_quota(store, full, session_id, new_profiles=1, replacing=store.get_upload(ids[0]))
    with pytest.raises(ApiError, match="holds 1 profiles"):
        check_session_quota(
            store, ServerConfig(max_session_profiles=1), session_id, new_profiles=1, replacing=store.get_upload(ids[0])
        )


def test_open_slots_do_not_count_at_put_time(store):
    session_id, _ = holding(store, [1])
    store.create_uploads(session_id, batch(5), ttl_seconds=900)
    check_session_quota(store, ServerConfig(max_session_profiles=2), session_id, new_profiles=1)


def test_the_byte_quota_at_n_and_n_plus_one(store):
    session_id, ids = holding(store, [3, 4])
    config = ServerConfig(max_session_bytes=10)
    check_session_quota(store, config, session_id, new_profiles=1, new_bytes=3)  # 7 + 3 = 10
    with pytest.raises(ApiError) as refused:
        check_session_quota(store, config, session_id, new_profiles=1, new_bytes=4)
    assert refused.value.status == 403 and refused.value.headers is None
    assert refused.value.message == (
        f"Session {session_id} holds 7 bytes of profiles; 4 more would pass this server's limit of 10 bytes per "
        "session (--max-session-bytes), so nothing was stored. Start a new session, or upload smaller profiles."
    )
    # replacing the 4-byte profile: 3 held
    check_session_quota(store, config, session_id, new_profiles=1, new_bytes=7, replacing=store.get_upload(ids[1]))
    with pytest.raises(ApiError, match="holds 3 bytes of profiles; 8 more"):
        check_session_quota(store, config, session_id, new_profiles=1, new_bytes=8, replacing=store.get_upload(ids[1]))


def test_the_byte_quota_alone_does_not_limit_profiles_and_the_profile_quota_alone_not_bytes(store):
    session_id, _ = holding(store, [5, 5, 5])
    check_session_quota(store, ServerConfig(max_session_bytes=100), session_id, new_profiles=50, new_bytes=85)
    check_session_quota(store, ServerConfig(max_session_profiles=4), session_id, new_profiles=1, new_bytes=10**9)


def test_both_quotas_the_profile_one_is_judged_first(store):
    session_id, _ = holding(store, [5, 5])
    config = ServerConfig(max_session_profiles=2, max_session_bytes=10)
    with pytest.raises(ApiError, match="holds 2 profiles"):
        check_session_quota(store, config, session_id, new_profiles=1, new_bytes=1)
    with pytest.raises(ApiError, match="holds 10 bytes"):
        check_session_quota(store, config, session_id, new_profiles=0, new_bytes=1)
    check_session_quota(store, config, session_id, new_profiles=0, new_bytes=0)


def test_a_check_of_bytes_alone_adds_no_profile_and_of_profiles_alone_no_bytes(store):
    session_id, _ = holding(store, [5, 5])
    full = ServerConfig(max_session_profiles=2, max_session_bytes=10)
    check_session_quota(store, full, session_id, new_bytes=0)
    check_session_quota(store, full, session_id)
    with pytest.raises(ApiError, match="holds 10 bytes"):
        check_session_quota(store, full, session_id, new_bytes=1)
    bytes_full = ServerConfig(max_session_profiles=3, max_session_bytes=10)
    check_session_quota(store, bytes_full, session_id, new_profiles=1)  # no bytes said: none counted


def test_an_empty_stored_profile_holds_no_bytes(store):
    session_id, _ = holding(store, [0, 4])
    check_session_quota(store, ServerConfig(max_session_bytes=10), session_id, new_profiles=1, new_bytes=6)


def test_only_a_stored_original_profile_of_the_session_counts_once_when_replaced(store):
    session_id, ids = holding(store, [4, 6])
    other_session, other_ids = holding(store, [6])
    full = ServerConfig(max_session_profiles=2, max_session_bytes=10)
    own = store.get_upload(ids[1])
    assert own is not None and own.stored and own.duplicate_of is None
    check_session_quota(store, full, session_id, new_profiles=1, new_bytes=6, replacing=own)
    not_replacing = {
        "another session's profile": store.get_upload(other_ids[0]),
        "an open slot of the session": store.create_uploads(session_id, batch(1), ttl_seconds=900)[0],
        "a duplicate in the session": dataclasses.replace(own, duplicate_of=ids[0]),
    }
    for what, slot in not_replacing.items():
        with pytest.raises(ApiError, match="holds 2 profiles") as refused:
            check_session_quota(store, full, session_id, new_profiles=1, new_bytes=6, replacing=slot)
        assert refused.value.status == 403, what
        with pytest.raises(ApiError, match="holds 10 bytes of profiles; 1 more"):
            check_session_quota(store, ServerConfig(max_session_bytes=10), session_id, new_bytes=1, replacing=slot)


def test_replacing_an_empty_profile_frees_no_bytes(store):
    session_id, ids = holding(store, [0, 10])
    with pytest.raises(ApiError, match="holds 10 bytes of profiles; 1 more"):
        check_session_quota(
            store, ServerConfig(max_session_bytes=10), session_id, new_bytes=1, replacing=store.get_upload(ids[0])
        )


class CountingStore:
    """The real store, with every profile count it is asked for recorded (its at_most bound)."""

    def __init__(self, store: Store) -> None:
        self.store, self.bounds = store, []

    def count_profiles(self, session_id, *, at_most=None):
        self.bounds.append(at_most)
        return self.store.count_profiles(session_id, at_most=at_most)


def test_a_session_within_its_profile_quota_is_counted_once_and_no_further_than_the_quota_needs(store):
    session_id, ids = holding(store, [1] * 4)
    counting = CountingStore(store)
    for config, new, replacing in [
        (ServerConfig(max_session_profiles=5), 1, None),  # 4 + 1 = 5: at the quota
        (ServerConfig(max_session_profiles=4), 1, store.get_upload(ids[0])),
        (ServerConfig(max_session_profiles=3), 0, store.get_upload(ids[0])),  # replacing one of 4, 3 allowed
    ]:
        counting.bounds.clear()
        check_session_quota(counting, config, session_id, new_profiles=new, replacing=replacing)  # type: ignore[arg-type]
        assert len(counting.bounds) == 1 and counting.bounds[0] is not None, counting.bounds
        assert counting.bounds[0] <= config.max_session_profiles + 4  # a bounded walk, not the session's history


def test_a_refusal_says_exactly_how_many_profiles_past_the_counting_bound(store):
    session_id, _ = holding(store, [1] * 6)
    with pytest.raises(ApiError, match="holds 6 profiles and this server allows 1 per session"):
        check_session_quota(store, ServerConfig(max_session_profiles=1), session_id, new_profiles=1)
    with pytest.raises(ApiError, match="holds 6 profiles and this server allows 3 per session"):
        check_session_quota(store, ServerConfig(max_session_profiles=3), session_id, new_profiles=0)
