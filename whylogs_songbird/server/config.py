"""Configuration of the local songbird-compatible server."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import Response

from whylogs_songbird.models import MAX_JSON_BYTES, MAX_REFERENCES_PER_BATCH
from whylogs_songbird.server.connections import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    ConnectionLimits,
    default_max_connections,
)
from whylogs_songbird.server.faults import check_fault_rate
from whylogs_songbird.server.ratelimits import (
    DEFAULT_SESSION_BURST,
    DEFAULT_SESSION_RATE,
    DEFAULT_SLOT_BURST,
    DEFAULT_SLOT_RATE,
)

#: Environment variable holding comma-separated API keys, read when no keys are given.
API_KEYS_ENV = "SONGBIRD_SERVER_API_KEYS"
#: Environment variable holding the bearer token of /metrics, read when --metrics-token is not given.
SMTP_URL_ENV = "SONGBIRD_SMTP_URL"
METRICS_TOKEN_ENV = "SONGBIRD_METRICS_TOKEN"  # noqa: S105 - a variable name, not a token

#: A hook run before every request (after the emulated latency). Returning a response
#: answers the request with it instead of the app: the seam for fault injection.
RequestHook = Callable[[Request], Awaitable[Response | None]]

MiB = 1024 * 1024
#: Open upload slots per session by default: two of the largest batch (1,000 references) in flight.
DEFAULT_MAX_OPEN_SLOTS = 2 * MAX_REFERENCES_PER_BATCH
#: Seconds an ingest claim holds without its heartbeat (``ingest.py``).
DEFAULT_CLAIM_LEASE_SECONDS = 30.0


@dataclass(repr=False)
class ServerConfig:
    """Settings of one server instance.

    ``api_keys`` (plus the keys of ``api_key_file``, one a line) falls back to the comma-separated
    ``SONGBIRD_SERVER_API_KEYS`` environment variable when both give none. A key written
    ``<id>.<secret>:<org-id>`` may only claim sessions into that org; a key without ``:<org-id>``
    may claim into any org.
    """

    host: str = "127.0.0.1"
    port: int = 8737
    data_dir: Path = field(default_factory=lambda: Path("songbird-data"))
    api_keys: list[str] = field(default_factory=list)
    #: A file of API keys, one a line (``#`` comments and blank lines allowed): keys kept out of ``ps``.
    api_key_file: Path | None = None
    url_ttl_seconds: int = 900
    max_upload_bytes: int = 256 * MiB
    max_json_bytes: int = MAX_JSON_BYTES
    #: Base URL used in links (upload and observatory URLs); None: the request's own base URL.
    public_url: str | None = None
    #: Delay every API request by this many milliseconds (emulates a network round trip).
    latency_ms: int = 0
    #: Hooks run before every request; see :data:`RequestHook`.
    request_hooks: list[RequestHook] = field(default_factory=list)
    #: Answer this fraction (0 to 1) of API requests with a fault (500, 503, 429 or a dropped
    #: connection) before the route runs; see ``faults.py``. 0: off.
    fault_rate: float = 0.0
    #: Seed of the fault decisions (None: a different sequence on every start).
    fault_seed: int | None = None
    #: Server processes sharing the listening socket (see ``launcher.py``); 1: one process.
    workers: int = 1
    #: Where the metadata lives: None (SQLite in ``data_dir``), ``sqlite:///PATH`` or ``postgresql://...``.
    database_url: str | None = None
    #: Where profile bytes live: None (files under ``data_dir``), ``file:///DIR`` or ``s3://BUCKET/PREFIX``.
    blob_store: str | None = None
    #: Endpoint of an S3-compatible object store (None: AWS S3).
    s3_endpoint_url: str | None = None
    #: Uploads naming more columns than this are refused with 400 by the cheap PUT check.
    max_columns: int = 20_000
    #: Profiles summarised at once by each process's ingest worker (bounds its memory and CPU).
    ingest_concurrency: int = 1
    #: Seconds an ingest claim holds without its heartbeat: a host that dies while summarising a
    #: profile leaves it to another host after at most this long (``ingest.py``).
    claim_lease_seconds: float = DEFAULT_CLAIM_LEASE_SECONDS
    #: Address space (MB) a sandbox process may take beyond its imports to summarise one profile.
    sandbox_memory_mb: int = 2048
    #: CPU seconds a sandbox process may spend on one profile (it is killed after 2.5x this in wall time).
    sandbox_cpu_seconds: int = 120
    #: A monitors TOML file (see docs/timeline.md): evaluated when a batch lands, failures shown on the timeline.
    monitors: Path | None = None
    #: More ``Host`` names the server answers to, besides its bind address, localhost, the loopback
    #: addresses and the host of ``public_url`` (``"*"``: any host). See ``security.py``.
    allowed_hosts: list[str] = field(default_factory=list)
    #: Addresses or networks (CIDR) of reverse proxies whose ``X-Forwarded-For`` and ``X-Forwarded-Proto``
    #: are believed (``"*"``: any client). Empty: those headers are ignored, from loopback too.
    forwarded_allow_ips: list[str] = field(default_factory=list)
    #: List the recent sessions (their ids open their profiles) on the landing page. Never with
    #: ``public_url``; on only for the auto-started local default server.
    list_sessions: bool = False
    #: Seconds a client has to send a request line and headers, from connecting or its first byte.
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    #: Seconds a client may stay silent while sending a request body.
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    #: Open connections per server process (None: derived from the file descriptor limit).
    max_connections: int | None = None
    #: Profiles (upload slots) one session may hold; None: no limit.
    max_session_profiles: int | None = None
    #: Bytes of stored profiles one session may hold; None: no limit.
    max_session_bytes: int | None = None
    # -- what one stranger may cost (see docs/security.md) --
    #: Upload slots one session may have open (asked for, not PUT, URL not expired); None: no limit.
    max_open_slots: int | None = DEFAULT_MAX_OPEN_SLOTS
    #: Per client and process: sessions created per minute after a burst; 0: no limit.
    session_rate: float = DEFAULT_SESSION_RATE
    session_burst: int = DEFAULT_SESSION_BURST
    #: Per client and process: upload slots per second after a burst (see ``ratelimits.py``); 0: no limit.
    slot_rate: float = DEFAULT_SLOT_RATE
    slot_burst: int = DEFAULT_SLOT_BURST
    #: Connections one client address (IPv6: its /64) may hold per process; None: half of max_connections.
    max_client_connections: int | None = None
    #: Whether guests may create sessions and upload; False: only writes made with an API key.
    guest_sessions: bool = True
    #: Seconds between two sweeps of expired, never-PUT upload slots (each process sweeps).
    slot_sweep_seconds: float = 60.0
    #: How long after its URL expired a slot is deleted; None: the store's default (``store.py``).
    slot_sweep_grace_seconds: int | None = None
    #: Seconds before the first retry of a notification that failed; doubles on each retry (see notify.py).
    notify_backoff_seconds: float = 1.0
    #: The longest wait between two retries of a notification.
    notify_backoff_max_seconds: float = 300.0
    #: How long a notification is retried before it is given up (``songbird alerts retry`` revives it).
    notify_retry_seconds: float = 86_400.0
    #: Seconds between the sender's looks at the queue when this process queued nothing: how soon it
    #: sends what another process made due (``songbird alerts retry``, another host's leftovers).
    notify_idle_seconds: float = 30.0
    #: Bearer token /metrics needs when the server is not bound to loopback (None: $SONGBIRD_METRICS_TOKEN;
    #: with neither, /metrics answers only on a loopback bind). A secret: never shown in the repr.
    metrics_token: str | None = None
    #: Per-column series /metrics writes at most (label cardinality cap; see server/metrics.py).
    metrics_max_series: int = 10_000
    #: The SMTP server of ``email`` notify targets: ``smtp://[USER@]HOST[:PORT][?from=ADDRESS]`` (STARTTLS
    #: where offered) or ``smtps://``; None: $SONGBIRD_SMTP_URL. The password: in the URL or $SONGBIRD_SMTP_PASSWORD.
    smtp_url: str | None = None
    #: Profiles stored longer ago than this many seconds are deleted, bytes included, and sessions
    #: left with nothing go too (see ``lifecycle.py``); None: kept forever.
    retention_seconds: float | None = None
    #: The timeouts and connection cap above, as the connection guard takes them (derived).
    connection_limits: ConnectionLimits = field(init=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.api_keys = [key.strip() for key in self.api_keys if key.strip()]
        if self.api_key_file is not None:
            self.api_key_file = Path(self.api_key_file)
            self.api_keys += read_api_key_file(self.api_key_file)
        if not self.api_keys:
            env_keys = os.environ.get(API_KEYS_ENV, "")
            self.api_keys = [key.strip() for key in env_keys.split(",") if key.strip()]
        if self.public_url is not None:
            if not self.public_url.startswith(("http://", "https://")):
                raise ValueError(f"public_url must start with http:// or https://, got {self.public_url!r}")
            self.public_url = self.public_url.rstrip("/")
        for name in ("url_ttl_seconds", "max_upload_bytes", "max_json_bytes", "latency_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        for name in ("workers", "max_columns", "ingest_concurrency", "sandbox_memory_mb", "sandbox_cpu_seconds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        if self.list_sessions and self.public_url is not None:
            raise ValueError(
                "--list-sessions cannot be combined with --public-url: a server reached through a public URL must "
                "not show session ids (they open the profiles); leave --list-sessions off"
            )
        self.allowed_hosts = [h.strip() for h in self.allowed_hosts if h.strip()]
        self.forwarded_allow_ips = check_forwarded_allow_ips(self.forwarded_allow_ips)
        if self.max_connections is None:
            self.max_connections = default_max_connections()
        if self.max_client_connections is None:
            self.max_client_connections = max(1, self.max_connections // 2)
        self.connection_limits = ConnectionLimits(
            self.header_timeout, self.body_timeout, self.max_connections, self.max_client_connections
        )
        lease = self.claim_lease_seconds
        if isinstance(lease, bool) or not isinstance(lease, int | float) or not lease >= 0.3:
            raise ValueError(f"claim_lease_seconds must be a number of seconds, at least 0.3, got {lease!r}")
        for name in ("session_rate", "slot_rate", "slot_sweep_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if not self.slot_sweep_seconds > 0:
            raise ValueError(f"slot_sweep_seconds must be positive, got {self.slot_sweep_seconds!r}")
        grace = self.slot_sweep_grace_seconds
        if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool) or grace < 0):
            raise ValueError(f"slot_sweep_grace_seconds must be a non-negative integer or None, got {grace!r}")
        retention = self.retention_seconds
        if retention is not None and (
            isinstance(retention, bool) or not isinstance(retention, int | float) or not retention > 0
        ):
            raise ValueError(f"retention_seconds must be a positive number of seconds or None, got {retention!r}")
        for name in ("session_burst", "slot_burst"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_session_profiles", "max_session_bytes", "max_open_slots"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        for name in (
            "notify_backoff_seconds", "notify_backoff_max_seconds", "notify_retry_seconds", "notify_idle_seconds",
        ):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if not self.smtp_url:
            self.smtp_url = os.environ.get(SMTP_URL_ENV) or None
        if self.smtp_url is not None:
            smtp = urlsplit(self.smtp_url)
            if smtp.scheme not in ("smtp", "smtps") or not smtp.hostname:
                raise ValueError(
                    "smtp_url must look like smtp://USER@HOST:PORT or smtps://..., "
                    f"got {_redacted_url(self.smtp_url)!r}"
                )
        if not self.metrics_token:
            self.metrics_token = os.environ.get(METRICS_TOKEN_ENV) or None
        if not isinstance(self.metrics_max_series, int) or self.metrics_max_series < 1:
            raise ValueError(f"metrics_max_series must be a positive integer, got {self.metrics_max_series!r}")
        self.fault_rate = check_fault_rate(self.fault_rate)
        if self.fault_seed is not None and (isinstance(self.fault_seed, bool) or not isinstance(self.fault_seed, int)):
            raise ValueError(f"fault_seed must be an integer or None, got {self.fault_seed!r}")

    def __repr__(self) -> str:
        # API keys are secrets: show how many there are, never the keys.
        return (
            f"ServerConfig(host={self.host!r}, port={self.port}, data_dir={str(self.data_dir)!r}, "
            f"api_keys=<{len(self.api_keys)} keys>, url_ttl_seconds={self.url_ttl_seconds}, "
            f"max_upload_bytes={self.max_upload_bytes}, max_json_bytes={self.max_json_bytes}, "
            f"public_url={self.public_url!r}, latency_ms={self.latency_ms}, "
            f"fault_rate={self.fault_rate}, fault_seed={self.fault_seed}, workers={self.workers}, "
            f"database={_redacted_url(self.database_url)!r}, blob_store={self.blob_store!r}, "
            f"s3_endpoint_url={self.s3_endpoint_url!r}, max_columns={self.max_columns}, "
            f"allowed_hosts={self.allowed_hosts!r}, "
            f"list_sessions={self.list_sessions}, header_timeout={self.header_timeout}, "
            f"body_timeout={self.body_timeout}, max_connections={self.max_connections}, "
            f"max_session_profiles={self.max_session_profiles}, max_session_bytes={self.max_session_bytes}, "
            f"max_open_slots={self.max_open_slots}, session_rate={self.session_rate}, "
            f"session_burst={self.session_burst}, slot_rate={self.slot_rate}, slot_burst={self.slot_burst}, "
            f"max_client_connections={self.max_client_connections}, guest_sessions={self.guest_sessions})"
        )


def read_api_key_file(path: Path) -> list[str]:
    """The API keys of ``path``: one a line; blank lines and lines starting with ``#`` are skipped.

    ValueError (naming the file, never its content) when it cannot be read or holds no key."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"cannot read the API key file {path}: {reason}") from None
    keys = [line.strip() for line in text.splitlines()]
    keys = [key for key in keys if key and not key.startswith("#")]
    if not keys:
        raise ValueError(f"the API key file {path} holds no key; write one key per line")
    return keys


def check_forwarded_allow_ips(values: list[str]) -> list[str]:
    """The proxy addresses of ``forwarded_allow_ips``, normalized: ``"*"``, IP addresses and networks
    (``10.0.0.0/8``); ValueError naming a value that is none of them (uvicorn would ignore it silently)."""
    checked = []
    for value in (v.strip() for v in values):
        if not value:
            continue
        if value == "*":
            checked.append(value)
            continue
        try:
            checked.append(str(ipaddress.ip_network(value) if "/" in value else ipaddress.ip_address(value)))
        except ValueError:
            raise ValueError(
                f"forwarded_allow_ips: {value[:80]!r} is not an IP address or network (write 10.0.0.5, "
                "10.0.0.0/8 or fd00::/8, with no host bits set in a network), nor '*'"
            ) from None
    return checked


def shared_address(host: str) -> str:
    """An address of this machine that others can use to reach ``host``: the host name for 0.0.0.0 / ::."""
    if host in ("0.0.0.0", "", "::"):  # noqa: S104 - only for display
        return socket.getfqdn() or socket.gethostname() or "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _redacted_url(url: str | None) -> str | None:
    """A database URL without its password (``postgresql://user:***@host/db``)."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
