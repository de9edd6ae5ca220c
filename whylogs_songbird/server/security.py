"""The server's HTTP edge: which ``Host`` names it answers to, and the security headers of every answer.

:class:`HostGate` and :func:`secured`, applied to every request by the app's edge
(``middleware.EdgeMiddleware``; :class:`SecurityMiddleware` is the same as a middleware of its own):

- **Host allow-list.** A web page can point a host name it controls at 127.0.0.1 (DNS rebinding)
  and then read this server's pages and profiles as "same origin". Only requests whose ``Host``
  names this server are answered: the bind address, ``localhost``, every loopback address
  (127.0.0.0/8 and ::1), the host of ``public_url``, for a wildcard bind (``0.0.0.0``, ``::``) the
  machine's own host names and interface addresses, and the names given with ``--allowed-host``
  (``*`` turns the check off). Anything else gets 421 and no data; the answer names the option
  that admits the host.
- **Headers on every answer:** a Content-Security-Policy that runs only the server's own scripts
  (no inline script, no framing), ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``
  (links carry ``sessionToken``) and ``Cache-Control: no-store`` unless the route set its own
  caching (only the static files do).
- A client that goes away before its request body was read is not a server error: no traceback.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from whylogs_songbird.server.common import error_response

logger = logging.getLogger("whylogs_songbird.server")

#: The pages load their scripts, styles and plotly.js from this server only. Inline styles are
#: allowed (plotly sets element styles); inline scripts are not: every script is a file under /static.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

#: The same headers as raw ASGI pairs, and their lower-case names.
_RAW_SECURITY_HEADERS = [
    (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in SECURITY_HEADERS.items()
]
_CACHE_CONTROL = (b"cache-control", b"no-store")
#: How many distinct ``Host`` header values the middleware remembers its verdict on.
_HOST_VERDICTS = 256

#: The option that admits another host name, named in refusals.
ALLOWED_HOST_OPTION = "--allowed-host"
_MAX_HOST_SHOWN = 100


def _normalize(name: str) -> str:
    """A host name or address in one spelling: lower case, no trailing dot, IPv6 without brackets, compressed."""
    name = name.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return ipaddress.ip_address(name).compressed
    except ValueError:
        return name


def host_from_header(value: str) -> str:
    """The host part of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), normalized."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        return _normalize(value[: end + 1] if end > 0 else value)
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return _normalize(value)


def is_wildcard(host: str) -> bool:
    """Whether binding ``host`` listens on every interface (``0.0.0.0``, ``::``, empty)."""
    if not host.strip():
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def machine_names() -> set[str]:
    """This machine's host names and the addresses of its network interfaces."""
    names: set[str] = set()
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(_normalize(name))
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with the server extra
        psutil = None
    if psutil is not None:
        for addresses in psutil.net_if_addrs().values():
            for address in addresses:
                if address.family in (socket.AF_INET, socket.AF_INET6):
                    names.add(_normalize(address.address.split("%", 1)[0]))
    return names


class HostAllowList:
    """The ``Host`` names a server answers to (see the module docstring)."""

    def __init__(self, bind_host: str, public_url: str | None = None, allowed_hosts: Iterable[str] = ()) -> None:
        extra = [h.strip() for h in allowed_hosts if h.strip()]
        self.any_host = "*" in extra
        self.names: set[str] = {"localhost"}
        self.names.update(_normalize(h) for h in extra if h != "*")
        if is_wildcard(bind_host):
            self.names |= machine_names()
        else:
            self.names.add(_normalize(bind_host))
        if public_url:
            public_host = urlsplit(public_url).hostname
            if public_host:
                self.names.add(_normalize(public_host))

    def __repr__(self) -> str:
        return f"HostAllowList({'any host' if self.any_host else sorted(self.names)})"

    def allows(self, host: str) -> bool:
        """Whether a request whose ``Host`` header names ``host`` (already normalized) is answered."""
        if self.any_host or host in self.names or host.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def refusal_message(host: str) -> str:
    shown = host if len(host) <= _MAX_HOST_SHOWN else host[:_MAX_HOST_SHOWN] + "…"
    return (
        f"This server does not answer to the host name {shown!r} (the request's Host header), so that "
        "no web page can reach it through a host name it controls (DNS rebinding). If you reach the server "
        f"under this name, start it with {ALLOWED_HOST_OPTION} {shown} (repeatable), or give its public "
        "address with --public-url."
    )


def secured(message: Message) -> Message:
    """An ``http.response.start`` message with the security headers its app did not set itself
    (a route's own ``Cache-Control`` is kept)."""
    headers = list(message.get("headers", ()))
    present = {name.lower() for name, _ in headers}
    headers.extend(pair for pair in _RAW_SECURITY_HEADERS if pair[0] not in present)
    if _CACHE_CONTROL[0] not in present:
        headers.append(_CACHE_CONTROL)
    return {**message, "headers": headers}


class HostGate:
    """Which requests are answered, by their ``Host`` header (see :class:`HostAllowList`)."""

    def __init__(self, allowed: HostAllowList) -> None:
        self.allowed = allowed
        self._verdicts: dict[bytes, bool] = {}

    def _allowed(self, host_header: bytes) -> bool:
        """Whether a request with this raw ``Host`` header is answered; the verdicts on the last
        few hundred distinct headers are remembered (parsing an address costs more than a request's routing)."""
        verdict = self._verdicts.get(host_header)
        if verdict is None:
            verdict = self.allowed.allows(host_from_header(host_header.decode("latin-1")))
            if len(self._verdicts) >= _HOST_VERDICTS:
                self._verdicts.clear()
            self._verdicts[host_header] = verdict
        return verdict

    def refusal(self, scope: Scope) -> Response | None:
        """The 421 answer to an HTTP request for a foreign ``Host`` name, or None to answer it."""
        host_header = next((value for name, value in scope.get("headers", []) if name == b"host"), None)
        if host_header is None or self._allowed(host_header):
            return None
        host = host_from_header(host_header.decode("latin-1"))
        logger.debug("refused a request for host %r", host[:_MAX_HOST_SHOWN])
        return error_response(421, refusal_message(host), {"Connection": "close"})


class SecurityMiddleware(HostGate):
    """Refuses requests for foreign ``Host`` names (421) and adds the security headers to every
    answer, as an ASGI middleware of its own (the app's edge, ``middleware.EdgeMiddleware``, does
    both within its one layer)."""

    def __init__(self, app: ASGIApp, allowed: HostAllowList) -> None:
        super().__init__(allowed)
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = secured(message)
            await send(message)

        response = self.refusal(scope)
        if response is not None:
            await response(scope, receive, send_with_headers)
            return
        try:
            await self.app(scope, receive, send_with_headers)
        except ClientDisconnect:
            # the client hung up, or was cut off by a read timeout (connections.py), before its body
            # was read: nobody is left to answer, and it is not a server error
            logger.debug("the client went away before its request body was read")


__all__ = [
    "ALLOWED_HOST_OPTION",
    "CONTENT_SECURITY_POLICY",
    "SECURITY_HEADERS",
    "HostAllowList",
    "HostGate",
    "SecurityMiddleware",
    "host_from_header",
    "is_wildcard",
    "machine_names",
    "secured",
]
