"""Several hosts on one PostgreSQL and one S3 bucket: nothing lost under restarts and kills, each
upload ingested once, and what a view costs as a session grows.

A throwaway PostgreSQL cluster and SeaweedFS (S3) are started here, as the tests do
(``tests/services.py``); ``--hosts`` server processes (``python -m whylogs_songbird.server``, each
with its own ``--data-dir``) share them. A trigger the benchmark installs logs every time an
upload is recorded (``stored_at`` set or cleared), every learn claim a host takes on a landed
upload (it then reads, checks and copies it) and every summary written.

1. **Churn.** Two client threads upload (create the slot on a host, PUT the 3 KB profile to its
   presigned S3 URL) through every host but the last, at most ``--rate`` a second for
   ``--seconds``; meanwhile the last host is killed (``kill -9``) and started, then stopped
   (SIGTERM) and started, over and over (each start's time, wall and CPU, is reported), and
   every third time a loaded host is ended instead. Then every host is asked for links (which
   makes it look for landed uploads) until every acknowledged upload (S3 answered 200) is
   recorded and summarised, or ``--settle`` seconds pass. Reported: acknowledged vs visible
   profiles (lost = acknowledged and not visible), uploads recorded more than once or
   un-recorded, learns per recorded upload (learn claims taken; 1.0 when each landed upload is
   read by one host) and uploads summarised more than once (duplicate ingests); the shared upload
   counter (``/_local/stats``) before the load, right after each start and at the end, against
   the slots the hosts answered (a start must reset nothing). Then a **stuck claim**: a large
   profile (``--stuck-columns``) is uploaded, the host that claims it is killed while it
   summarises, and the time until another host has summarised it is reported (target: within
   the claim lease, 30 s by default, + 10 s).
2. **Views.** For each of ``--sizes`` (default 1000 and 10000; ``--big`` adds 50000) one session
   is filled straight through the store (rows, S3 objects and summaries, as the hosts' ingest
   would leave them: a batch per hour, ``--columns`` columns), then a host that never saw it
   answers (after a view of a tiny session, so one-off start-up costs are apart): the session
   page (its first page, the next one through its own Next link, a filter every batch meets and
   an alias filter none meets), the timeline JSON by day (of the last 365 days, then of the whole history, refused past
   1,000 days) and by hour (of the last week: a view has at most 1,000 buckets; and of the
   whole history, refused past 1,000 hours), each first (cold) and again
   (stored or cached; the median of three). A host checks at start that the server answering on
   its port is its own process (the health check's pid, with its data dir's token).
   Reported per view: wall ms, the host's CPU ms (``/proc``, every thread, in 10 ms ticks), bytes,
   and for the session page the CPU and wall of the thread that rendered it (its ``Server-Timing``); then
   the growth exponent of each between consecutive sizes (1 = linear in the profiles, 0 = flat).
   Wall times depend on what else the machine runs; CPU much less: each view's line also gives
   the wall time of a trivial request (``/healthz``) to the host just before it, which is what
   waiting for a CPU costs any request then. ``--statements``: PostgreSQL logs the host's
   statements, and each session page view prints how many ran and the slowest (with ``--only
   "session page"``, only those views are measured).

Other work may add pagination to the session page and rollups to the timeline; the script
measures whatever the checkout has. Run: ``python benchmarks/bench_scale.py`` (``--sizes 300,1000``
and ``--seconds 10`` for a short run; ``--skip-churn`` / ``--skip-views`` for one half).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import html
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

import pandas as pd  # noqa: E402
import psycopg  # noqa: E402
import requests  # noqa: E402
import whylogs as why  # noqa: E402
from _server_process import NO_CLIENT_RATE_LIMITS, cpu_seconds  # noqa: E402

from whylogs_songbird.models import HEALTH_TOKEN_FILE, HEALTH_TOKEN_HEADER  # noqa: E402
from whylogs_songbird.server.rollups import note_summarised  # noqa: E402
from whylogs_songbird.server.sandbox import summarise_in_child  # noqa: E402
from whylogs_songbird.server.storage.base import NewUpload, UploadRecord  # noqa: E402
from whylogs_songbird.server.storage.postgres import PostgresMetadataStore  # noqa: E402
from whylogs_songbird.server.storage.s3 import S3BlobStore  # noqa: E402
from whylogs_songbird.server.store import Store, blob_key, host_id, now_ms  # noqa: E402

HOUR_MS = 3_600_000
T0 = 1_672_531_200_000  # 2023-01-01T00:00Z
BLOB_STORE = "s3://songbird-scale/profiles"

#: Every recording and summary, logged by the database (what the churn phase counts).
EVENT_LOG = """
CREATE TABLE IF NOT EXISTS bench_events (n SERIAL PRIMARY KEY, upload_id TEXT NOT NULL, what TEXT NOT NULL);
CREATE OR REPLACE FUNCTION bench_log_recorded() RETURNS trigger AS $$
BEGIN
  IF NEW.stored_at IS DISTINCT FROM OLD.stored_at THEN
    INSERT INTO bench_events (upload_id, what)
      VALUES (NEW.id, CASE WHEN NEW.stored_at IS NULL THEN 'unrecorded' ELSE 'recorded' END);
  END IF;
  IF NEW.learn_lease IS NOT NULL AND NEW.learn_lease IS DISTINCT FROM OLD.learn_lease THEN
    INSERT INTO bench_events (upload_id, what) VALUES (NEW.id, 'learn claimed');
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE OR REPLACE FUNCTION bench_log_summarised() RETURNS trigger AS $$
BEGIN INSERT INTO bench_events (upload_id, what) VALUES (NEW.upload_id, 'summarised'); RETURN NEW; END $$
LANGUAGE plpgsql;
CREATE TRIGGER bench_recorded AFTER UPDATE ON uploads FOR EACH ROW EXECUTE FUNCTION bench_log_recorded();
CREATE TRIGGER bench_summarised AFTER INSERT OR UPDATE ON summaries
  FOR EACH ROW EXECUTE FUNCTION bench_log_summarised();
"""


@dataclass
class Team:
    """The shared storage of every host."""

    database_url: str
    endpoint_url: str
    work: Path
    #: the PostgreSQL cluster's server log (what ``--statements`` reads)
    database_log: Path | None = None

    def options(self) -> list[str]:
        return ["--database-url", self.database_url, "--blob-store", BLOB_STORE, "--s3-endpoint-url", self.endpoint_url]

    def store(self) -> Store:
        return Store(
            metadata=PostgresMetadataStore(self.database_url),
            blobs=S3BlobStore(BLOB_STORE, endpoint_url=self.endpoint_url),
        )


@contextlib.contextmanager
def team_services() -> Iterator[Team]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from services import postgres_cluster, seaweedfs

    with (
        tempfile.TemporaryDirectory(prefix="songbird-scale-") as work,
        postgres_cluster() as postgres,
        seaweedfs() as s3,
    ):
        os.environ.update(s3.env())  # the hosts inherit the credentials
        yield Team(postgres.new_database("scale"), s3.endpoint_url, Path(work), postgres.socket_dir / "server.log")


@dataclass
class Host:
    """One server process; :meth:`start` again after a stop or a kill (same data dir: the same host)."""

    name: str
    team: Team
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self) -> Host:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        data_dir = self.team.work / self.name
        command = [sys.executable, "-m", "whylogs_songbird.server", "--port", str(port), "--data-dir", str(data_dir)]
        log = open(self.team.work / f"{self.name}.log", "ab")  # noqa: SIM115 - the process keeps it
        self.process = subprocess.Popen(
            [*command, "--no-access-log", *NO_CLIENT_RATE_LIMITS, *self.team.options(), *self.extra],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(requests.RequestException, OSError, ValueError):
                if self._answers_itself(data_dir):
                    return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"host {self.name} did not start; see {self.team.work / self.name}.log")
            time.sleep(0.1)

    def _answers_itself(self, data_dir: Path) -> bool:
        """Whether this host's own process answers on its port: the health check with the token of
        its data dir names its pid (the port was free when chosen; another process may take it first)."""
        assert self.process is not None
        token = (data_dir / HEALTH_TOKEN_FILE).read_text(encoding="ascii").strip()
        answer = requests.get(f"{self.url}/healthz", headers={HEALTH_TOKEN_HEADER: token}, timeout=5)
        if not answer.ok:
            return False
        pid = answer.json().get("pid")
        if pid == self.process.pid:
            return True
        parent = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1]  # a worker process of it
        if int(parent) == self.process.pid:
            return True
        raise RuntimeError(f"host {self.name}: another process (pid {pid}) answers on {self.url}")

    def end(self, how: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(how)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def cpu(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)


def profile_bytes(columns: int, seed: int) -> bytes:
    frame = pd.DataFrame(
        {
            **{f"x{c}": [(seed * 31 + c * 7 + r) % 97 * 0.5 for r in range(40)] for c in range(columns - columns // 4)},
            **{f"s{c}": [f"v{(seed + c + r) % 6}" for r in range(40)] for c in range(columns // 4)},
        }
    )
    return why.log(frame).view().serialize()


# -- 1. churn --------------------------------------------------------------------------------------


def counted(host: Host, operation: str = "upload") -> int:
    """The shared count of ``operation`` as ``host`` answers it (``/_local/stats``: every host's,
    since the store was made)."""
    return int(requests.get(f"{host.url}/_local/stats", timeout=60).json().get(operation, 0))


def stuck_claim_takeover(team: Team, store: Store, fleet: list[Host], session_id: str, columns: int) -> None:
    """A large profile is uploaded; the host that claims it is killed (``kill -9``) while it
    summarises, and the time until another host has summarised it is reported, against the claim's
    lease (``--claim-lease``, 30 s by default) + 10 s. The killed host is started again after."""
    owners = {host_id(team.work / host.name): host for host in fleet}
    data = profile_bytes(columns, 7)
    sender = fleet[0]
    slot = requests.post(
        f"{sender.url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": T0 - HOUR_MS}, timeout=60
    ).json()
    assert requests.put(slot["uploadUrl"], data=data, timeout=120).status_code == 200
    upload_id = slot["id"]
    deadline = time.monotonic() + 300
    claim: tuple[int, str] | None = None
    with psycopg.connect(team.database_url, autocommit=True) as conn:
        while claim is None and time.monotonic() < deadline:
            for host in fleet:  # a link makes a host look for the landed upload now
                with contextlib.suppress(requests.RequestException):
                    requests.post(
                        f"{host.url}/v0/sessions/observatory-link/{session_id}",
                        json={"batchProfileTimestamps": [T0], "referenceProfileIds": []},
                        timeout=30,
                    )
            for _ in range(50):
                row = conn.execute(
                    "SELECT ingest_state, ingest_lease, ingest_owner FROM uploads WHERE id = %s", (upload_id,)
                ).fetchone()
                if row is not None and row[0] != "pending":
                    print(f"  stuck claim: the {len(data):,} B profile was {row[0]} before a kill; give more columns")
                    return
                if row is not None and row[1] is not None and row[1] > now_ms():
                    claim = (int(row[1]), str(row[2]))
                    break
                time.sleep(0.02)
        if claim is None:
            print("  stuck claim: no host claimed the profile within 300 s")
            return
        lease_end, owner = claim
        victim = owners[owner]
        victim.end(signal.SIGKILL)
        killed = time.monotonic()
        killed_ms = now_ms()
        while True:
            row = conn.execute(
                "SELECT ingest_state, ingest_owner, ingest_tries FROM uploads WHERE id = %s", (upload_id,)
            ).fetchone()
            waited = time.monotonic() - killed
            if row is not None and row[0] != "pending":
                break
            if waited > (lease_end - killed_ms) / 1000 + 300:
                break
            time.sleep(0.1)
    taker = owners.get(str(row[1])) if row is not None else None
    print(
        f"  stuck claim: {victim.name} killed while summarising a {len(data):,} B profile ({columns} columns), its"
        f" lease {(lease_end - killed_ms) / 1000:.1f} s from the kill; {row[0] if row else 'gone'} after"
        f" {waited:.1f} s, by {taker.name if taker else row[1] if row else '?'}, tries {row[2] if row else '?'}"
        f" (target: within the lease + 10 s)"
    )
    victim.start()


def churn(team: Team, hosts: int, seconds: float, settle: float, rate: float, stuck_columns: int = 3000) -> None:
    store = team.store()  # makes the tables, so the trigger has something to watch
    with psycopg.connect(team.database_url, autocommit=True) as conn:
        conn.execute(EVENT_LOG)
    fleet = [Host(f"host-{n}", team).start() for n in range(hosts)]
    loaded, churned = fleet[:-1], fleet[-1]
    session_id = requests.post(f"{loaded[0].url}/v0/sessions", json={"userId": "scale"}, timeout=30).json()["id"]
    variants = [profile_bytes(8, seed) for seed in range(4)]
    acknowledged: dict[str, bytes] = {}
    created = Counter[str]()  # slots the hosts answered for: what their "upload" counter counts
    failed = Counter[str]()
    stop = threading.Event()
    lock = threading.Lock()
    stamps = iter(range(10**9))

    def load(offset: int) -> None:
        next_at = time.monotonic()
        with requests.Session() as http:
            while not stop.is_set():
                next_at += len(loaders) / rate
                stop.wait(max(0.0, next_at - time.monotonic()))
                with lock:
                    i = next(stamps)
                host = loaded[(i + offset) % len(loaded)]
                try:
                    slot = http.post(
                        f"{host.url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": T0 + i}, timeout=30
                    )
                    slot.raise_for_status()
                    with lock:
                        created["upload"] += 1
                    data = variants[i % len(variants)]
                    body = slot.json()
                    if http.put(body["uploadUrl"], data=data, timeout=30).status_code == 200:
                        with lock:
                            acknowledged[body["id"]] = data
                except (requests.RequestException, ValueError, KeyError) as exc:
                    failed[type(exc).__name__] += 1  # a host was down: nothing acknowledged

    counted_before = counted(fleet[0])
    counts_after_starts: list[int] = []  # the shared "upload" count a host answered right after its start
    loaders = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(2)]
    for thread in loaders:
        thread.start()
    ends = Counter[str]()
    starts: list[tuple[float, float]] = []  # (wall, CPU) seconds from a host's launch to its first healthy answer
    deadline = time.monotonic() + seconds
    rounds = 0
    try:
        while time.monotonic() < deadline:
            victim = churned if rounds % 3 != 2 or len(loaded) < 2 else loaded[-1]
            how = signal.SIGTERM if rounds % 2 else signal.SIGKILL
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
            victim.end(how)
            ends[f"{victim.name} {how.name}"] += 1
            began = time.monotonic()
            victim.start()
            starts.append((time.monotonic() - began, victim.cpu()))
            counts_after_starts.append(counted(victim))
            rounds += 1
    finally:
        stop.set()
        for thread in loaders:
            thread.join(timeout=60)
    took = time.monotonic() - deadline + seconds
    print(f"churn: {took:.0f} s of uploads (at most {rate:g}/s) through {len(loaded)} host(s); ends: {dict(ends)}")
    print(f"  acknowledged uploads {len(acknowledged)}; refused or failed while a host was down: {dict(failed)}")
    print(
        "  restarts under load, launch to first healthy answer: "
        + ", ".join(f"{wall:.1f} s wall / {cpu:.1f} s CPU" for wall, cpu in starts)
        + " (imports included)"
    )

    settled = time.monotonic() + settle
    while True:
        for host in fleet:  # a link makes a host look for landed uploads of the session now
            with contextlib.suppress(requests.RequestException):
                requests.post(
                    f"{host.url}/v0/sessions/observatory-link/{session_id}",
                    json={"batchProfileTimestamps": [T0], "referenceProfileIds": []},
                    timeout=30,
                )
        profiles = {p.id: p for p in store.list_profiles(session_id)}
        visible = set(acknowledged) & set(profiles)
        ready = [p for p in profiles.values() if p.ingest_state == "ready"]
        if (len(visible) == len(acknowledged) and len(ready) == len(profiles)) or time.monotonic() > settled:
            break
        time.sleep(1.0)
    with psycopg.connect(team.database_url, autocommit=True) as conn:
        events = conn.execute("SELECT upload_id, what FROM bench_events ORDER BY n").fetchall()
    per_upload: dict[str, Counter[str]] = {}
    for upload_id, what in events:
        per_upload.setdefault(upload_id, Counter())[what] += 1
    # an acknowledged upload not visible yet is late (its bytes still wait where the PUT left them,
    # for a host to learn them) or lost (neither recorded nor in the blob store)
    unseen = sorted(set(acknowledged) - visible)
    late = sum(1 for u in unseen if store.blobs.exists(blob_key(session_id, u)))
    if unseen:
        print(f"  after {settle:g} s of settling, {len(unseen)} acknowledged uploads are not visible: {late} still")
        print(f"  landed and waiting to be learned (late: the hosts were still catching up), {len(unseen) - late} gone")
    wrong_bytes = sum(1 for u in visible if profiles[u].sha256 != hashlib.sha256(acknowledged[u]).hexdigest())
    rerecorded = sorted(u for u, c in per_upload.items() if c["recorded"] > 1 or c["unrecorded"])
    twice = sorted(u for u, c in per_upload.items() if c["summarised"] > 1)
    print(
        f"  visible {len(visible)} of {len(acknowledged)} acknowledged (lost {len(unseen) - late}, late {late});"
        f" {len(profiles) - len(visible)} more landed unacknowledged; {len(ready)} of {len(profiles)} summarised;"
        f" wrong bytes {wrong_bytes}"
    )
    print(f"  recorded more than once or un-recorded: {len(rerecorded)}; summarised more than once: {len(twice)}")
    recorded = [c for c in per_upload.values() if c["recorded"]]
    learns = sum(c["learn claimed"] for c in recorded)
    relearned = sum(1 for c in recorded if c["learn claimed"] > 1)
    print(
        f"  learns per recorded upload: {learns / max(1, len(recorded)):.3f} ({learns} learn claims for"
        f" {len(recorded)} recorded uploads; learned more than once: {relearned})"
    )
    finals = [counted(host) for host in fleet]
    rising = all(b >= a for a, b in zip([counted_before, *counts_after_starts], counts_after_starts, strict=False))
    print(
        f"  shared upload counter: {counted_before} before the load; right after each start {counts_after_starts}"
        f" ({'never lower than before it' if rising else 'LOWER after a start: reset'}); at the end {finals} on the"
        f" hosts, for {created['upload']} slots the hosts answered (a kill -9 may lose a host's last 0.1 s of counts)"
    )
    stuck_claim_takeover(team, store, fleet, session_id, stuck_columns)
    for host in fleet:
        host.end(signal.SIGTERM)
    for host in fleet:  # what each start's reconcile (and a sweeper's scan) fixed, as the hosts logged it
        lines = (team.work / f"{host.name}.log").read_text(errors="replace").splitlines()
        for line in lines:
            if "reconciled the store" in line:
                print(f"  {host.name}: {line.strip()[:300]}")
    store.close()


# -- 2. views --------------------------------------------------------------------------------------


def fill(store: Store, size: int, columns: int, rollups: bool = True) -> str:
    """A session of ``size`` hourly batches, as the hosts would leave it (recorded and summarised,
    and with ``rollups`` merged into the rollups of their hours and days; without: as data stored
    before rollups existed, which a first view merges from the profiles)."""
    session = store.create_session("scale-views")
    variants = []
    for seed in range(8):
        data = profile_bytes(columns, seed)
        variants.append((data, hashlib.sha256(data).hexdigest(), summarise_in_child(data, 100_000)))
    uploads = []
    for start in range(0, size, 500):
        specs = [
            NewUpload(kind="batch", dataset_timestamp=T0 + i * HOUR_MS) for i in range(start, min(size, start + 500))
        ]
        uploads.extend(store.create_uploads(session.id, specs, ttl_seconds=24 * 3600))

    recorded: list[UploadRecord | None] = [None] * size

    def one(index: int) -> None:
        data, sha256, digest = variants[index % len(variants)]
        upload_id = uploads[index].id
        recorded[index] = store.store_profile_data(upload_id, data, sha256=sha256).upload
        store.metadata.store_summary(upload_id, sha256, digest)

    def one_day(first: int) -> None:  # what the ingest worker does once a summary is stored, in order
        for index in range(first, min(size, first + 24)):
            upload = recorded[index]
            if upload is not None:
                note_summarised(store, upload, variants[index % len(variants)][2])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(size)))
        if rollups:  # a day's buckets are its own: days merge side by side, each in order
            list(pool.map(one_day, range(0, size, 24)))
    return session.id


@dataclass
class Cost:
    wall_ms: float
    cpu_ms: float
    size: int
    #: the CPU of the thread that built the answer, as its ``Server-Timing: render-cpu`` says (pages that tell it)
    render_cpu_ms: float | None = None
    #: the wall time the server took to build it, as its ``Server-Timing: render`` says (the same pages)
    render_ms: float | None = None
    #: the wall time of a trivial request (``/healthz``) to the same host just before: what the
    #: machine's load alone costs a request, to tell the view's own cost from waiting for a CPU
    trivial_ms: float = 0.0
    text: str = field(default="", repr=False)


def trivial_wall_ms(host: Host) -> float:
    """The wall time of the cheapest request a host answers (its health check without the token)."""
    started = time.perf_counter()
    requests.get(f"{host.url}/healthz", timeout=60).raise_for_status()
    return 1000 * (time.perf_counter() - started)


def view(host: Host, path: str) -> Cost:
    trivial = trivial_wall_ms(host)
    cpu = host.cpu()
    started = time.perf_counter()
    answer = requests.get(f"{host.url}{path}", timeout=1800)
    wall = time.perf_counter() - started
    time.sleep(0.05)  # background work the view started (a stored document being written) counts too
    if answer.status_code != 200:
        print(f"  {path}: HTTP {answer.status_code} {answer.text[:200]}")
    told = re.search(r"render-cpu;dur=([0-9.]+)", answer.headers.get("Server-Timing", ""))
    took = re.search(r"render;dur=([0-9.]+)", answer.headers.get("Server-Timing", ""))
    return Cost(
        1000 * wall,
        1000 * (host.cpu() - cpu),
        len(answer.content),
        float(told.group(1)) if told else None,
        float(took.group(1)) if took else None,
        trivial,
        answer.text if "html" in answer.headers.get("content-type", "") else "",
    )


@contextlib.contextmanager
def statements_logged(team: Team, on: bool) -> Iterator[None]:
    """With ``on``, PostgreSQL logs every statement of the connections opened meanwhile, with its
    duration (a host started inside sees it; the fill's open connections do not)."""
    if not on:
        yield
        return
    name = team.database_url.rpartition("/")[2]
    with psycopg.connect(team.database_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET log_min_duration_statement = 0')
    try:
        yield
    finally:
        with psycopg.connect(team.database_url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" RESET log_min_duration_statement')


def logged_statements(team: Team, since: int) -> list[tuple[float, str]]:
    """``(ms, statement)`` of each statement PostgreSQL logged after byte ``since`` of its log."""
    if team.database_log is None:
        return []
    with open(team.database_log, "rb") as log:
        log.seek(since)
        text = log.read().decode(errors="replace")
    found = re.findall(r"duration: ([0-9.]+) ms\s+(?:statement|execute [^:]*):\s*(.*)", text)
    return [(float(ms), statement.strip()) for ms, statement in found]


def log_size(team: Team) -> int:
    return team.database_log.stat().st_size if team.database_log is not None else 0


def next_link(page: str) -> str:
    """The path of a session page's own Next link."""
    found = re.search(r'<a rel="next" href="([^"]+)"', page)
    if found is None:
        raise RuntimeError("the session page has no Next link")
    return html.unescape(found.group(1))


#: Profiles of the session each fresh host views first (see :func:`views`).
WARM_SIZE = 3

VIEWS = {
    "session page": "/sessions/{sid}",
    # the page after the first, through the first page's own Next link (see :func:`views`)
    "session page next": "{next}",
    # a filter the fill's batches all meet (a walk of the timestamp index), and an alias text
    # filter that none meets (a lookup in the pg_trgm index; without that index, a walk of the
    # whole session: the worst a filter costs)
    "session page, batches by timestamp": "/sessions/{sid}?kind=batch&sort=timestamp",
    "session page, alias filter (no match)": "/sessions/{sid}?q=nothing-has-this",
    # the last year daily, first (cold): the whole history is refused past 1,000 days (50,000 hourly
    # batches are 2,084), and below that it would leave the year's buckets built
    "timeline day (last 365 days)": "/api/v1/sessions/{sid}/timeline?granularity=day&start={year_ago}&end={end}",
    "timeline day": "/api/v1/sessions/{sid}/timeline?granularity=day",
    # a view shows at most 1,000 buckets: the hourly one is of the last week of the history
    "timeline hour (last 7 days)": "/api/v1/sessions/{sid}/timeline?granularity=hour&start={week_ago}&end={end}",
    # the whole history hourly: refused (400) past 1,000 buckets, which should cost little
    "timeline hour (all)": "/api/v1/sessions/{sid}/timeline?granularity=hour",
}


def views(
    team: Team, sizes: list[int], columns: int, rollups: bool = True, statements: bool = False, only: str = ""
) -> None:
    """Measure :data:`VIEWS` (those whose name starts with ``only``) at each of ``sizes``."""
    chosen = {name: path for name, path in VIEWS.items() if name.startswith(only)}
    store = team.store()
    results: dict[int, dict[str, Cost]] = {}
    host = Host("viewer", team)
    warm_sid = fill(store, WARM_SIZE, columns)
    try:
        for size in sizes:
            started = time.perf_counter()
            sid = fill(store, size, columns, rollups)
            print(
                f"views: {size} hourly batches x {columns} columns filled in {time.perf_counter() - started:.0f} s"
                + ("" if rollups else " (no rollups: as stored before they existed)")
            )
            with statements_logged(team, statements):
                host.start()  # a host that never saw the session: nothing of it in memory
            # one-off costs of a fresh process (first use of the sketch and drift libraries) are
            # paid on a small other session first, so they do not count as the size's
            for name, path in chosen.items():
                if "{next}" in path:
                    continue  # a 3-profile session has one page
                warm = view(host, path.format(sid=warm_sid, week_ago=T0, year_ago=T0, end=T0 + WARM_SIZE * HOUR_MS))
                print(f"  fresh host, {name} of a {WARM_SIZE}-profile session: cpu {warm.cpu_ms:.0f} ms")
            row: dict[str, Cost] = {}
            end = T0 + size * HOUR_MS
            for name, path in chosen.items():
                week_ago, year_ago = (max(T0, end - days * 24 * HOUR_MS) for days in (7, 365))
                following = next_link(row["session page first"].text) if "{next}" in path else ""
                url = path.format(sid=sid, week_ago=week_ago, year_ago=year_ago, end=end, next=following)
                since = log_size(team)
                row[f"{name} first"] = view(host, url)
                if statements and name.startswith("session page"):
                    logged = logged_statements(team, since)
                    print(
                        f"  {size:>6} {name} first: {len(logged)} statements,"
                        f" {sum(ms for ms, _ in logged):.1f} ms in PostgreSQL; the slowest:"
                    )
                    for ms, statement in sorted(logged, reverse=True)[:4]:
                        print(f"    {ms:8.2f} ms  {statement[:400]}")
                again = sorted((view(host, url) for _ in range(3)), key=lambda cost: cost.cpu_ms + cost.wall_ms)
                row[f"{name} again"] = again[1]  # the median of three: a host's background work adds noise
            results[size] = row
            host.end(signal.SIGTERM)
            for name, cost in row.items():
                told = "" if cost.render_cpu_ms is None else f"  render cpu {cost.render_cpu_ms:7.1f} ms"
                told += "" if cost.render_ms is None else f" wall {cost.render_ms:7.1f} ms"
                print(
                    f"  {size:>6} {name:<46} wall {cost.wall_ms:9.1f} ms (trivial request {cost.trivial_ms:6.1f} ms)"
                    f"  cpu {cost.cpu_ms:9.1f} ms  {cost.size:>10} B" + told
                )
    finally:
        host.end(signal.SIGTERM)
        store.close()
    print("growth exponents (log ratio of cost / log ratio of size; 1 = linear, 0 = flat):")
    for small, large in zip(sizes, sizes[1:], strict=False):
        grow = math.log(large / small)
        for name in results[small]:
            a, b = results[small][name], results[large][name]
            exponents = [
                f"{label} {math.log(max(y, floor) / max(x, floor)) / grow:5.2f}"
                for label, x, y, floor in (
                    ("wall", a.wall_ms, b.wall_ms, 1.0),
                    ("cpu", a.cpu_ms, b.cpu_ms, 10.0),  # /proc counts in 10 ms ticks
                    ("bytes", a.size, b.size, 1),
                )
            ]
            if a.render_cpu_ms is not None and b.render_cpu_ms is not None:
                told = math.log(max(b.render_cpu_ms, 1.0) / max(a.render_cpu_ms, 1.0)) / grow
                exponents.append(f"render cpu {told:5.2f}")
            print(f"  {small}->{large} {name:<46} {'  '.join(exponents)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the churn phase uploads")
    parser.add_argument("--rate", type=float, default=25.0, help="uploads per second in the churn phase, at most")
    parser.add_argument("--settle", type=float, default=180.0, help="how long to wait for every upload to show")
    parser.add_argument(
        "--stuck-columns", type=int, default=3000, help="columns of the profile whose claim a kill leaves stuck"
    )
    parser.add_argument("--sizes", default="1000,10000", help="profiles per session in the views phase")
    parser.add_argument("--big", action="store_true", help="add a session of 50,000 profiles")
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument(
        "--statements",
        action="store_true",
        help="print the PostgreSQL statements of each session page view and their durations",
    )
    parser.add_argument("--only", default="", help="measure only the views whose name starts with this")
    parser.add_argument("--skip-churn", action="store_true")
    parser.add_argument("--skip-views", action="store_true")
    parser.add_argument(
        "--no-rollups", action="store_true", help="fill without rollups (data stored before they existed)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s] + ([50_000] if args.big else [])
    with team_services() as team:
        if not args.skip_churn:
            churn(team, max(2, args.hosts), args.seconds, args.settle, args.rate, args.stuck_columns)
        if not args.skip_views:
            views(team, sizes, args.columns, rollups=not args.no_rollups, statements=args.statements, only=args.only)


if __name__ == "__main__":
    main()
