"""The sandbox (whylogs_songbird/server/sandbox.py) as logic: the pool, the pipe protocol, the child's work.

- The pool (:class:`Sandbox`) runs with its child class replaced by a fake (the module's seam):
  which child a job gets, when a child is kept, retired or killed, and what each answer or
  failure becomes (digest, refusal, crash, stop).
- The pipe protocol (:class:`_Child`'s reads, writes, greeting and causes of death) runs against
  tiny real processes: a few lines of Python that greet, echo, die or hang, without whylogs.
- What a child does with a profile (:func:`summarise_in_child`) runs in this process on small
  real profiles. test_sandbox.py checks real children over real HTTP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import make_profile_bytes
from sandbox_children import ask

from whylogs_songbird.server import sandbox
from whylogs_songbird.server.digest import digest_columns
from whylogs_songbird.server.sandbox import (
    Sandbox,
    SandboxCrash,
    SandboxLimits,
    SandboxRefused,
    SandboxStopped,
    summarise_in_child,
)
from whylogs_songbird.server.summaries import SummaryError

# hang_bound: a broken worker or loop ends a mutant's run after SONGBIRD_TEST_HANG_SECONDS, not its deadline
pytestmark = [pytest.mark.mutation_fast("whylogs_songbird/server/sandbox.py"), pytest.mark.hang_bound]


def test_the_default_limits():
    limits = SandboxLimits()
    assert (limits.memory_bytes, limits.cpu_seconds, limits.wall_seconds) == (2048 * 1024 * 1024, 120, 300.0)
    assert (limits.jobs_per_child, limits.max_columns) == (50_000, 20_000)
    assert limits.retire_growth() == 512 * 1024 * 1024
    assert SandboxLimits(memory_bytes=400, retire_growth_bytes=7).retire_growth() == 7
    assert SandboxLimits(memory_bytes=1003).retire_growth() == 250  # a whole number of bytes, rounded down
    assert sandbox.STARTUP_SECONDS == 120.0 and sandbox.TEST_FAULT_ENV == "SONGBIRD_SANDBOX_TEST_FAULT"


# -- the pool, with fake children -------------------------------------------------------------------


class Between:
    """A child's death (``error``) after its last answer, before it starts the next job."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class FakeChild:
    """A child as the pool sees it. ``answers``: what its jobs get, in order: a (kind, payload), an
    exception (raised once the child said it started the job), a :class:`Between`, or a callable
    giving one of these. It says it starts each job (an ``S`` frame) before answering it."""

    made: list[FakeChild] = []
    answers: list[Any] = []
    greets = True
    #: What :meth:`grown` says (bytes its address space grew).
    growth = 0

    def __init__(self, limits: SandboxLimits) -> None:
        self.limits = limits
        self.jobs = 0
        self.killed = 0
        self.asked: list[tuple[bytes, bytes]] = []
        self.deadlines: list[float] = []
        self.started = self.answered = 0
        self.ready_within: float | None = None
        FakeChild.made.append(self)

    def wait_ready(self, seconds: float) -> None:
        self.ready_within = seconds
        if not FakeChild.greets:
            raise SandboxCrash("a sandbox process did not start (it did not greet)")

    def send(self, kind: bytes, payloads: list[bytes], checked: object = ()) -> None:
        for payload in payloads:
            self.jobs += 1
            self.asked.append((kind, payload))

    def frame(self, deadline: float) -> tuple[bytes, bytes]:
        self.deadlines.append(deadline)
        answer = FakeChild.answers[0]
        if isinstance(answer, Between):
            FakeChild.answers.pop(0)
            raise answer.error
        if self.started == self.answered < self.jobs:
            self.started += 1
            return b"S", b""
        FakeChild.answers.pop(0)
        self.answered += 1
        if callable(answer):
            answer = answer()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def kill(self) -> None:
        self.killed += 1

    def grown(self) -> int:
        return FakeChild.growth

    def why_dead(self) -> str:
        return "the process summarising it crashed (SIGSEGV)"


@pytest.fixture
def fake_children(monkeypatch: pytest.MonkeyPatch) -> type[FakeChild]:
    FakeChild.made, FakeChild.answers, FakeChild.greets, FakeChild.growth = [], [], True, 0
    monkeypatch.setattr(sandbox, "_Child", FakeChild)
    return FakeChild


def test_a_digest_comes_from_a_child_that_is_then_reused(fake_children):
    fake_children.answers = [(b"O", b"digest-1"), (b"O", b"digest-2")]
    pool = Sandbox(SandboxLimits(wall_seconds=7.5))
    assert repr(pool) == "Sandbox(max_children=2, idle=0, busy=0)"
    assert pool.digest(b"profile-1") == b"digest-1"
    assert pool.digest(b"profile-2") == b"digest-2"
    (child,) = fake_children.made
    assert child.asked == [(b"D", b"profile-1"), (b"D", b"profile-2")]
    assert child.ready_within == 120.0 and child.limits is pool.limits
    assert pool.started == 1 and child.killed == 0
    assert repr(pool) == "Sandbox(max_children=2, idle=1, busy=0)"


def test_a_refusal_keeps_the_child_and_an_out_of_memory_one_retires_it(fake_children):
    fake_children.answers = [
        (b"R", "not a profile ✗".encode() + b"\xff"),
        (b"M", b"it needs more memory"),
        (b"O", b"d"),
    ]
    pool = Sandbox()
    with pytest.raises(SandboxRefused, match="^not a profile ✗\ufffd$"):  # bytes not UTF-8 are replaced
        pool.digest(b"x")
    with pytest.raises(SandboxRefused, match="^it needs more memory$") as memory:
        pool.digest(b"y")
    assert not isinstance(memory.value, SandboxCrash)
    first = fake_children.made[0]
    assert first.killed == 1
    assert pool.digest(b"z") == b"d"
    assert len(fake_children.made) == 2 and pool.started == 2


@pytest.mark.mutation_fast("whylogs_songbird/server/sandbox.py")
def test_profiles_sent_together_are_answered_in_order_until_one_ends_the_child(fake_children):
    fake_children.answers = [(b"O", b"d1"), (b"R", b"junk"), (b"O", b"d3"), (b"O", b"d4")]
    pool = Sandbox(SandboxLimits(wall_seconds=4.0))
    first, refused, third, fourth = pool.digest_many([b"p1", b"p2", b"p3", b"p4"])
    assert (first, third, fourth) == (b"d1", b"d3", b"d4") and str(refused) == "junk"
    assert isinstance(refused, SandboxRefused) and not isinstance(refused, SandboxCrash)
    (child,) = fake_children.made
    assert child.asked == [(b"D", p) for p in (b"p1", b"p2", b"p3", b"p4")] and child.killed == 0
    assert pool.digest_many([]) == [] and len(fake_children.made) == 1
    # out of memory: that one refused, the child retired, the rest not reached
    fake_children.answers = [(b"O", b"d1"), (b"M", b"it needs more memory")]
    outcomes = pool.digest_many([b"p1", b"p2", b"p3"])
    assert outcomes[0] == b"d1" and isinstance(outcomes[1], SandboxRefused) and outcomes[2] is None
    assert child.killed == 1
    # a crash: that one crashed, the rest not reached; a hang: the same, killed
    for error, message in ((EOFError(), "crashed (SIGSEGV)"), (TimeoutError(), "did not answer within 4 s")):
        fake_children.answers = [(b"O", b"d1"), error]
        outcomes = pool.digest_many([b"p1", b"p2", b"p3"])
        assert outcomes[0] == b"d1" and outcomes[2] is None
        assert isinstance(outcomes[1], SandboxCrash) and not isinstance(outcomes[1], SandboxStopped)
        assert message in str(outcomes[1])
    assert all(made.killed >= 1 for made in fake_children.made[1:]) and pool.started == 3


@pytest.mark.parametrize(("error", "message"), [(EOFError(), "crashed (SIGSEGV)"), (TimeoutError(), "within 4 s")])
def test_only_the_profile_a_child_had_started_is_blamed_for_its_death(fake_children, error, message):
    """The child says when it starts each profile: a death after it started one is that profile's;
    a death between two (after an answer, before the next start) is none of theirs."""
    pool = Sandbox(SandboxLimits(wall_seconds=4.0))
    fake_children.answers = [(b"O", b"d1"), (b"O", b"d2"), error]
    first, second, died_on, after = pool.digest_many([b"p1", b"p2", b"p3", b"p4"])
    assert (first, second, after) == (b"d1", b"d2", None)  # the answers before it are kept
    assert type(died_on) is SandboxCrash and message in str(died_on)
    fake_children.answers = [(b"O", b"d1"), Between(error)]
    assert pool.digest_many([b"p1", b"p2", b"p3"]) == [b"d1", None, None]
    assert [made.killed >= 1 for made in fake_children.made] == [True, True]  # neither kept


def test_a_second_start_without_an_answer_is_a_crash(fake_children):
    pool = Sandbox()
    fake_children.answers = [(b"O", b"d1"), (b"S", b"")]
    first, second, third = pool.digest_many([b"p1", b"p2", b"p3"])
    assert first == b"d1" and type(second) is SandboxCrash and third is None
    assert str(second) == "the process summarising it failed ()" and fake_children.made[0].killed == 1


def test_a_child_dead_before_it_starts_a_lone_profile_is_replaced_once(fake_children):
    """An idle child killed from outside costs the next profile nothing: a fresh child takes it."""
    pool = Sandbox()
    fake_children.answers = [Between(EOFError()), (b"O", b"d")]
    assert pool.digest(b"x") == b"d"
    assert len(fake_children.made) == 2 and fake_children.made[0].killed == 1
    fake_children.answers = [Between(EOFError()), Between(TimeoutError())]
    with pytest.raises(SandboxCrash, match="^the process summarising it ended before it started on it$") as crash:
        pool.digest(b"x")
    assert not isinstance(crash.value, SandboxStopped)
    # the idle one reused, then a fresh one; none kept
    assert len(fake_children.made) == 3 and all(made.killed for made in fake_children.made)


def test_profiles_cut_by_close_are_all_stopped(fake_children):
    pool = Sandbox()

    def closed_meanwhile() -> BaseException:
        pool.close()
        return EOFError()

    fake_children.answers = [(b"O", b"d1"), closed_meanwhile]
    first, *rest = pool.digest_many([b"p1", b"p2", b"p3"])
    assert first == b"d1" and [type(outcome) for outcome in rest] == [SandboxStopped, SandboxStopped]
    assert fake_children.made[0].killed >= 1


def test_each_profile_has_the_wall_time_from_its_start(fake_children, monkeypatch):
    clock = iter(range(100, 200))
    monkeypatch.setattr(sandbox, "time", SimpleNamespace(monotonic=lambda: float(next(clock))))
    fake_children.answers = [(b"O", b"d1"), (b"R", b"junk")]
    pool = Sandbox(SandboxLimits(wall_seconds=7.0))
    assert pool.digest_many([b"p1", b"p2"])[0] == b"d1"
    # read at 100 (sent), then at each frame: started 1 (101), answered 1 (102), started 2, answered 2
    assert fake_children.made[0].deadlines == [107.0, 108.0, 109.0, 110.0]


def test_an_unknown_answer_is_a_crash(fake_children):
    fake_children.answers = [(b"X", b"\xff" + b"e" * 300)]
    pool = Sandbox()
    with pytest.raises(SandboxCrash) as crash:
        pool.digest(b"x")
    assert str(crash.value) == "the process summarising it failed (\ufffd" + "e" * 199 + ")"
    assert not isinstance(crash.value, SandboxStopped)
    assert fake_children.made[0].killed == 1  # not kept


def test_a_hung_child_is_killed_and_counted_a_crash(fake_children):
    fake_children.answers = [TimeoutError()]
    pool = Sandbox(SandboxLimits(wall_seconds=2.5))
    with pytest.raises(SandboxCrash) as crash:
        pool.digest(b"x")
    assert str(crash.value) == "the process summarising it did not answer within 2.5 s"
    assert not isinstance(crash.value, SandboxStopped)
    assert fake_children.made[0].killed >= 1 and repr(pool) == "Sandbox(max_children=2, idle=0, busy=0)"


@pytest.mark.parametrize("error", [OSError("broken pipe"), EOFError()])
def test_a_dead_child_says_why(fake_children, error):
    fake_children.answers = [error]
    with pytest.raises(SandboxCrash, match=r"^the process summarising it crashed \(SIGSEGV\)$") as crash:
        Sandbox().digest(b"x")
    assert not isinstance(crash.value, SandboxStopped)


@pytest.mark.parametrize("error", [TimeoutError(), OSError("closed"), EOFError()])
def test_a_job_cut_by_close_is_stopped_not_crashed(fake_children, error):
    pool = Sandbox()

    def closed_meanwhile() -> BaseException:
        pool.close()
        return error

    fake_children.answers = [closed_meanwhile]
    with pytest.raises(SandboxStopped, match="^the server stopped while summarising it$"):
        pool.digest(b"x")
    assert fake_children.made[0].killed >= 1
    assert repr(pool) == "Sandbox(max_children=2, idle=0, busy=0)"


def test_a_child_is_retired_after_its_jobs(fake_children):
    fake_children.answers = [(b"O", b"1"), (b"O", b"2"), (b"O", b"3")]
    pool = Sandbox(SandboxLimits(jobs_per_child=2))
    pool.digest(b"a")
    assert fake_children.made[0].killed == 0
    pool.digest(b"b")  # its second job: retired
    assert fake_children.made[0].killed == 1
    pool.digest(b"c")
    assert len(fake_children.made) == 2


def test_a_child_is_retired_once_it_has_grown(fake_children):
    fake_children.answers = [(b"O", b"1"), (b"O", b"2"), (b"O", b"3")]
    pool = Sandbox(SandboxLimits(memory_bytes=4000))
    fake_children.growth = 1000  # a quarter of its budget: kept
    pool.digest(b"a")
    assert fake_children.made[0].killed == 0
    fake_children.growth = 1001
    pool.digest(b"b")  # it still answers; then it is retired
    assert fake_children.made[0].killed == 1
    pool.digest(b"c")
    assert len(fake_children.made) == 2


def test_the_address_space_of_a_process():
    own = sandbox._address_space_of(os.getpid())
    assert own is not None and abs(own - sandbox._address_space()) < 64 * 1024 * 1024
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert sandbox._address_space_of(gone.pid) is None


def test_a_child_that_does_not_start_frees_its_place(fake_children):
    fake_children.greets = False
    pool = Sandbox(max_children=1)
    with pytest.raises(SandboxCrash, match="did not greet"):
        pool.digest(b"x")
    assert fake_children.made[0].killed == 1 and pool.started == 0
    assert repr(pool) == "Sandbox(max_children=1, idle=0, busy=0)"
    fake_children.greets = True
    fake_children.answers = [(b"O", b"d")]
    assert pool.digest(b"x") == b"d"  # the place was given back


def test_close_kills_idle_and_busy_children_and_the_pool_starts_anew(fake_children):
    fake_children.answers = [(b"O", b"1"), (b"O", b"2")]
    pool = Sandbox()
    pool.digest(b"a")
    idle = fake_children.made[0]
    pool.close()
    assert idle.killed == 1 and repr(pool) == "Sandbox(max_children=2, idle=0, busy=0)"
    pool.digest(b"b")
    assert len(fake_children.made) == 2 and fake_children.made[1].killed == 0


def test_at_most_max_children_at_once(fake_children):
    release = threading.Event()
    inside = threading.Semaphore(0)

    def slow() -> tuple[bytes, bytes]:
        inside.release()
        release.wait(20)
        return b"O", b"d"

    fake_children.answers = [slow, slow, (b"O", b"third")]
    pool = Sandbox(max_children=2)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(pool.digest(b"x"))) for _ in range(3)]
    for thread in threads:
        thread.start()
    assert inside.acquire(timeout=20) and inside.acquire(timeout=20)
    assert len(fake_children.made) == 2  # the third job waits for a child
    assert repr(pool) == "Sandbox(max_children=2, idle=0, busy=2)"
    release.set()
    for thread in threads:
        thread.join(20)
    assert sorted(results) == [b"d", b"d", b"third"] and len(fake_children.made) == 2


def test_max_children_is_at_least_one(fake_children):
    assert Sandbox(max_children=0).max_children == 1
    assert Sandbox(max_children=-3).max_children == 1
    assert Sandbox(max_children=3).max_children == 3
    assert Sandbox().limits == SandboxLimits()


# -- the pipe protocol, with tiny real processes ---------------------------------------------------


GREET_AND_ECHO = """
import os, struct, sys
frame = struct.Struct("<cQ")
out = os.fdopen(1, "wb")
out.write(frame.pack(b"H", 0)); out.flush()
while True:
    head = sys.stdin.buffer.read(frame.size)
    if len(head) < frame.size:
        break
    kind, size = frame.unpack(head)
    data = sys.stdin.buffer.read(size)
    out.write(frame.pack(b"O", len(data)) + data[::-1]); out.flush()
"""


def tiny_child(monkeypatch: pytest.MonkeyPatch, script: str) -> sandbox._Child:
    """A _Child whose process runs ``script`` instead of the sandbox's child."""

    def popen(args: list[str], **kwargs: Any) -> subprocess.Popen:
        assert args[:2] == [sys.executable, "-c"]
        assert args[2].endswith("child_main(1, 2, 3)")
        assert kwargs["env"]["OMP_NUM_THREADS"] == "1" and kwargs["close_fds"] is True
        return subprocess.Popen([sys.executable, "-S", "-c", script], **kwargs)  # noqa: S603

    fake = SimpleNamespace(Popen=popen, PIPE=subprocess.PIPE, TimeoutExpired=subprocess.TimeoutExpired)
    monkeypatch.setattr(sandbox, "subprocess", fake)
    return sandbox._Child(SandboxLimits(memory_bytes=1, cpu_seconds=2, max_columns=3))


def test_a_child_greets_then_answers_jobs(monkeypatch):
    child = tiny_child(monkeypatch, GREET_AND_ECHO)
    try:
        child.wait_ready(20)
        assert ask(child, b"D", b"abc", 20) == (b"O", b"cba")
        assert ask(child, b"D", b"x" * 300_000, 20) == (b"O", b"x" * 300_000)  # more than a pipe holds at once
        assert ask(child, b"D", b"", 20) == (b"O", b"")
        assert child.jobs == 3
    finally:
        child.kill()
    assert child.process.returncode is not None


KEEPS_WHAT_IT_IS_TOLD = """
import os, struct, sys
frame = struct.Struct("<cQ")
out = os.fdopen(1, "wb")
out.write(frame.pack(b"H", 0)); out.flush()
kept = []
while True:
    head = sys.stdin.buffer.read(frame.size)
    if len(head) < frame.size:
        break
    kind, size = frame.unpack(head)
    kept.append(bytearray(int(sys.stdin.buffer.read(size))))
    out.write(frame.pack(b"O", 0)); out.flush()
"""


def test_a_child_says_how_much_it_grew_since_it_greeted(monkeypatch):
    child = tiny_child(monkeypatch, KEEPS_WHAT_IT_IS_TOLD)
    try:
        child.wait_ready(20)
        assert child.grown() < 16 * 1024 * 1024
        assert ask(child, b"D", str(64 * 1024 * 1024).encode(), 20) == (b"O", b"")
        assert child.grown() >= 64 * 1024 * 1024
    finally:
        child.kill()
    assert child.grown() == 0  # gone: nothing to say


DIES_ON_ITS_THIRD_JOB = """
import os, struct, sys
frame = struct.Struct("<cQ")
out = os.fdopen(1, "wb")
out.write(frame.pack(b"H", 0)); out.flush()
for job in range(3):
    kind, size = frame.unpack(sys.stdin.buffer.read(frame.size))
    out.write(frame.pack(b"S", 0)); out.flush()
    if job == 2:
        os._exit(7)
    data = sys.stdin.buffer.read(size)
    out.write(frame.pack(b"O", len(data)) + data[::-1]); out.flush()
"""


def test_answers_given_before_a_child_died_are_read_though_its_jobs_were_still_being_written(monkeypatch):
    child = tiny_child(monkeypatch, DIES_ON_ITS_THIRD_JOB)
    try:
        child.wait_ready(20)
        child.send(b"D", [b"abc", b"de", b"x" * 1_000_000, b"never read"])  # far more than a pipe holds
        deadline = time.monotonic() + 20
        frames = [child.frame(deadline) for _ in range(5)]
        assert frames == [(b"S", b""), (b"O", b"cba"), (b"S", b""), (b"O", b"ed"), (b"S", b"")]
        with pytest.raises(EOFError):
            child.frame(deadline)
        assert child.why_dead() == "the process summarising it exited (code 7)" and child.jobs == 4
    finally:
        child.kill()


GREET = (
    "import sys, struct; sys.stdout.buffer.write(struct.pack('<cQ', b'{kind}', {size})); sys.stdout.flush(); "
    "sys.stdin.read()"
)


def test_a_child_that_greets_wrongly(monkeypatch):
    child = tiny_child(
        monkeypatch,
        GREET.format(kind="X", size=0),
    )
    with pytest.raises(SandboxCrash, match=r"^a sandbox process did not start \(it did not greet\)$"):
        child.wait_ready(20)
    assert child.process.poll() is not None  # killed
    sized = tiny_child(
        monkeypatch,
        GREET.format(kind="H", size=1),
    )
    with pytest.raises(SandboxCrash, match="did not greet"):
        sized.wait_ready(20)


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("import sys; sys.exit(3)", "the process summarising it exited (code 3)"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "the process summarising it crashed (SIGSEGV)"),
        (
            "import os, signal; os.kill(os.getpid(), signal.SIGXCPU)",
            "the process summarising it ran out of CPU time (SIGXCPU)",
        ),
    ],
)
def test_a_child_that_dies_before_greeting_says_why(monkeypatch, script, reason):
    child = tiny_child(monkeypatch, script)
    with pytest.raises(SandboxCrash) as crash:
        child.wait_ready(20)
    assert str(crash.value) == f"a sandbox process did not start ({reason})"


def test_a_silent_child_times_out_and_is_killed(monkeypatch):
    child = tiny_child(monkeypatch, "import time; time.sleep(60)")
    with pytest.raises(
        SandboxCrash, match=r"^a sandbox process did not start \(the process summarising it crashed \(SIGKILL\)\)$"
    ):
        child.wait_ready(0.2)


def test_a_hung_job_times_out(monkeypatch):
    child = tiny_child(
        monkeypatch,
        GREET_AND_ECHO.replace("data[::-1]); out.flush()", "data[::-1]); out.flush(); import time; time.sleep(60)"),
    )
    try:
        child.wait_ready(20)
        ask(child, b"D", b"a", 20)
        with pytest.raises(TimeoutError):
            ask(child, b"D", b"b", 0.2)
        with pytest.raises(TimeoutError):
            ask(child, b"D", b"c", 0)  # no time at all: not even the write
    finally:
        child.kill()


def test_an_oversized_answer_is_not_read(monkeypatch):
    script = (
        "import sys, struct; f = struct.Struct('<cQ'); sys.stdout.buffer.write(f.pack(b'H', 0)); sys.stdout.flush();"
        " sys.stdin.buffer.read(f.size + 1); sys.stdout.buffer.write(f.pack(b'O', 2048 * 1024 * 1024 + 1));"
        " sys.stdout.flush(); sys.stdin.read()"
    )
    child = tiny_child(monkeypatch, script)
    try:
        child.wait_ready(20)
        with pytest.raises(EOFError):
            ask(child, b"D", b"a", 20)
    finally:
        child.kill()


def test_a_child_that_exits_mid_answer(monkeypatch):
    script = (
        "import sys, struct; f = struct.Struct('<cQ'); sys.stdout.buffer.write(f.pack(b'H', 0)); sys.stdout.flush();"
        " sys.stdin.buffer.read(f.size + 1); sys.stdout.buffer.write(f.pack(b'O', 10) + b'abc'); sys.stdout.flush()"
    )
    child = tiny_child(monkeypatch, script)
    child.wait_ready(20)
    with pytest.raises(EOFError):
        ask(child, b"D", b"a", 20)
    assert child.why_dead() == "the process summarising it exited (code 0)"


def test_why_dead_names_unknown_signals(monkeypatch):
    child = tiny_child(monkeypatch, "import time; time.sleep(60)")
    child.kill()
    child.process.returncode = -200  # no such signal
    assert child.why_dead() == "the process summarising it crashed (signal 200)"
    child.process.returncode = -int(signal.SIGKILL)
    assert child.why_dead() == "the process summarising it crashed (SIGKILL)"


# -- what a child does -------------------------------------------------------------------------


def test_a_child_digests_a_real_profile():
    digest = summarise_in_child(make_profile_bytes(20), max_columns=10)
    assert sorted(digest_columns(digest)) == ["n", "s", "x"]


def test_a_child_refuses_what_the_check_refuses():
    with pytest.raises(SummaryError, match=r"^it is not a well-formed whylogs profile \(.+\)$"):
        summarise_in_child(b"not a profile", max_columns=10)
    with pytest.raises(SummaryError, match="not a well-formed whylogs profile"):
        summarise_in_child(make_profile_bytes(5), max_columns=2)  # three columns


def test_the_fast_digest_and_whylogs_agree():
    data = make_profile_bytes(30, seed=4)
    assert sandbox.summarise_bytes(data) == sandbox.summarise_in_child(data, max_columns=10)


def test_the_test_fault_needs_its_marker(monkeypatch):
    monkeypatch.delenv(sandbox.TEST_FAULT_ENV, raising=False)
    sandbox._apply_test_fault(b"anything")
    monkeypatch.setenv(sandbox.TEST_FAULT_ENV, "crash:" + b"MARK".hex())
    kills: list[tuple[int, int]] = []
    monkeypatch.setattr(sandbox.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    sandbox._apply_test_fault(b"no marker here")
    assert kills == []
    sandbox._apply_test_fault(b"a MARK inside")
    assert kills == [(sandbox.os.getpid(), signal.SIGSEGV)]
    monkeypatch.setenv(sandbox.TEST_FAULT_ENV, "hang:" + b"MARK".hex())
    sleeps: list[float] = []
    monkeypatch.setattr(sandbox.time, "sleep", sleeps.append)
    sandbox._apply_test_fault(b"a MARK inside")
    assert sleeps == [3600] and len(kills) == 1
    monkeypatch.setenv(sandbox.TEST_FAULT_ENV, "crash:")
    sandbox._apply_test_fault(b"")
    assert kills == [(sandbox.os.getpid(), signal.SIGSEGV)]


def test_read_exactly():
    import io

    assert sandbox._read_exactly(io.BytesIO(b"abcdef"), 4) == b"abcd"
    assert sandbox._read_exactly(io.BytesIO(b"ab"), 4) is None
    assert sandbox._read_exactly(io.BytesIO(b""), 0) == b""

    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.left = b"xyz"

        def read(self, size: int = -1) -> bytes:
            part, self.left = self.left[:1], self.left[1:]
            return part

    assert sandbox._read_exactly(Trickle(), 3) == b"xyz"


def test_the_address_space_is_read_from_proc():
    assert sandbox._address_space() > 1024 * 1024
