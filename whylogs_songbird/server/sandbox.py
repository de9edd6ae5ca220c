"""The sandbox: uploaded profiles are deserialized and summarised in child processes, never in
the server's own.

The sketch library is native code that trusts what it reads; a profile it cannot handle may
crash, hang or exhaust the process reading it. So the server hands the bytes of a profile to a
long-lived child process (``python -c`` of :func:`child_main`, talking over two pipes) which
checks them (``profile_check.py``: structure and every sketch header), digests them
(``digest.py``, with whylogs' own deserializer where the fast path does not vouch for them),
checks the sketches of the digest again, rebuilds it and runs on each sketch what the pages
will run (:func:`exercise_digest`), and answers the digest. A child runs with limits:

- address space (``RLIMIT_AS``): what it holds after its imports plus
  :attr:`SandboxLimits.memory_bytes`; beyond it allocations fail (the profile is then invalid);
- CPU (``RLIMIT_CPU``, reset before each profile to the time used plus
  :attr:`SandboxLimits.cpu_seconds`): beyond it the kernel kills the child;
- wall time: the server kills a child that has not answered within :attr:`SandboxLimits.wall_seconds`;
- no core files (``RLIMIT_CORE`` 0).

A child that dies or is killed loses the try of the one profile it had started on
(:class:`SandboxCrash`; the child says when it starts on each), and the next profile gets a fresh
child. Each :class:`Sandbox` keeps up to ``max_children`` children, started on first use and
reused; each server process has its own. A child is retired after an out-of-memory error, once
its address space has grown by more than :attr:`SandboxLimits.retire_growth_bytes` since it
greeted (what a leak or a fragmented heap costs the next profile's memory budget), and in any
case after :attr:`SandboxLimits.jobs_per_child` profiles. Starting a child costs about a second
of CPU (its imports), so a child that stays small is kept for many profiles. The callers count tries in the store
(``MetadataStore.claim_ingest``), so a profile that kills its child every time is
marked invalid after a few tries instead of being retried forever.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("whylogs_songbird.server.sandbox")

MiB = 1024 * 1024
#: One frame: a kind byte and a payload length. The child greets with ``H``; each job it is sent
#: (``D`` and the profile, or ``C``: see :data:`_CHECKED_JOB`) it answers with ``S`` (started: it
#: read the job's header) and then ``O`` (the digest), ``R`` (refused, why) or ``M`` (out of
#: memory), so the server always knows which profile a child was reading when it died.
_FRAME = struct.Struct("<cQ")
#: A job whose payload is the sha256 digest (32 bytes) of bytes that passed the structural check in
#: the server's process (``profile_check.CheckedProfiles``), then the profile: the child skips that
#: check only when the profile it received has that very digest, and checks it otherwise.
_CHECKED_JOB = b"C"
_SHA256_BYTES = 32
#: Bytes read from a pipe at a time (what a pipe holds).
_CHUNK = 64 * 1024
#: How long a new child may take to import whylogs and greet (not counted in any job's time).
STARTUP_SECONDS = 120.0
#: Answers larger than this are not read (a digest is far smaller than the profile it summarises).
_MAX_ANSWER_BYTES = 2048 * MiB

#: Environment of the children: one thread per numeric library (each thread reserves address space).
_CHILD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "WHYLOGS_NO_ANALYTICS": "True",
    "_WHYLABS_SKIP_CONFIG_READ": "1",
}
#: Test-only: a child whose job's bytes contain this environment variable's value (hex) kills
#: itself with SIGSEGV (``crash``) or stops answering (``hang``), as a sketch the checks miss would.
TEST_FAULT_ENV = "SONGBIRD_SANDBOX_TEST_FAULT"


class SandboxError(Exception):
    """Base of the sandbox's errors."""


class SandboxCrash(SandboxError):
    """The child summarising a profile died, was killed or hung: no verdict on the profile."""


class SandboxStopped(SandboxCrash):
    """The sandbox was closed while a profile was being summarised (the server is stopping)."""


class SandboxRefused(SandboxError):
    """The child read the profile and refused it: it is not a readable whylogs profile."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of each child process (see the module docstring)."""

    memory_bytes: int = 2048 * MiB
    cpu_seconds: int = 120
    wall_seconds: float = 300.0
    jobs_per_child: int = 50_000
    #: The column limit of the profile check run in the child.
    max_columns: int = 20_000
    #: A child whose address space grew by more than this since it greeted is retired (None: a
    #: quarter of :attr:`memory_bytes`), so every profile gets most of its memory budget.
    retire_growth_bytes: int | None = None

    def retire_growth(self) -> int:
        return self.retire_growth_bytes if self.retire_growth_bytes is not None else self.memory_bytes // 4


class _Child:
    """One child process and its pipes (non-blocking on the server's side)."""

    def __init__(self, limits: SandboxLimits) -> None:
        env = {**os.environ, **_CHILD_ENV}
        code = (
            "from whylogs_songbird.server.sandbox import child_main; "
            f"child_main({limits.memory_bytes}, {limits.cpu_seconds}, {limits.max_columns})"
        )
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.to_child = self.process.stdin.fileno()
        self.from_child = self.process.stdout.fileno()
        os.set_blocking(self.to_child, False)
        os.set_blocking(self.from_child, False)
        self.jobs = 0
        #: The child's address space when it greeted (see :meth:`grown`).
        self._greeted_size: int | None = None
        #: Jobs not written yet (see :meth:`send`) and frames not taken yet (see :meth:`frame`).
        self._outbox: collections.deque[memoryview] = collections.deque()
        self._inbox = bytearray()

    def wait_ready(self, seconds: float) -> None:
        """Wait for the child's hello (sent once its imports are done and its limits set), so a
        job's time limit never includes the child's start. Raises SandboxCrash."""
        try:
            kind, size = self._header(time.monotonic() + seconds)
            del self._inbox[: _FRAME.size]
        except (OSError, EOFError, TimeoutError):
            reason = self.why_dead()
            raise SandboxCrash(f"a sandbox process did not start ({reason})") from None
        if kind != b"H" or size:
            self.kill()
            raise SandboxCrash("a sandbox process did not start (it did not greet)")
        self._greeted_size = _address_space_of(self.process.pid)

    def grown(self) -> int:
        """How many bytes the child's address space grew since it greeted (0 where the OS does not say)."""
        now = _address_space_of(self.process.pid)
        if now is None or self._greeted_size is None:
            return 0
        return max(0, now - self._greeted_size)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a killed process always ends
            logger.warning("sandbox: child %d did not end after SIGKILL", self.process.pid)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def why_dead(self) -> str:
        """What ended the child, in words (it has ended or is killed now)."""
        if self.process.poll() is None:
            self.kill()
        code = self.process.returncode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            if -code == signal.SIGXCPU:
                return f"the process summarising it ran out of CPU time ({name})"
            return f"the process summarising it crashed ({name})"
        return f"the process summarising it exited (code {code})"

    def _pump(self, deadline: float) -> None:
        """Wait (until ``deadline``) for the child to answer or to take more of the queued jobs;
        move what can be moved. Raises TimeoutError, EOFError (the child's output ended) or OSError.
        A child gone while jobs are still queued drops them: its answers are still read."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        readable, writable, _ = select.select([self.from_child], [self.to_child] if self._outbox else [], [], left)
        if writable:
            try:
                written = os.write(self.to_child, self._outbox[0])  # what the pipe takes
            except BlockingIOError:
                written = 0
            except BrokenPipeError:  # it died: what it answered before is still in the pipe
                self._outbox.clear()
            else:
                if written == len(self._outbox[0]):
                    self._outbox.popleft()
                else:
                    self._outbox[0] = self._outbox[0][written:]
        if readable:
            part = os.read(self.from_child, _CHUNK)
            if not part:
                raise EOFError
            self._inbox += part

    def _header(self, deadline: float) -> tuple[bytes, int]:
        """The next frame's kind and payload length (the frame stays in the inbox)."""
        while len(self._inbox) < _FRAME.size:
            self._pump(deadline)
        kind, size = _FRAME.unpack_from(self._inbox)
        return kind, size

    def send(self, kind: bytes, payloads: Sequence[bytes], checked: Sequence[str | None] = ()) -> None:
        """Queue jobs; they are written while :meth:`frame` waits for the child's frames (so a child
        whose answers fill its pipe never waits on a server that waits to write). ``checked``: for
        each payload, the sha256 (hex) of the bytes the server's process checked, sent as a
        :data:`_CHECKED_JOB`, or None."""
        self.jobs += len(payloads)
        parts: list[bytes] = []
        for index, payload in enumerate(payloads):
            sha256 = checked[index] if index < len(checked) else None
            if sha256 is None:
                parts += (_FRAME.pack(kind, len(payload)), payload)
            else:
                parts += (_FRAME.pack(_CHECKED_JOB, _SHA256_BYTES + len(payload)), bytes.fromhex(sha256), payload)
        data = b"".join(parts)
        if data:
            self._outbox.append(memoryview(data))

    def frame(self, deadline: float) -> tuple[bytes, bytes]:
        """The child's next frame (kind, payload) by ``deadline``: ``S`` when it starts a job (it has
        read the job's header), then the job's answer. Raises OSError/EOFError/TimeoutError."""
        kind, size = self._header(deadline)
        if size > _MAX_ANSWER_BYTES:
            raise EOFError
        while len(self._inbox) < _FRAME.size + size:
            self._pump(deadline)
        payload = bytes(self._inbox[_FRAME.size : _FRAME.size + size])
        del self._inbox[: _FRAME.size + size]
        return kind, payload


class Sandbox:
    """A small pool of child processes that summarise profiles (see the module docstring).
    Thread-safe; each job has a child to itself."""

    def __init__(self, limits: SandboxLimits | None = None, *, max_children: int = 2) -> None:
        self.limits = limits or SandboxLimits()
        self.max_children = max(1, max_children)
        self._idle: list[_Child] = []
        self._busy: set[object] = set()  # children, and placeholders of children being started
        self._cond = threading.Condition()
        self._generation = 0
        #: Children started so far (for tests and logs).
        self.started = 0

    def __repr__(self) -> str:
        return f"Sandbox(max_children={self.max_children}, idle={len(self._idle)}, busy={len(self._busy)})"

    def _borrow(self) -> tuple[_Child, int]:
        with self._cond:
            while not self._idle and len(self._busy) >= self.max_children:
                self._cond.wait()
            generation = self._generation
            if self._idle:
                child = self._idle.pop()
                self._busy.add(child)
                return child, generation
            placeholder = object()
            self._busy.add(placeholder)
        try:
            child = _Child(self.limits)
            try:
                child.wait_ready(STARTUP_SECONDS)
            except BaseException:
                child.kill()
                raise
        except BaseException:
            with self._cond:
                self._busy.discard(placeholder)
                self._cond.notify()
            raise
        with self._cond:
            self._busy.discard(placeholder)
            self._busy.add(child)
            self.started += 1
        return child, generation

    def _give_back(self, child: _Child, generation: int, *, keep: bool) -> None:
        keep = keep and child.jobs < self.limits.jobs_per_child and child.grown() <= self.limits.retire_growth()
        with self._cond:
            self._busy.discard(child)
            keep = keep and generation == self._generation
            if keep:
                self._idle.append(child)
            self._cond.notify()
        if not keep:
            child.kill()

    def digest(self, data: bytes, checked: str | None = None) -> bytes:
        """The digest of serialized profile bytes, made in a child process. ``checked``: the sha256
        (hex) of bytes the structural check passed in this process (``profile_check.CheckedProfiles``):
        the child does not check them again when ``data`` are those bytes.

        Raises :class:`SandboxRefused` (with the reason) when the profile is not readable,
        :class:`SandboxCrash` when the child died, ran out of CPU or hung, and
        :class:`SandboxStopped` when the sandbox was closed meanwhile. A child that died before it
        started on the profile (an idle child killed from outside) is replaced once, free."""
        for _ in range(2):
            (outcome,) = self.digest_many([data], [checked])
            if isinstance(outcome, bytes):
                return outcome
            if outcome is not None:
                raise outcome
        raise SandboxCrash("the process summarising it ended before it started on it")

    def digest_many(
        self, profiles: Sequence[bytes], checked: Sequence[str | None] = ()
    ) -> list[bytes | SandboxError | None]:
        """:meth:`digest` of several profiles (each with its ``checked``, if any) in one round trip to
        one child: all are sent at once and the child answers them in order, each within the same
        limits as alone (its CPU limit and
        :attr:`SandboxLimits.wall_seconds`, from when the child starts on it, apply to each
        profile). For a burst of small profiles this saves most of what a trip costs the child and
        the server.

        The answer for each profile is its digest, or the :class:`SandboxError` that :meth:`digest`
        would raise for it, or None when the child never finished it without being to blame: it
        ended (a crash, a hang, running out of memory) on a profile before it, or before starting
        on it. The child says when it starts on each profile, so only the profile it was on when it
        died gets a :class:`SandboxCrash`; the answers it gave before are kept. Try the Nones again
        (alone, to learn which profile is to blame should it happen again). When the sandbox is
        closed meanwhile, each profile not answered gets :class:`SandboxStopped`."""
        outcomes: list[bytes | SandboxError | None] = [None] * len(profiles)
        if not profiles:
            return outcomes
        child, generation = self._borrow()
        wall = self.limits.wall_seconds
        keep = False
        answered = started = 0  # answers read; jobs the child said it started
        try:
            child.send(b"D", profiles, checked)
            deadline = time.monotonic() + wall
            while answered < len(profiles):
                kind, payload = child.frame(deadline)
                deadline = time.monotonic() + wall
                if kind == b"S" and started == answered:
                    started += 1
                    continue
                if kind == b"O":
                    outcomes[answered] = payload
                elif kind in (b"R", b"M"):  # M: out of memory; the child may be in a poor state, a fresh one follows
                    outcomes[answered] = SandboxRefused(payload.decode("utf-8", "replace"))
                elif started > answered:
                    text = payload[:800].decode("utf-8", "replace")[:200]
                    outcomes[answered] = SandboxCrash(f"the process summarising it failed ({text})")
                answered += 1
                if kind not in (b"O", b"R"):
                    return outcomes
            keep = True
            return outcomes
        except TimeoutError:
            child.kill()
            reason = f"the process summarising it did not answer within {wall:g} s"
        except (OSError, EOFError):
            reason = child.why_dead()
        finally:
            self._give_back(child, generation, keep=keep)
        if generation != self._generation:
            for index in range(answered, len(profiles)):
                outcomes[index] = SandboxStopped("the server stopped while summarising it")
        elif started > answered:  # it died on this one
            outcomes[answered] = SandboxCrash(reason)
        return outcomes

    def close(self) -> None:
        """Kill every child (busy ones too: their jobs raise :class:`SandboxStopped`); the sandbox
        starts new children if it is used again."""
        with self._cond:
            self._generation += 1
            children = list(self._idle) + [c for c in self._busy if isinstance(c, _Child)]
            self._idle = []
            self._cond.notify_all()
        for child in children:
            child.kill()


# -- the child ------------------------------------------------------------------------------------


def _read_exactly(stream: object, size: int) -> bytes | None:
    parts: list[bytes] = []
    while size:
        part = stream.read(size)  # type: ignore[attr-defined]
        if not part:
            return None
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _statm_size(path: str) -> int:
    """The total size (the first field) of a ``/proc/.../statm`` file, in bytes. Read with plain
    ``os`` calls: the server reads a child's after every trip, and a text file object costs it
    about three times as much CPU as the read itself."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return int(os.read(fd, 256).split()[0]) * os.sysconf("SC_PAGE_SIZE")
    finally:
        os.close(fd)


def _job_waiting(requests: Any) -> bool:
    """Whether the next job's header has come already, so that reading it will not wait (False
    also where that cannot be told without waiting: only a saved write is then lost). The child
    then sends a job's answer together with the next job's ``S`` frame, in one write."""
    try:
        if not select.select([requests], [], [], 0)[0]:
            return False  # what the reader holds may still be a whole header: then one write more
    except (OSError, ValueError):  # not a file descriptor (in tests)
        return False
    return len(requests.peek(_FRAME.size)) >= _FRAME.size  # readable: no wait; it may hold less than asked


def _address_space() -> int:
    return _statm_size("/proc/self/statm")


def _address_space_of(pid: int) -> int | None:
    """The address space of process ``pid`` in bytes (what ``RLIMIT_AS`` bounds), or None where
    ``/proc`` does not tell (another OS, or the process is gone)."""
    try:
        return _statm_size(f"/proc/{pid}/statm")
    except (OSError, ValueError, IndexError):
        return None


def _apply_test_fault(data: bytes) -> None:
    spec = os.environ.get(TEST_FAULT_ENV, "")
    kind, _, marker = spec.partition(":")
    if marker and bytes.fromhex(marker) in data:
        if kind == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif kind == "hang":
            time.sleep(3600)


def summarise_bytes(data: bytes) -> bytes:
    """The full check and digest of serialized profile bytes; `SummaryError` if whylogs cannot read them.
    Runs in a sandbox child (``sandbox.py``), never in the server's own process.

    Profiles of whylogs' default metrics are digested from their messages (`digest_from_bytes`);
    anything that path does not vouch for is deserialized by whylogs, whose verdict counts.
    """
    from whylogs_songbird.server.digest import digest_from_bytes, digest_view
    from whylogs_songbird.server.summaries import read_view

    try:
        return digest_from_bytes(data)
    except Exception:
        logger.debug("sandbox: the fast digest did not take these bytes; asking whylogs", exc_info=True)
    return digest_view(read_view(data))


def _summarised_columns(data: bytes) -> dict[str, dict[str, Any]]:
    """:func:`summarise_bytes` before it is packed (the same digest once packed, ``digest.pack_digest``):
    the digested columns, each sketch as the bytes the digest will hold."""
    from whylogs_songbird.server.digest import raw_columns_from_bytes, raw_view_columns
    from whylogs_songbird.server.summaries import read_view

    try:
        return raw_columns_from_bytes(data)
    except Exception:
        logger.debug("sandbox: the fast digest did not take these bytes; asking whylogs", exc_info=True)
    return raw_view_columns(read_view(data))


def summarise_in_child(data: bytes, max_columns: int, *, checked: bool = False) -> bytes:
    """What a child does with one profile: the checks, the digest, the digest's sketches checked.
    ``checked``: these very bytes passed the structural check in the server's process (the child
    made sure of their digest, see :data:`_CHECKED_JOB`), which is not run again. Raises
    ``SummaryError`` when the profile is not readable."""
    from whylogs_songbird.server.profile_check import ProfileCheckError, check_profile_bytes
    from whylogs_songbird.server.summaries import SummaryError

    if not checked:
        try:
            check_profile_bytes(data, max_columns=max_columns)
        except ProfileCheckError as exc:
            raise SummaryError(f"it is not a well-formed whylogs profile ({exc})") from None
    from whylogs_songbird.server.digest import pack_digest

    columns = _summarised_columns(data)
    _exercise_columns(columns)  # the very sketch bytes the digest holds, each checked first
    return pack_digest(columns)


def exercise_digest(digest: bytes) -> None:
    """Check every sketch of the digest (``sketch_check.py``; ``DigestError`` when one fails, as
    ``digest.check_digest``), then rebuild each and do to it what pages, the timeline and drift will do
    in the server's process through whylogs' aggregators and the summaries (merges, quantiles, CDF
    and PMF, estimates, frequent items): a sketch the library accepts but cannot work with fails
    here, in the child, not there."""
    from whylogs_songbird.server.digest import digest_columns

    _exercise_columns(digest_columns(digest))


def _exercise_columns(columns: dict[str, dict[str, Any]]) -> None:
    """:func:`exercise_digest` of a digest's columns (each sketch as its bytes or base64 text)."""
    import whylogs_sketching as ds

    from whylogs_songbird.server.digest import sketches_of

    error_types = (ds.frequent_items_error_type.NO_FALSE_NEGATIVES, ds.frequent_items_error_type.NO_FALSE_POSITIVES)
    checked = [sketches_of(data) for data in columns.values()]  # all, before any is read
    for sketches in checked:
        if "kll" in sketches:
            kll = ds.kll_doubles_sketch.deserialize(sketches["kll"])
            merged = ds.kll_doubles_sketch(kll)
            merged.merge(kll)
            if not merged.is_empty():
                low, high = merged.get_min_value(), merged.get_max_value()
                points = [low, high] if low < high else [low]
                merged.get_quantiles([0.0, 0.25, 0.5, 0.75, 1.0])
                merged.get_cdf(points)
                merged.get_pmf(points)
        if "hll" in sketches:
            hll = ds.hll_sketch.deserialize(sketches["hll"])
            union = ds.hll_union(hll.lg_config_k)
            union.update(hll)
            union.update(hll)
            result = union.get_result()
            result.get_estimate()
            result.get_lower_bound(1)
            result.get_upper_bound(1)
        if "fi" in sketches:
            items = ds.frequent_strings_sketch.deserialize(sketches["fi"])
            merged_items = ds.frequent_strings_sketch.deserialize(items.serialize())
            merged_items.merge(items)
            for kind in error_types:
                for row in merged_items.get_frequent_items(kind)[:1]:
                    merged_items.get_estimate(row[0])


def child_main(memory_bytes: int, cpu_seconds: int, max_columns: int) -> None:
    """The loop of a child process: read a job from stdin, answer on stdout, until stdin closes."""
    import resource

    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the answers
    requests = sys.stdin.buffer
    # the imports happen before the limits, which are then relative to what the child holds
    import whylogs_songbird.server.digest  # noqa: F401
    import whylogs_songbird.server.summaries  # noqa: F401
    from whylogs_songbird.server.summaries import SummaryError

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    limit = _address_space() + memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    answers.write(_FRAME.pack(b"H", 0))  # ready
    answers.flush()
    while True:
        if not _job_waiting(requests):
            answers.flush()  # the last answer goes out before the child waits for more work
        header = _read_exactly(requests, _FRAME.size)
        if header is None:
            return
        job, size = _FRAME.unpack(header)
        answers.write(_FRAME.pack(b"S", 0))  # started: from here on, a death is this job's
        answers.flush()  # with the last answer, if it still waits: one write, one wake of the server
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(usage.ru_utime + usage.ru_stime) + cpu_seconds + 1
        resource.setrlimit(
            resource.RLIMIT_CPU, (soft if cpu_hard == resource.RLIM_INFINITY else min(soft, cpu_hard), cpu_hard)
        )
        vouched = None
        if job == _CHECKED_JOB and size >= _SHA256_BYTES:
            vouched = _read_exactly(requests, _SHA256_BYTES)
            size -= _SHA256_BYTES
        data = _read_exactly(requests, size)
        if data is None:
            return
        try:
            _apply_test_fault(data)
            # the check is skipped only for the very bytes the server's process checked
            if vouched is not None and hashlib.sha256(data).digest() == vouched:
                kind, payload = b"O", summarise_in_child(data, max_columns, checked=True)
            else:
                kind, payload = b"O", summarise_in_child(data, max_columns)
        except SummaryError as exc:
            kind, payload = b"R", str(exc).encode("utf-8")
        except MemoryError:
            kind, payload = b"M", b"it needs more memory than this server allows for summarising one profile"
        except Exception as exc:  # whylogs raises many kinds of errors on odd metrics
            kind, payload = b"R", f"it could not be summarised ({type(exc).__name__})".encode()
        del data
        answers.write(_FRAME.pack(kind, len(payload)))
        answers.write(payload)  # flushed with the next job's start, or before the child waits


__all__ = [
    "Sandbox",
    "SandboxCrash",
    "SandboxError",
    "SandboxLimits",
    "SandboxRefused",
    "SandboxStopped",
    "exercise_digest",
    "summarise_in_child",
]
