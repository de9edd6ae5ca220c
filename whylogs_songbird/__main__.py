"""``python -m whylogs_songbird`` and the ``songbird`` console script.

The command needs the ``server`` extra (Typer, rich, the local server); the writer does not.
Without the extra, this says so in one line instead of an ImportError traceback.
"""

from __future__ import annotations

import sys

_EXTRA_MODULES = {"typer", "rich", "fastapi", "uvicorn", "jinja2", "plotly", "click"}


def main() -> None:
    try:
        from whylogs_songbird.cli import main as cli_main
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in _EXTRA_MODULES:
            raise
        print(
            f"error: the songbird command needs the server extra ({exc.name} is missing): "
            "pip install 'whylogs-songbird[server]'",
            file=sys.stderr,
        )
        sys.exit(2)
    cli_main()


if __name__ == "__main__":
    main()
