"""A local server compatible with the songbird sessions API (described in ``docs/http-api.md``).

Run it with ``python -m whylogs_songbird.server`` or, in tests and notebooks, in a thread::

    from whylogs_songbird.server import LocalServer
    with LocalServer() as server:
        print(server.url)

The names below are imported on first use: a process that needs one module of the package (a
sandbox child reading profiles, the CLI asking a running server) does not import the web app.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from whylogs_songbird.server.app import create_app
    from whylogs_songbird.server.config import ServerConfig
    from whylogs_songbird.server.in_process import LocalServer, run_server
    from whylogs_songbird.server.store import SessionRecord, Store, UploadRecord

_HOMES = {
    "create_app": "app",
    "ServerConfig": "config",
    "LocalServer": "in_process",
    "run_server": "in_process",
    "SessionRecord": "store",
    "Store": "store",
    "UploadRecord": "store",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


__all__ = ["LocalServer", "ServerConfig", "SessionRecord", "Store", "UploadRecord", "create_app", "run_server"]
