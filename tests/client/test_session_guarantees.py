"""What docs/sessions.md promises about the stored session, checked with real contention.

The server is a real LocalServer behind a loopback `Relay` (tests/support/loopback.py) that counts
requests and whose latency and answers the test controls: a slow ``POST /v0/sessions`` makes
processes that race for the session overlap; a hook answers 410 or 400 to stand for a hosted
songbird that expired a session.
"""

import json
import multiprocessing
import queue

import pytest
from conftest import ORG_KEY, make_profile_bytes
from loopback import Relay, Rendezvous
from workers import publish_in_rounds

from whylogs_songbird import (
    AuthError,
    PublishError,
    SongbirdClient,
    claim_session,
    current_session,
    new_session,
    publish,
)

# Not marked for scripts/mutation: every session.py mutant would cost this file's real server and
# relay (half a minute or more each); test_session_logic.py and test_session_store.py hold the same
# decisions in fast tests, and this file proves them end to end in CI.

PROCESSES = 10


@pytest.fixture
def profile_path(tmp_path):
    path = tmp_path / "profile.bin"
    path.write_bytes(make_profile_bytes())
    return path


def stored(config_dir):
    """sessions.json as a dict ({} when absent)."""
    path = config_dir / "sessions.json"
    return json.loads(path.read_text()) if path.exists() else {}


class Processes:
    """``n`` processes that publish one of ``profile_paths`` each, in two rounds; each round starts in all of them
    at the same moment (the second once the test calls `next_round`)."""

    def __init__(self, n, profile_paths, options):
        ctx = multiprocessing.get_context("spawn")
        self.n = n
        self.barriers = [ctx.Barrier(n), ctx.Barrier(n + 1)]
        self.results = ctx.Queue()
        self.procs = [
            ctx.Process(target=publish_in_rounds, args=(self.barriers, self.results, str(path), options))
            for path in profile_paths
        ]

    def __enter__(self):
        for proc in self.procs:
            proc.start()
        return self

    def answers(self):
        """The next ``n`` results: [(kind, session id or error)]."""
        got = []
        try:
            while len(got) < self.n:
                got.append(self.results.get(timeout=240)[1:])
        except queue.Empty:
            pass
        assert len(got) == self.n, f"only {len(got)} of {self.n} processes answered: {got}"
        return got

    def next_round(self):
        self.barriers[1].wait(timeout=240)

    def __exit__(self, *exc):
        for barrier in self.barriers:
            barrier.abort()  # a child still waiting gives up
        for proc in self.procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()


def slow_session_creation(rendezvous):
    """A hook: every POST /v0/sessions waits for a second one (or the rendezvous timeout)."""

    def hook(method, path):
        if method == "POST" and path == "/v0/sessions":
            rendezvous.wait()
        return None

    return hook


def test_ten_processes_create_exactly_one_session_then_renew_it_once(server, tmp_path):
    # Round 1: without the cross-process lock the ten processes all find no stored session and
    # their creates meet at the rendezvous; with it, one creates while the nine wait on the lock.
    # Round 2: the server has ended that session; each process is told so at the same moment,
    # and a process that finds a newer session stored by another must use it.
    relay = Relay(server.url, slow_session_creation(Rendezvous(parties=2, timeout=2.0)))
    config_dir = tmp_path / "config"
    with relay.running():
        options = {"endpoint": relay.url, "config_dir": str(config_dir), "max_retries": 0, "outbox": False}
        paths = [tmp_path / f"profile-{i}.bin" for i in range(PROCESSES)]
        for seed, path in enumerate(paths):  # different bytes: the server keeps identical uploads once
            path.write_bytes(make_profile_bytes(seed=seed))
        with Processes(PROCESSES, paths, options) as processes:
            answers = processes.answers()
            assert [kind for kind, _ in answers] == ["ok"] * PROCESSES, answers
            assert relay.count("create_session") == 1
            (first,) = {sid for _, sid in answers}
            assert stored(config_dir)["sessions"][relay.url]["sessionId"] == first
            assert len(server.store.list_profiles(first)) == PROCESSES

            SongbirdClient(server.url).claim_guest_session(first, "org-test", api_key=ORG_KEY)
            processes.next_round()
            answers = processes.answers()
    assert [kind for kind, _ in answers] == ["ok"] * PROCESSES, answers
    assert relay.count("create_session") == 2, "the first session, then exactly one renewal"
    (fresh,) = {sid for _, sid in answers}
    assert fresh != first
    assert current_session(**options) == fresh
    assert len(server.store.list_profiles(fresh)) == PROCESSES
    assert relay.count("put") == 2 * PROCESSES


def test_a_pinned_session_is_used_but_never_stored(server, tmp_path, profile_path):
    config_dir = tmp_path / "config"
    options = {"endpoint": server.url, "config_dir": str(config_dir), "max_retries": 0, "outbox": False}
    client = SongbirdClient(server.url)
    pinned = client.create_session("someone-else").id
    assert publish(profile_path, session_id=pinned, **options).session_id == pinned
    assert server.url not in stored(config_dir).get("sessions", {})
    assert current_session(**options) is None

    # an expired pinned session is renewed like a stored one, and the new one is stored
    client.claim_guest_session(pinned, "org-test", api_key=ORG_KEY)
    fresh = publish(profile_path, session_id=pinned, **options).session_id
    assert fresh != pinned
    assert stored(config_dir)["sessions"][server.url]["sessionId"] == fresh

    other = client.create_session("someone-else").id
    assert publish(profile_path, session_id=other, **options).session_id == other
    assert stored(config_dir)["sessions"][server.url]["sessionId"] == fresh, "the stored one is left alone"
    assert [p.session_id for p in server.store.list_profiles(other)] == [other]


def expire(session_id, status, message):
    """A hook: answer ``status`` with ``message`` to every request on ``session_id``'s paths."""

    def hook(method, path):
        if f"/{session_id}/" in path or path.endswith(f"/{session_id}"):
            body = json.dumps({"message": message.format(session_id=session_id)}).encode()
            return status, {"Content-Type": "application/json"}, body
        return None

    return hook


@pytest.mark.parametrize(
    "status, message",
    [
        (410, "Gone."),
        (400, "Session {session_id} has expired."),
        (404, "Unknown session."),
    ],
)
def test_an_answer_that_the_session_expired_renews_it_once(server, tmp_path, profile_path, status, message):
    config_dir = tmp_path / "config"
    relay = Relay(server.url)
    with relay.running():
        options = {"endpoint": relay.url, "config_dir": str(config_dir), "max_retries": 0, "outbox": False}
        old = new_session(**options)
        relay.hook = expire(old, status, message)
        result = publish(profile_path, **options)
        assert result.ok and result.session_id != old
        assert relay.count("create_session") == 2 and relay.count("upload_slot") == 2
        assert current_session(**options) == result.session_id
        assert len(server.store.list_profiles(result.session_id)) == 1


def test_a_400_that_does_not_name_the_session_is_an_error_not_a_renewal(server, tmp_path, profile_path):
    config_dir = tmp_path / "config"
    relay = Relay(server.url)
    with relay.running():
        options = {"endpoint": relay.url, "config_dir": str(config_dir), "max_retries": 0, "outbox": False}
        old = new_session(**options)
        relay.hook = expire(old, 400, "datasetTimestamp must be a number of milliseconds.")
        with pytest.raises(PublishError, match="400"):
            publish(profile_path, **options)
        assert relay.count("create_session") == 1 and relay.count("upload_slot") == 1
        assert current_session(**options) == old


@pytest.mark.parametrize(
    "api_key, status",
    [
        (ORG_KEY, 403),  # a valid key, of another organization than the one named
        ("wrong.key:org-other", 401),
    ],
)
def test_a_refused_claim_leaves_the_stored_session_in_place(server, tmp_path, api_key, status):
    options = {"endpoint": server.url, "config_dir": str(tmp_path / "config")}
    session_id = new_session(**options)
    with pytest.raises(AuthError) as info:
        claim_session(org_id="org-other", api_key=api_key, **options)
    assert info.value.status == status
    assert current_session(**options) == session_id
    assert stored(tmp_path / "config")["sessions"][server.url]["sessionId"] == session_id
    # the kept session can still be claimed, into the right organization
    assert claim_session(org_id="org-test", api_key=api_key if status == 403 else ORG_KEY, **options) == session_id
    assert current_session(**options) is None


def test_a_renewal_takes_the_session_another_process_stored(server, tmp_path):
    """The cross-process renewal rule, in one process: two stores of one directory stand for two processes."""
    from whylogs_songbird.session import GuestSession, SessionStore

    config_dir = tmp_path / "config"
    relay = Relay(server.url)
    with relay.running():
        stale = new_session(endpoint=relay.url, config_dir=str(config_dir))
        one, two = (GuestSession(SongbirdClient(relay.url), SessionStore(config_dir)) for _ in range(2))
        assert one.session_id() == two.session_id() == stale
        fresh = one.renew(stale)
        assert fresh != stale and current_session(endpoint=relay.url, config_dir=str(config_dir)) == fresh
        assert two.renew(stale) == fresh, "the newer stored session is used, not replaced"
        assert two.session_id() == fresh
        assert relay.count("create_session") == 2


def test_claim_and_forget_keep_the_user_id(server, tmp_path):
    from whylogs_songbird import forget_session

    config_dir = tmp_path / "config"
    options = {"endpoint": server.url, "config_dir": str(config_dir)}
    assert forget_session(**options) is None, "nothing stored: nothing to forget"
    new_session(**options)
    user_id = stored(config_dir)["userId"]
    claimed = claim_session(org_id="org-test", api_key=ORG_KEY, **options)
    assert stored(config_dir)["userId"] == user_id and server.url not in stored(config_dir)["sessions"]
    second = new_session(**options)
    assert second != claimed and forget_session(**options) == second
    assert stored(config_dir)["userId"] == user_id and stored(config_dir)["sessions"] == {}


@pytest.mark.parametrize(
    "given, words",
    [({"api_key": ORG_KEY}, "org_id"), ({"org_id": "org-test"}, "api_key")],
)
def test_a_claim_without_org_or_key_says_what_is_missing(server, tmp_path, given, words):
    from whylogs_songbird import ConfigError

    options = {"endpoint": server.url, "config_dir": str(tmp_path / "config")}
    session_id = new_session(**options)
    with pytest.raises(ConfigError, match=words):
        claim_session(**given, **options)
    assert current_session(**options) == session_id
