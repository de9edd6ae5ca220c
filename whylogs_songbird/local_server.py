"""The old name of :mod:`whylogs_songbird.background_server` (the background server of the embedded
default), whose documented functions are importable from here for one more release."""

from whylogs_songbird.background_server import ensure_server, server_command, stop_server

__all__ = ["ensure_server", "server_command", "stop_server"]
