"""The benchmarks' way to the shared helpers in tests/support: a server in its own process, and its CPU time."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

from server_processes import NO_CLIENT_RATE_LIMITS, cpu_seconds, server_process  # noqa: E402

__all__ = ["NO_CLIENT_RATE_LIMITS", "cpu_seconds", "server_process"]
