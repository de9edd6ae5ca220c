"""Configuration of the local songbird-compatible server."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import Response

from whylogs_songbird.server.connections import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    ConnectionLimits,
    default_max_connections,
)
from whylogs_songbird.server.faults import check_fault_rate

#: Environment variable holding comma-separated API keys, read when no keys are given.
API_KEYS_ENV = "SONGBIRD_SERVER_API_KEYS"

#: A hook run before every request (after the emulated latency). Returning a response
#: answers the request with it instead of the app: the seam for fault injection.
RequestHook = Callable[[Request], Awaitable[Response | None]]

MiB = 1024 * 1024


@dataclass(repr=False)
class ServerConfig:
    """Settings of one server instance.

    ``api_keys`` falls back to the comma-separated ``SONGBIRD_SERVER_API_KEYS`` environment
    variable when empty. A key written ``<id>.<secret>:<org-id>`` may only claim sessions into
    that org; a key without ``:<org-id>`` may claim into any org.
    """

    host: str = "127.0.0.1"
    port: int = 8787
    data_dir: Path = field(default_factory=lambda: Path("songbird-data"))
    api_keys: list[str] = field(default_factory=list)
    url_ttl_seconds: int = 900
    max_upload_bytes: int = 256 * MiB
    max_json_bytes: int = 1 * MiB
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
    #: Address space (MB) a sandbox process may take beyond its imports to summarise one profile.
    sandbox_memory_mb: int = 2048
    #: CPU seconds a sandbox process may spend on one profile (it is killed after 2.5x this in wall time).
    sandbox_cpu_seconds: int = 120
    #: A monitors TOML file (see docs/timeline.md): evaluated when a batch lands, failures shown on the timeline.
    monitors: Path | None = None
    #: More ``Host`` names the server answers to, besides its bind address, localhost, the loopback
    #: addresses and the host of ``public_url`` (``"*"``: any host). See ``security.py``.
    allowed_hosts: list[str] = field(default_factory=list)
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
    #: The timeouts and connection cap above, as the connection guard takes them (derived).
    connection_limits: ConnectionLimits = field(init=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if not self.api_keys:
            env_keys = os.environ.get(API_KEYS_ENV, "")
            self.api_keys = [key.strip() for key in env_keys.split(",") if key.strip()]
        else:
            self.api_keys = [key.strip() for key in self.api_keys if key.strip()]
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
                "list_sessions cannot be combined with public_url: a server reached through a public URL must "
                "not show session ids (they open the profiles); leave --list-sessions off"
            )
        self.allowed_hosts = [h.strip() for h in self.allowed_hosts if h.strip()]
        if self.max_connections is None:
            self.max_connections = default_max_connections()
        self.connection_limits = ConnectionLimits(self.header_timeout, self.body_timeout, self.max_connections)
        for name in ("max_session_profiles", "max_session_bytes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
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
            f"max_session_profiles={self.max_session_profiles}, max_session_bytes={self.max_session_bytes})"
        )


def _redacted_url(url: str | None) -> str | None:
    """A database URL without its password (``postgresql://user:***@host/db``)."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
