"""Where the repository's own files are, for tests that read them (docs, examples, notebooks)."""

from pathlib import Path

#: The repository's root directory (this file is tests/support/paths.py).
REPO_ROOT = Path(__file__).resolve().parents[2]
