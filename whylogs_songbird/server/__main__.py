"""``python -m whylogs_songbird.server``: run the server (options: ``--help``, see ``cli.py``)."""

from __future__ import annotations

import sys

from whylogs_songbird.server.cli import main

if __name__ == "__main__":
    sys.exit(main())
