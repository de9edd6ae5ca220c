"""A local server compatible with the songbird sessions API (described in ``docs/http-api.md``).

Run it with ``python -m whylogs_songbird.server`` or, in tests and notebooks, in a thread::

    from whylogs_songbird.server import LocalServer
    with LocalServer() as server:
        print(server.url)
"""

from whylogs_songbird.server.app import create_app
from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.in_process import LocalServer, run_server
from whylogs_songbird.server.store import SessionRecord, Store, UploadRecord

__all__ = ["LocalServer", "ServerConfig", "SessionRecord", "Store", "UploadRecord", "create_app", "run_server"]
