"""Small helpers shared by app.py, faults.py and observatory.py: observatory links, segment labels
and JSON error answers. This module imports none of them, so any of them can import it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse

from whylogs_songbird.models import GUEST_MODEL_ID, ErrorResponse

_LABEL_SPECIALS = frozenset(',="\\')


def _label_part(text: str) -> str:
    """A key or value as written in a segment label: as is, or quoted when it holds ``, = " \\``."""
    if not _LABEL_SPECIALS.intersection(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def segment_label(tags: Sequence[tuple[str, str]]) -> str:
    """``key=value,key=value``: how links name a segment (the ``segment`` query parameter).

    A key or value holding ``,``, ``=``, ``"`` or a backslash is quoted (``a="b,c=d"``, with ``\\"`` and
    ``\\\\`` inside), so two different sets of tags never share a label and a label names one segment exactly.
    """
    return ",".join(f"{_label_part(k)}={_label_part(v)}" for k, v in tags)


#: The base URLs of requests, by what makes them (see :func:`base_url`); at most this many kept.
_REQUEST_BASES: dict[tuple[Any, ...], str] = {}
_MAX_REQUEST_BASES = 256


def base_url(public_url: str | None, request: Request) -> str:
    """Where links start: the configured public URL, else the address the request was sent to.

    A request's base URL depends only on its scheme, server address, root path and ``Host``
    header, so the last few hundred are remembered (Starlette builds and parses a URL for it)."""
    if public_url:
        return public_url.rstrip("/")
    scope = request.scope
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    key = (scope.get("scheme"), scope.get("server"), scope.get("app_root_path", scope.get("root_path", "")), host)
    base = _REQUEST_BASES.get(key)
    if base is None:
        base = str(request.base_url).rstrip("/")
        if len(_REQUEST_BASES) >= _MAX_REQUEST_BASES:
            _REQUEST_BASES.clear()
        _REQUEST_BASES[key] = base
    return base


def observatory_link(base: str, session_id: str, profiles: Sequence[str | int], segments: Sequence[str] = ()) -> str:
    """``<base>/resources/model-1/profiles?profile=…[&profile=…]&sessionToken=…[&segment=…]``.

    ``profiles`` are batch timestamps, reference ids (``ref-…``) or batch upload ids (``log-…``);
    ``segments`` are :func:`segment_label` values. Every value is URL-encoded.
    """
    params: list[tuple[str, str]] = [("profile", str(p)) for p in profiles]
    params.append(("sessionToken", session_id))
    params.extend(("segment", s) for s in segments)
    return f"{base}/resources/{GUEST_MODEL_ID}/profiles?{urlencode(params)}"


def is_loopback_host(host: str) -> bool:
    """Whether a server bound to ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost).

    Anything else, including ``0.0.0.0``, ``::`` and host names, may be reachable from other machines.
    """
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def client_key(address: str) -> str:
    """Who a remote address is, for per-client limits: the address itself, or for IPv6 its /64
    network (one subscriber usually holds a whole /64, so single addresses would be free to spend)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return address


def session_gone(session_id: str) -> str:
    """The opening of every answer about a session that a guest route cannot use. An unknown and a
    claimed session get the same words, so no answer tells a stranger whether a session exists."""
    return f"Session {session_id[:80]} is unknown to this server, or was claimed into an organization"


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON error answer shaped like ``models.ErrorResponse``."""
    return JSONResponse(ErrorResponse(message=message).to_wire(), status_code=status, headers=headers)


__all__ = ["client_key", "error_response", "is_loopback_host", "observatory_link", "segment_label", "session_gone"]
