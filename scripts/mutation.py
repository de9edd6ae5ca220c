"""Mutation testing of the core modules with mutmut; prints the score per module. Not part of CI.

Each module in MODULES is mutated on its own, in a throwaway copy of the working tree (so
mutmut's ``mutants/`` directory never lands in the repository), and only the test files listed
for it run against its mutants (mutmut narrows that further to the tests that execute the mutated
function). Edit MODULES when a module moves or a test file is added.

    scripts/mutation                       # every module
    scripts/mutation session outbox        # modules whose path contains one of these words
    MUTATION_JOBS=2 scripts/mutation       # mutants tested at once (default 1: a shared machine)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: module to mutate -> the test files that check it. Tests that start several processes are left
#: out (-k below): each would take half a minute per mutant. The cross-process lock is therefore
#: not judged here; tests/test_session_guarantees.py checks it with the lock planted away.
MODULES: dict[str, list[str]] = {
    "whylogs_songbird/session.py": ["tests/test_session_store.py", "tests/test_session_guarantees.py"],
    "whylogs_songbird/outbox/storage.py": ["tests/test_outbox_store.py", "tests/test_outbox.py"],
    "whylogs_songbird/outbox/delivery.py": ["tests/test_publish_logic.py", "tests/test_outbox.py"],
    "whylogs_songbird/publish.py": ["tests/test_publish_logic.py"],
    "whylogs_songbird/client.py": ["tests/test_client_logic.py"],
    "whylogs_songbird/server/signing.py": ["tests/test_signing.py"],
    "whylogs_songbird/server/store.py": ["tests/test_store_logic.py", "tests/test_upload_path.py"],
    "whylogs_songbird/server/storage/sql.py": ["tests/test_store_logic.py", "tests/test_upload_path.py"],
    "whylogs_songbird/server/storage/files.py": ["tests/test_blob_files.py"],
}
DESELECT = "not processes"


def copy_tree(dest: Path) -> None:
    """The working tree's files known to git (tracked or new, not ignored), copied to ``dest``."""
    listing = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    names = subprocess.run(listing, cwd=ROOT, check=True, capture_output=True).stdout.decode()  # noqa: S603,S607
    for name in filter(None, names.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def configure(work: Path, module: str, tests: list[str]) -> None:
    pyproject = work / "pyproject.toml"
    section = (
        "\n[tool.mutmut]\n"
        + "\n".join(
            [
                'source_paths = ["whylogs_songbird"]',
                f"only_mutate = {json.dumps([module])}",
                f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
                f"pytest_add_cli_args = {json.dumps(['-p', 'no:xdist', '-p', 'no:cacheprovider', '-k', DESELECT])}",
                "use_git_change_detection = false",
            ]
        )
        + "\n"
    )
    pyproject.write_text(pyproject.read_text() + section)


def score(work: Path) -> dict[str, int]:
    """Mutants per outcome, from ``mutmut export-cicd-stats``."""
    subprocess.run([sys.executable, "-m", "mutmut", "export-cicd-stats"], cwd=work, check=True, capture_output=True)
    return json.loads((work / "mutants" / "mutmut-cicd-stats.json").read_text())


def survivors(work: Path) -> str:
    """Every mutant not killed, with its diff."""
    done = subprocess.run([sys.executable, "-m", "mutmut", "results"], cwd=work, capture_output=True, text=True)
    text = []
    for line in done.stdout.splitlines():
        name = line.strip().split(":")[0]
        if name:
            show = [sys.executable, "-m", "mutmut", "show", name]
            shown = subprocess.run(show, cwd=work, capture_output=True, text=True)  # noqa: S603
            text.append(f"{line.strip()}\n{shown.stdout}")
    return "\n".join(text)


def main(words: list[str]) -> int:
    jobs = os.environ.get("MUTATION_JOBS", "1")
    chosen = {m: t for m, t in MODULES.items() if not words or any(w in m for w in words)}
    if not chosen:
        print(f"no module matches {words}; modules: {', '.join(MODULES)}", file=sys.stderr)
        return 2
    # a mutant can leave a thread waiting forever: tests that know it end their run after this long
    env = {**os.environ, "WHYLOGS_NO_ANALYTICS": "True", "SONGBIRD_TEST_HANG_SECONDS": "6"}
    rows = []
    for module, tests in chosen.items():
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="songbird-mutation-") as tmp:
            work = Path(tmp)
            copy_tree(work)
            configure(work, module, tests)
            log = ROOT / ".mutation" / (module.replace("/", "_") + ".log")
            log.parent.mkdir(exist_ok=True)
            with open(log, "w") as out:
                done = subprocess.run(  # noqa: S603
                    [sys.executable, "-m", "mutmut", "run", "--max-children", jobs],
                    cwd=work,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            if done.returncode != 0:
                print(f"{module}: mutmut failed (exit {done.returncode}); see {log}", file=sys.stderr)
                rows.append((module, None, time.monotonic() - started))
                continue
            stats = score(work)
            log.with_suffix(".survivors").write_text(survivors(work))
            rows.append((module, stats, time.monotonic() - started))
        print(f"{module}: done in {rows[-1][2]:.0f}s", flush=True)
    print(f"\n{'module':45} {'killed':>7} {'survived':>9} {'no tests':>9} {'score':>7}")
    for module, stats, _ in rows:
        if stats is None:
            print(f"{module:45} {'failed':>7}")
            continue
        killed = stats.get("killed", 0) + stats.get("timeout", 0)
        survived = stats.get("survived", 0) + stats.get("suspicious", 0)
        untested = stats.get("no_tests", 0)
        tested = killed + survived + untested
        percent = 100 * killed / tested if tested else 0.0
        print(f"{module:45} {killed:>7} {survived:>9} {untested:>9} {percent:>6.1f}%")
    print(
        "\nMutants not killed, with their diffs: .mutation/<module>.survivors; mutmut's output: .mutation/<module>.log"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
