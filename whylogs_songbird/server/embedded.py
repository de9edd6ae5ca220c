"""The old name of :mod:`whylogs_songbird.server.in_process` (the server run in this process), whose
documented names are importable from here for one more release."""

from whylogs_songbird.server.in_process import LocalServer, run_server

__all__ = ["LocalServer", "run_server"]
