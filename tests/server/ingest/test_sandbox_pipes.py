"""The sandbox's two ends of the pipe protocol (whylogs_songbird/server/sandbox.py), in this process.

- The child's loop (:func:`sandbox.child_main`) runs here with its stdin a byte stream, its
  stdout and stderr temporary files (fds 1 and 2, put back afterwards) and the ``resource``
  calls recorded instead of made (a limit set here would bind the test process).
- The server's end (:class:`sandbox._Child`) talks over real pipes to the test, which plays the
  child; ``subprocess.Popen`` is replaced by a stand-in holding the other ends of the pipes, and
  where a deadline matters the module's clock is a fake one.

test_sandbox_logic.py checks the pool against fake children (what each frame or failure makes of
a profile, the wall time from each start) and the protocol against tiny real processes (greetings,
causes of death); those are not repeated here. test_sandbox.py runs real children over real HTTP.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import make_profile_bytes
from sandbox_children import ask

from whylogs_songbird.server import sandbox
from whylogs_songbird.server.sandbox import _FRAME, SandboxCrash, SandboxLimits, summarise_in_child
from whylogs_songbird.server.summaries import SummaryError

# hang_bound: a broken worker or loop ends a mutant's run after SONGBIRD_TEST_HANG_SECONDS, not its deadline
pytestmark = [pytest.mark.mutation_fast("whylogs_songbird/server/sandbox.py"), pytest.mark.hang_bound]

MiB = 1024 * 1024


def frame(kind: bytes, payload: bytes) -> bytes:
    return _FRAME.pack(kind, len(payload)) + payload


def frames(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (kind, payload) frames of ``data``, which must hold whole frames only."""
    found = []
    while data:
        kind, size = _FRAME.unpack(data[: _FRAME.size])
        payload = data[_FRAME.size : _FRAME.size + size]
        assert len(payload) == size, "a frame cut short"
        found.append((kind, payload))
        data = data[_FRAME.size + size :]
    return found


# -- the child's loop ------------------------------------------------------------------------------


class Limits:
    """What child_main asks of ``resource``: the limits it sets are recorded; the CPU time used
    and the hard CPU limit are the test's."""

    def __init__(self, cpu_hard: int, usage: list[tuple[float, float]]) -> None:
        self.cpu_hard = cpu_hard
        self.usage = list(usage)
        self.set: list[tuple[int, tuple[int, int]]] = []

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        self.set.append((which, limits))

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_CPU
        return 7, self.cpu_hard

    def getrusage(self, who: int) -> SimpleNamespace:
        assert who == resource.RUSAGE_SELF
        utime, stime = self.usage.pop(0)
        return SimpleNamespace(ru_utime=utime, ru_stime=stime)

    def cpu(self) -> list[tuple[int, int]]:
        return [limits for which, limits in self.set if which == resource.RLIMIT_CPU]


@contextlib.contextmanager
def fd_to(fd: int, file: Any) -> Iterator[None]:
    """File descriptor ``fd`` points at ``file`` meanwhile."""
    saved = os.dup(fd)
    try:
        os.dup2(file.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


class ChildRun:
    """What one run of child_main wrote: ``answers`` (its stdout) and ``stderr``, and the limits it set."""

    def __init__(self, answers: bytes, stderr: bytes, limits: Limits) -> None:
        self.answers = answers
        self.stderr = stderr
        self.limits = limits


@pytest.fixture
def run_child(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    """run_child(requests, memory=, cpu=, columns=, cpu_hard=, usage=) runs child_main on those
    request bytes until they end."""
    monkeypatch.setattr(sandbox, "_address_space", lambda: 1000 * MiB)
    opened: list[Any] = []
    real_fdopen = os.fdopen

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        opened.append(real_fdopen(fd, *args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(sandbox.os, "fdopen", fdopen)

    def run(
        requests: bytes,
        *,
        memory: int = 64 * MiB,
        cpu: int = 30,
        columns: int = 10,
        cpu_hard: int = resource.RLIM_INFINITY,
        usage: list[tuple[float, float]] | None = None,
    ) -> ChildRun:
        limits = Limits(cpu_hard, usage if usage is not None else [(0.0, 0.0)] * 20)
        for name in ("setrlimit", "getrlimit", "getrusage"):
            monkeypatch.setattr(resource, name, getattr(limits, name))
        monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(requests)))
        with tempfile.TemporaryFile(dir=tmp_path) as out, tempfile.TemporaryFile(dir=tmp_path) as err:
            try:
                with fd_to(1, out), fd_to(2, err):
                    sandbox.child_main(memory, cpu, columns)
            finally:
                for file in opened:
                    file.close()
                opened.clear()
            out.seek(0)
            err.seek(0)
            return ChildRun(out.read(), err.read(), limits)

    return run


def test_the_child_greets_answers_each_job_in_order_and_ends_with_its_input(run_child):
    good = make_profile_bytes(6)
    done = run_child(frame(b"D", good) + frame(b"D", b"junk") + frame(b"D", good), columns=10)
    greeting, start, digest, start2, refusal, start3, again = frames(done.answers)
    assert greeting == (b"H", b"") and start == start2 == start3 == (b"S", b"")
    assert digest == (b"O", summarise_in_child(good, max_columns=10)) and again == digest
    assert refusal[0] == b"R"
    assert refusal[1].decode().startswith("it is not a well-formed whylogs profile (")


def test_the_child_checks_with_its_column_limit(run_child):
    done = run_child(frame(b"D", make_profile_bytes(4)), columns=2)  # three columns
    _, _, (kind, text) = frames(done.answers)
    assert kind == b"R" and b"not a well-formed whylogs profile" in text


def test_the_child_limits_core_files_memory_and_the_cpu_time_of_each_job(run_child):
    jobs = frame(b"D", b"a") + frame(b"D", b"b")
    done = run_child(jobs, memory=64 * MiB, cpu=7, usage=[(3.25, 1.5), (10.75, 0.5)])
    core, memory = done.limits.set[:2]
    assert core == (resource.RLIMIT_CORE, (0, 0))
    assert memory == (resource.RLIMIT_AS, (1064 * MiB, 1064 * MiB))  # what it holds plus its allowance
    infinity = resource.RLIM_INFINITY
    # each job: the whole seconds used so far, plus its allowance, plus one
    assert done.limits.cpu() == [(4 + 7 + 1, infinity), (11 + 7 + 1, infinity)]
    assert len(done.limits.set) == 4 and not done.limits.usage


@pytest.mark.parametrize(("hard", "soft"), [(10, 10), (12, 12), (13, 12), (500, 12)])
def test_the_cpu_limit_stays_within_the_hard_limit(run_child, hard, soft):
    done = run_child(frame(b"D", b"a"), cpu=7, cpu_hard=hard, usage=[(3.25, 1.5)])
    assert done.limits.cpu() == [(soft, hard)]


def test_without_jobs_the_child_greets_and_ends(run_child):
    done = run_child(b"")
    assert frames(done.answers) == [(b"H", b"")]
    assert [which for which, _ in done.limits.set] == [resource.RLIMIT_CORE, resource.RLIMIT_AS]


@pytest.mark.parametrize(
    ("requests", "said"),
    [
        (_FRAME.pack(b"D", 1)[:-1], [(b"H", b"")]),  # a header cut short: not started
        (_FRAME.pack(b"D", 10) + b"abc", [(b"H", b""), (b"S", b"")]),  # a payload cut short: started
    ],
)
def test_a_job_cut_short_ends_the_child_without_an_answer(run_child, monkeypatch, requests, said):
    asked: list[bytes] = []
    monkeypatch.setattr(sandbox, "summarise_in_child", lambda data, columns: asked.append(data) or b"d")
    done = run_child(requests)
    assert frames(done.answers) == said and asked == []


def test_what_each_failure_answers(run_child, monkeypatch):
    """A refusal says why; running out of memory says so with its own kind (the server retires the
    child); any other error is a refusal naming only the error's type."""
    failures: dict[bytes, BaseException] = {
        b"refused": SummaryError("it has no columns ✗"),
        b"memory": MemoryError(),
        b"odd": KeyError("a secret detail"),
    }
    asked: list[tuple[bytes, int]] = []

    def summarise(data: bytes, max_columns: int) -> bytes:
        asked.append((data, max_columns))
        if data in failures:
            raise failures[data]
        return b"digest of " + data

    monkeypatch.setattr(sandbox, "summarise_in_child", summarise)
    done = run_child(b"".join(frame(b"D", job) for job in (b"refused", b"memory", b"odd", b"fine")), columns=33)
    said = frames(done.answers)
    assert said[1::2] == [(b"S", b"")] * 4
    assert said[2::2] == [
        (b"R", "it has no columns ✗".encode()),
        (b"M", b"it needs more memory than this server allows for summarising one profile"),
        (b"R", b"it could not be summarised (KeyError)"),
        (b"O", b"digest of fine"),
    ]
    assert asked == [(b"refused", 33), (b"memory", 33), (b"odd", 33), (b"fine", 33)]


def test_what_the_child_prints_goes_to_stderr_not_into_the_answers(run_child, monkeypatch):
    def noisy(data: bytes, max_columns: int) -> bytes:
        os.write(1, b"a stray line\n")
        return b"d"

    monkeypatch.setattr(sandbox, "summarise_in_child", noisy)
    done = run_child(frame(b"D", b"x"))
    assert frames(done.answers) == [(b"H", b""), (b"S", b""), (b"O", b"d")]
    assert done.stderr == b"a stray line\n"


def checked_frame(vouched: bytes, payload: bytes) -> bytes:
    """A ``C`` job: the sha256 the server's process checked, then the profile."""
    return _FRAME.pack(b"C", len(vouched) + len(payload)) + vouched + payload


def test_a_checked_job_skips_the_check_only_for_bytes_of_the_digest_it_carries(run_child, monkeypatch):
    """The child hands a ``C`` job's profile on as checked only when the sha256 of the bytes it read
    is the one the job carries; a wrong digest, a ``C`` frame too short to hold one and a ``D`` job
    are checked in the child. A digest with an empty profile is still a digest."""
    asked: list[tuple[bytes, int, bool]] = []

    def summarise(data: bytes, max_columns: int, *, checked: bool = False) -> bytes:
        asked.append((data, max_columns, checked))
        return b"digest of " + data

    monkeypatch.setattr(sandbox, "summarise_in_child", summarise)
    # sha256(b"abc") and sha256(b""), written out
    abc = bytes.fromhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    empty = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    jobs = [
        checked_frame(abc, b"abc"),
        checked_frame(empty, b"abc"),  # the digest of other bytes
        checked_frame(b"", b"short"),  # less than a digest: all of it is the profile
        checked_frame(empty, b""),
        frame(b"D", b"abc"),
        checked_frame(abc, b"abc"),
    ]
    done = run_child(b"".join(jobs), columns=9)
    assert asked == [
        (b"abc", 9, True),
        (b"abc", 9, False),
        (b"short", 9, False),
        (b"", 9, True),
        (b"abc", 9, False),
        (b"abc", 9, True),
    ]
    said = frames(done.answers)
    assert said[0] == (b"H", b"") and said[1::2] == [(b"S", b"")] * 6
    assert said[2::2] == [(b"O", b"digest of " + data) for data, _, _ in asked]


def test_a_checked_job_of_a_real_profile_is_digested_without_the_column_limit(run_child):
    """Three columns, a child allowing two: refused unless the job vouches for these very bytes."""
    three = make_profile_bytes(4)
    vouched = hashlib.sha256(three).digest()
    other = hashlib.sha256(three + b" ").digest()
    done = run_child(checked_frame(vouched, three) + checked_frame(other, three) + frame(b"D", three), columns=2)
    _, _, digest, _, refused, _, refused_again = frames(done.answers)
    assert digest == (b"O", summarise_in_child(three, max_columns=2, checked=True))
    assert refused[0] == refused_again[0] == b"R"
    assert refused[1].startswith(b"it is not a well-formed whylogs profile (") and refused_again == refused


def test_the_test_fault_looks_at_each_job_s_bytes(run_child, monkeypatch):
    sleeps: list[float] = []
    kills: list[tuple[int, int]] = []
    monkeypatch.setattr(sandbox.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    monkeypatch.setenv(sandbox.TEST_FAULT_ENV, "hang:" + b"MARK".hex())
    monkeypatch.setattr(sandbox, "time", SimpleNamespace(sleep=sleeps.append, monotonic=time.monotonic))
    monkeypatch.setattr(sandbox, "summarise_in_child", lambda data, columns: b"d")
    done = run_child(frame(b"D", b"plain") + frame(b"D", b"with MARK in it"))
    assert sleeps == [3600] and kills == []
    assert [kind for kind, _ in frames(done.answers)] == [b"H", b"S", b"O", b"S", b"O"]


class RecordedWrites(io.RawIOBase):
    """A raw file that records each write (what one system call would send)."""

    def __init__(self, fd: int, writes: list[bytes]) -> None:
        self.fd = fd
        self.writes = writes

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.writes.append(bytes(data))
        return os.write(self.fd, data)

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


@pytest.mark.parametrize("real_file", [True, False])
def test_an_answer_goes_out_with_the_next_job_s_start_when_that_job_has_come(
    run_child, monkeypatch, tmp_path, real_file
):
    """Where the child can tell that the next job has come (a real file), a job's answer and the
    next job's S frame go out in one write; where it cannot (a stream without a file descriptor),
    each answer goes out on its own, before the child reads on."""
    writes: list[bytes] = []
    monkeypatch.setattr(sandbox.os, "fdopen", lambda fd, mode: io.BufferedWriter(RecordedWrites(fd, writes)))
    monkeypatch.setattr(sandbox, "summarise_in_child", lambda data, columns: b"digest of " + data)
    jobs = frame(b"D", b"a") + frame(b"D", b"b")
    if real_file:
        (tmp_path / "jobs").write_bytes(jobs)
        stdin = open(tmp_path / "jobs", "rb")  # noqa: SIM115 - closed below
        monkeypatch.setattr(sandbox, "sys", SimpleNamespace(stdin=SimpleNamespace(buffer=stdin), modules=sys.modules))
    try:
        done = run_child(b"" if real_file else jobs)
    finally:
        if real_file:
            stdin.close()
    started, first, second = frame(b"S", b""), frame(b"O", b"digest of a"), frame(b"O", b"digest of b")
    if real_file:
        assert writes == [frame(b"H", b""), started, first + started, second]
    else:
        assert writes == [frame(b"H", b""), started, first, started, second]
    assert done.answers == b"".join(writes)


def test_the_child_sends_its_last_answer_before_it_waits_for_more_work(monkeypatch):
    """A job whose successor has not come yet is answered at once (the server waits for that
    answer before it sends more work, or ends)."""
    monkeypatch.setattr(sandbox, "_address_space", lambda: 1000 * MiB)
    limits = Limits(resource.RLIM_INFINITY, [(0.0, 0.0)] * 2)
    for name in ("setrlimit", "getrlimit", "getrusage"):
        monkeypatch.setattr(resource, name, getattr(limits, name))
    monkeypatch.setattr(sandbox, "summarise_in_child", lambda data, columns: b"digest of " + data)
    jobs_out, jobs_in = os.pipe()
    answers_out, answers_in = os.pipe()
    opened: list[Any] = []
    real_fdopen = os.fdopen
    monkeypatch.setattr(sandbox.os, "fdopen", lambda *args: opened.append(real_fdopen(*args)) or opened[-1])
    requests = os.fdopen(jobs_out, "rb")
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=requests))
    os.write(jobs_in, frame(b"D", b"a"))
    child = threading.Thread(target=sandbox.child_main, args=(64 * MiB, 30, 10), daemon=True)
    expected = frame(b"H", b"") + frame(b"S", b"") + frame(b"O", b"digest of a")
    said = b""
    try:
        with fd_to(1, SimpleNamespace(fileno=lambda: answers_in)), fd_to(2, SimpleNamespace(fileno=lambda: answers_in)):
            child.start()
            while len(said) < len(expected) and select_readable(answers_out, 10.0):
                said += os.read(answers_out, 4096)
            os.close(jobs_in)  # no more work: the child ends
            child.join(10)
    finally:
        for file in opened:
            file.close()
        requests.close()
        os.close(answers_in)
        os.close(answers_out)
    assert said == expected and not child.is_alive()


def select_readable(fd: int, seconds: float) -> bool:
    import select

    return bool(select.select([fd], [], [], seconds)[0])


def test_whether_the_next_job_has_come_is_told_without_waiting(monkeypatch):
    import select

    timeouts: list[float] = []

    def polled(read: list[Any], write: list[Any], error: list[Any], timeout: float) -> Any:
        timeouts.append(timeout)  # what the child would wait for, were nothing there
        return select.select(read, write, error, timeout)

    monkeypatch.setattr(sandbox, "select", SimpleNamespace(select=polled))
    jobs_out, jobs_in = os.pipe()
    with os.fdopen(jobs_out, "rb") as requests:
        assert not sandbox._job_waiting(requests)  # nothing yet: it does not wait
        os.write(jobs_in, _FRAME.pack(b"D", 3))
        assert sandbox._job_waiting(requests)
        assert requests.read(_FRAME.size) == _FRAME.pack(b"D", 3)  # nothing taken from the job
        os.write(jobs_in, _FRAME.pack(b"D", 3)[:4])
        assert not sandbox._job_waiting(requests)  # part of a header
        os.close(jobs_in)
        assert not sandbox._job_waiting(requests)  # the end of the input
    assert timeouts == [0, 0, 0, 0]
    assert not sandbox._job_waiting(io.BytesIO(_FRAME.pack(b"D", 3)))  # no file descriptor: it cannot tell


def test_the_address_space_is_the_whole_virtual_size():
    with open("/proc/self/status") as status:
        (line,) = [line for line in status if line.startswith("VmSize:")]
    size = int(line.split()[1]) * 1024
    assert abs(sandbox._address_space() - size) < size // 10  # not the resident part


# -- the server's end ------------------------------------------------------------------------------


class PipeProcess:
    """What :class:`sandbox._Child` gets instead of a process: pipes whose other ends the test holds
    (``child_in``: what the server sent; ``child_out``: where the test writes answers)."""

    made: list[PipeProcess] = []

    def __init__(self, args: list[str], **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs
        to_read, to_child = os.pipe()
        from_child, to_write = os.pipe()
        self.stdin = open(to_child, "wb", buffering=0)  # noqa: SIM115 - closed by _Child.kill
        self.stdout = open(from_child, "rb", buffering=0)  # noqa: SIM115
        self.child_in, self.child_out = to_read, to_write
        self.returncode: int | None = None
        self.pid = 4321
        self.kills = 0
        self.waits: list[float | None] = []
        self.wait_error: BaseException | None = None
        PipeProcess.made.append(self)

    def poll(self) -> int | None:
        return self.returncode

    def kill(self) -> None:
        self.kills += 1
        self.returncode = -int(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int | None:
        self.waits.append(timeout)
        if self.wait_error is not None:
            raise self.wait_error
        return self.returncode

    def answer(self, data: bytes) -> None:
        os.write(self.child_out, data)

    def end_output(self) -> None:
        """The child's output ends (as when it exits)."""
        os.close(self.child_out)
        self.child_out = -1

    def sent(self) -> bytes:
        """What the server has written so far (all of it: the pipe is drained)."""
        os.set_blocking(self.child_in, False)
        parts = []
        with contextlib.suppress(BlockingIOError):
            while part := os.read(self.child_in, MiB):
                parts.append(part)
        return b"".join(parts)

    def close(self) -> None:
        for fd in (self.child_in, self.child_out):
            if fd >= 0:
                os.close(fd)
        for stream in (self.stdin, self.stdout):
            stream.close()


class Clock:
    """The sandbox's clock: ``now`` is what ``time.monotonic()`` says, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.after_first: float | None = None
        self.calls = 0

    def monotonic(self) -> float:
        self.calls += 1
        if self.after_first is not None and self.calls > 1:
            return self.now + self.after_first
        return self.now


@pytest.fixture
def piped(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """piped(limits) -> (a _Child on pipes, its PipeProcess)."""
    PipeProcess.made = []
    fake = SimpleNamespace(Popen=PipeProcess, PIPE=subprocess.PIPE, TimeoutExpired=subprocess.TimeoutExpired)
    monkeypatch.setattr(sandbox, "subprocess", fake)

    def make(limits: SandboxLimits | None = None) -> tuple[sandbox._Child, PipeProcess]:
        child = sandbox._Child(limits or SandboxLimits())
        return child, PipeProcess.made[-1]

    yield make
    for process in PipeProcess.made:
        process.close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(sandbox, "time", SimpleNamespace(monotonic=fake.monotonic, sleep=time.sleep))
    return fake


def test_a_child_process_runs_child_main_with_its_limits(piped):
    child, process = piped(SandboxLimits(memory_bytes=123, cpu_seconds=45, max_columns=67))
    code = "from whylogs_songbird.server.sandbox import child_main; child_main(123, 45, 67)"
    assert process.args == [sys.executable, "-c", code]
    env = process.kwargs.pop("env")
    assert process.kwargs == {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "close_fds": True}
    assert {key: env[key] for key in sandbox._CHILD_ENV} == {
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "WHYLOGS_NO_ANALYTICS": "True",
        "_WHYLABS_SKIP_CONFIG_READ": "1",
    }
    assert env["PATH"] == os.environ["PATH"]  # and the rest of the server's environment
    assert (child.to_child, child.from_child) == (process.stdin.fileno(), process.stdout.fileno())
    assert not os.get_blocking(child.to_child) and not os.get_blocking(child.from_child)
    assert child.jobs == 0 and child._inbox == b""


def test_growth_counts_from_the_greeting_and_is_never_negative(piped, monkeypatch):
    child, process = piped()
    sizes = {process.pid: 1000}
    monkeypatch.setattr(sandbox, "_address_space_of", lambda pid: sizes.get(pid))
    assert child.grown() == 0  # not greeted yet: nothing to count from
    process.answer(_FRAME.pack(b"H", 0))
    child.wait_ready(10.0)
    for now, grown in ((999, 0), (1000, 0), (1001, 1), (4000, 3000)):
        sizes[process.pid] = now
        assert child.grown() == grown
    del sizes[process.pid]  # the OS does not say
    assert child.grown() == 0


def soon(seconds: float = 5.0) -> float:
    """A deadline ``seconds`` from now on the real clock."""
    return time.monotonic() + seconds


def test_jobs_are_queued_then_go_out_as_frames_while_the_answers_are_read(piped):
    child, process = piped()
    child.send(b"D", [b"p1", b"", b"p3" * 10])
    child.send(b"D", [])  # nothing to queue
    assert child.jobs == 3 and process.sent() == b"" and len(child._outbox) == 1  # nothing written yet
    process.answer(frame(b"S", b"") + frame(b"O", b"first") + frame(b"S", b"") + frame(b"R", "second ✗".encode()))
    process.answer(frame(b"S", b"") + frame(b"O", b""))
    assert child.frame(soon()) == (b"S", b"")
    assert process.sent() == frame(b"D", b"p1") + frame(b"D", b"") + frame(b"D", b"p3" * 10)
    assert not child._outbox
    assert [child.frame(soon()) for _ in range(5)] == [
        (b"O", b"first"),
        (b"S", b""),
        (b"R", "second ✗".encode()),
        (b"S", b""),
        (b"O", b""),
    ]
    assert child._inbox == b""


def test_a_checked_payload_goes_out_as_a_c_job_carrying_its_digest(piped):
    """Each payload with a sha256 is a ``C`` job: the digest's 32 bytes, then the payload (the
    length counts both); a payload with None, or past the end of ``checked``, is a job of the kind asked."""
    child, process = piped()
    child.send(b"D", [b"p1", b"p2", b"p3", b"p4"], [None, "ab" * 32, None])
    assert child.jobs == 4
    process.answer(frame(b"S", b""))
    assert child.frame(soon()) == (b"S", b"")
    checked_job = b"C" + (34).to_bytes(8, "little") + b"\xab" * 32 + b"p2"
    assert process.sent() == frame(b"D", b"p1") + checked_job + frame(b"D", b"p3") + frame(b"D", b"p4")


def test_ask_passes_over_the_started_frame(piped):
    child, process = piped()
    process.answer(frame(b"S", b"") + frame(b"O", b"late"))
    assert ask(child, b"X", b"one more", 5.0) == (b"O", b"late")
    assert process.sent() == frame(b"X", b"one more") and child.jobs == 1
    process.answer(frame(b"R", b"no start") + frame(b"S", b"x"))  # only an empty S is a start
    assert ask(child, b"D", b"a", 5.0) == (b"R", b"no start")
    assert ask(child, b"D", b"b", 5.0) == (b"S", b"x") and child.jobs == 3


def test_answers_that_come_while_a_large_job_is_written_are_read(piped):
    """The server reads while it writes: a child whose answers fill its pipe never waits on a
    server that waits to write; the rest of the job is written while later answers are waited for."""
    child, process = piped()
    big = bytes(range(256)) * 2000  # more than a pipe holds
    process.answer(frame(b"S", b"") + frame(b"O", b"a" * 1000))
    received = bytearray()

    def play_child() -> None:
        while len(received) < len(frame(b"D", big)) and (part := os.read(process.child_in, MiB)):
            received.extend(part)
        process.answer(frame(b"S", b"") + frame(b"O", b"b"))

    child.send(b"D", [big])
    assert child.frame(soon()) == (b"S", b"")
    assert child.frame(soon()) == (b"O", b"a" * 1000)
    assert 0 < len(child._outbox[0]) < len(frame(b"D", big))  # partly written
    reader = threading.Thread(target=play_child, daemon=True)
    reader.start()
    assert child.frame(soon(20)) == (b"S", b"") and child.frame(soon(20)) == (b"O", b"b")
    reader.join(20)
    assert bytes(received) == frame(b"D", big) and not child._outbox


def test_a_frame_partly_read_is_completed_from_the_pipe(piped):
    child, process = piped()
    whole = frame(b"O", b"0123456789")
    process.answer(whole[:5])
    child.send(b"D", [b"x"])
    with pytest.raises(TimeoutError):
        child.frame(soon(0.05))
    assert child._inbox == whole[:5] and process.sent() == frame(b"D", b"x")
    process.answer(whole[5:12])
    with pytest.raises(TimeoutError):
        child.frame(soon(0.05))
    assert child._inbox == whole[:12]
    process.answer(whole[12:] + frame(b"O", b"next"))
    assert child.frame(soon()) == (b"O", b"0123456789") and child._inbox == frame(b"O", b"next")


def test_a_child_that_stopped_reading_drops_its_jobs_and_its_answers_are_still_read(piped):
    child, process = piped()
    process.answer(frame(b"S", b"") + frame(b"O", b"before"))
    os.close(process.child_in)  # writing now breaks the pipe
    process.child_in = -1
    child.send(b"D", [b"x", b"y"])
    assert child.frame(soon()) == (b"S", b"") and not child._outbox
    assert child.frame(soon()) == (b"O", b"before")
    with pytest.raises(TimeoutError):
        child.frame(soon(0.05))


def test_a_child_whose_output_ends_while_a_job_is_written(piped):
    child, process = piped()
    process.end_output()
    child.send(b"D", [b"x"])
    with pytest.raises(EOFError):
        child.frame(soon())


@pytest.mark.parametrize("cut", [0, 4, _FRAME.size, _FRAME.size + 2])
def test_a_child_whose_output_ends_mid_frame(piped, cut):
    child, process = piped()
    process.answer(frame(b"O", b"abcd")[:cut])
    process.end_output()
    with pytest.raises(EOFError):
        child.frame(soon())


def test_an_answer_larger_than_any_digest_is_not_read(piped):
    child, process = piped()
    process.answer(_FRAME.pack(b"O", 2048 * MiB + 1))  # the pipe stays open
    with pytest.raises(EOFError):
        child.frame(soon())
    # the largest answer allowed is waited for (here: in vain)
    largest, process = piped()
    process.answer(_FRAME.pack(b"O", 2048 * MiB))
    with pytest.raises(TimeoutError):
        largest.frame(soon(0.05))


def test_a_silent_child_runs_out_of_time(piped):
    child, _ = piped()
    with pytest.raises(TimeoutError):
        child.frame(soon(0.05))


def test_a_job_written_to_a_full_pipe_runs_out_of_time(piped):
    child, process = piped()
    child.send(b"D", [b"z" * (4 * MiB)])  # nobody reads it
    with pytest.raises(TimeoutError):
        child.frame(soon(0.05))
    assert 0 < len(process.sent()) < 4 * MiB


@pytest.mark.parametrize(("left", "read"), [(0.001, True), (0.0, False), (-1.0, False)])
def test_a_frame_is_read_only_before_its_deadline(piped, clock, left, read):
    """Even a frame already in the pipe is not taken at or after the deadline."""
    child, process = piped()
    process.answer(frame(b"O", b"done"))
    child.send(b"D", [b"a"])
    if read:
        assert child.frame(clock.now + left) == (b"O", b"done")
        assert process.sent() == frame(b"D", b"a")
    else:
        with pytest.raises(TimeoutError):
            child.frame(clock.now + left)
        assert process.sent() == b"" and child._inbox == b""


def test_a_greeting_within_the_start_time(piped, clock):
    child, process = piped()
    process.answer(_FRAME.pack(b"H", 0))
    clock.after_first = 9.9
    child.wait_ready(10.0)
    assert process.kills == 0
    late, slow = piped()
    slow.answer(_FRAME.pack(b"H", 0))
    clock.calls, clock.after_first = 0, 10.0
    with pytest.raises(
        SandboxCrash, match=r"^a sandbox process did not start \(the process summarising it crashed \(SIGKILL\)\)$"
    ):
        late.wait_ready(10.0)
    assert slow.kills == 1


def test_a_child_still_running_is_killed_to_say_why(piped):
    child, process = piped()
    assert child.why_dead() == "the process summarising it crashed (SIGKILL)"
    assert process.kills == 1


def test_kill_kills_a_running_child_waits_for_it_and_closes_its_pipes(piped):
    child, process = piped()
    child.kill()
    assert process.kills == 1 and process.waits == [10]
    assert process.stdin.closed and process.stdout.closed
    child.kill()  # an ended child is not killed again
    assert process.kills == 1 and process.waits == [10, 10]


def test_kill_of_a_child_that_does_not_end_says_so(piped, caplog):
    child, process = piped()
    process.wait_error = subprocess.TimeoutExpired("child", 10)
    with caplog.at_level(logging.WARNING, logger="whylogs_songbird.server.sandbox"):
        child.kill()
    assert [r.getMessage() for r in caplog.records] == ["sandbox: child 4321 did not end after SIGKILL"]
    assert process.stdin.closed and process.stdout.closed


def test_kill_skips_missing_pipes_and_pipes_that_fail_to_close(piped):
    child, process = piped()

    class FailingClose:
        closed = False

        def close(self) -> None:
            self.closed = True
            raise OSError("already gone")

    real = process.stdin, process.stdout
    failing = FailingClose()
    process.stdin, process.stdout = failing, None
    child.kill()
    assert failing.closed and process.kills == 1
    process.stdin, process.stdout = real


# -- the pool's bookkeeping of children being started -------------------------------------------------


class SlowStart:
    """A child that takes until ``go`` is set to greet, then starts and digests anything; ``on_answer``
    runs before each answer."""

    made: list[SlowStart] = []
    go = threading.Event()
    on_answer: Any = None

    def __init__(self, limits: SandboxLimits) -> None:
        self.jobs = 0
        self.killed = 0
        self.frames = 0
        SlowStart.made.append(self)

    def wait_ready(self, seconds: float) -> None:
        assert SlowStart.go.wait(20)

    def send(self, kind: bytes, payloads: list[bytes], checked: object = ()) -> None:
        self.jobs += len(payloads)

    def grown(self) -> int:
        return 0  # stays small: kept for the next profile

    def frame(self, deadline: float) -> tuple[bytes, bytes]:
        self.frames += 1
        if self.frames % 2:
            return b"S", b""
        if SlowStart.on_answer is not None:
            SlowStart.on_answer()
        return b"O", b"d"

    def kill(self) -> None:
        self.killed += 1

    def why_dead(self) -> str:
        return "the process summarising it crashed (SIGSEGV)"


@pytest.fixture
def slow_start(monkeypatch: pytest.MonkeyPatch) -> type[SlowStart]:
    SlowStart.made, SlowStart.go, SlowStart.on_answer = [], threading.Event(), None
    monkeypatch.setattr(sandbox, "_Child", SlowStart)
    yield SlowStart
    SlowStart.go.set()


def test_children_being_started_each_hold_a_place(slow_start):
    pool = sandbox.Sandbox(max_children=2)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(pool.digest(b"x")), daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while len(slow_start.made) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.02)  # a third start, were it let through, would show by now
    assert len(slow_start.made) == 2 and repr(pool) == "Sandbox(max_children=2, idle=0, busy=2)"
    slow_start.go.set()
    for thread in threads:
        thread.join(20)
    assert results == [b"d", b"d", b"d"] and len(slow_start.made) == 2 and pool.started == 2


def test_every_close_stops_the_jobs_it_cuts(slow_start):
    slow_start.go.set()
    pool = sandbox.Sandbox()
    pool.close()
    pool.close()  # closed twice before the job starts

    def cut() -> None:
        pool.close()
        raise EOFError

    slow_start.on_answer = cut
    with pytest.raises(sandbox.SandboxStopped, match="^the server stopped while summarising it$"):
        pool.digest(b"x")


@pytest.mark.parametrize(("wall", "answered"), [(2.5, True), (2.0, False)])
def test_ask_waits_for_the_answer_after_the_start_within_one_deadline(piped, monkeypatch, wall, answered):
    """The answer comes in a read of its own after the started frame, by the deadline set when the job was sent."""
    child, process = piped()
    process.answer(frame(b"S", b""))
    calls: list[float] = []

    def monotonic() -> float:
        calls.append(1000.0 + len(calls) + 1)  # 1001 when sent, 1002 when reading S, 1003 for the answer
        if len(calls) == 3:
            process.answer(frame(b"O", b"d"))
        return calls[-1]

    monkeypatch.setattr(sandbox, "time", SimpleNamespace(monotonic=monotonic))
    if answered:
        assert ask(child, b"D", b"a", wall) == (b"O", b"d")
    else:
        with pytest.raises(TimeoutError):
            ask(child, b"D", b"a", wall)
    assert len(calls) == 3


def test_a_write_the_pipe_turns_away_is_tried_again_whole(piped, monkeypatch):
    child, process = piped()
    real_write = os.write
    refused: list[int] = []

    def write(fd: int, data: Any) -> int:
        if fd == child.to_child and not refused:
            refused.append(fd)
            raise BlockingIOError
        return real_write(fd, data)

    monkeypatch.setattr(sandbox.os, "write", write)
    child.send(b"D", [b"abc"])
    with pytest.raises(TimeoutError):
        child.frame(soon(0.05))
    assert refused and process.sent() == frame(b"D", b"abc") and not child._outbox


# -- the pool over these pipes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("said", "outcome"),
    [
        (frame(b"X", b"odd"), None),  # a frame that is neither a start nor an answer, before any start
        (frame(b"S", b"") + frame(b"X", b"odd"), "the process summarising it failed (odd)"),
    ],
)
def test_a_stray_frame_is_charged_only_to_a_profile_the_child_started(piped, monkeypatch, said, outcome):
    made: list[PipeProcess] = []

    def popen(args: list[str], **kwargs: Any) -> PipeProcess:
        made.append(PipeProcess(args, **kwargs))
        made[-1].answer(frame(b"H", b"") + frame(b"S", b"") + frame(b"O", b"d1") + said)
        return made[-1]

    monkeypatch.setattr(sandbox.subprocess, "Popen", popen)
    first, second, third = sandbox.Sandbox().digest_many([b"p1", b"p2", b"p3"])
    assert first == b"d1" and third is None
    assert (second if outcome is None else str(second)) == outcome
    assert outcome is None or type(second) is SandboxCrash
    assert made[0].kills == 1


def test_the_pool_sends_each_profile_with_its_checked_digest(piped, monkeypatch):
    """digest() and digest_many() hand each profile's sha256 on to the child (as a ``C`` job)."""
    made: list[PipeProcess] = []
    received = bytearray()

    def play_child(process: PipeProcess) -> None:
        """Answer each whole job with a start and a digest until the server closes the pipe."""
        taken = 0
        while part := os.read(process.child_in, MiB):
            received.extend(part)
            while len(received) - taken >= _FRAME.size:
                _, size = _FRAME.unpack_from(received, taken)
                if len(received) - taken < _FRAME.size + size:
                    break
                taken += _FRAME.size + size
                process.answer(frame(b"S", b"") + frame(b"O", b"d"))

    players: list[threading.Thread] = []

    def popen(args: list[str], **kwargs: Any) -> PipeProcess:
        made.append(PipeProcess(args, **kwargs))
        made[-1].answer(frame(b"H", b""))
        players.append(threading.Thread(target=play_child, args=(made[-1],), daemon=True))
        players[-1].start()
        return made[-1]

    monkeypatch.setattr(sandbox.subprocess, "Popen", popen)
    pool = sandbox.Sandbox(max_children=1)
    try:
        assert pool.digest(b"one", "cd" * 32) == b"d"
        assert pool.digest_many([b"two", b"three"], [None, "ef" * 32]) == [b"d", b"d"]
    finally:
        pool.close()  # the player's input ends
    players[0].join(10)
    assert len(made) == 1 and made[0].kills == 1  # by close(), not before
    assert bytes(received) == (
        b"C" + (35).to_bytes(8, "little") + b"\xcd" * 32 + b"one"
        + frame(b"D", b"two")
        + b"C" + (37).to_bytes(8, "little") + b"\xef" * 32 + b"three"
    )  # fmt: skip
