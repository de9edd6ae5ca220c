"""Mutation testing of the core modules with mutmut; prints the score per module. Not part of CI.

Each module is mutated on its own, in a throwaway copy of the working tree (so mutmut's
``mutants/`` directory never lands in the repository), and only its fast test files run against
its mutants (mutmut narrows that further to the tests that execute the mutated function). A test
file names the modules it holds with a marker, found here without importing it::

    pytestmark = pytest.mark.mutation_fast("whylogs_songbird/monitors.py")

so a new module or test file needs no edit here.

    scripts/mutation                       # every module some test file marks
    scripts/mutation session outbox        # modules whose path contains one of these words
    scripts/mutation --list                # the modules, their test files, and modules no test marks
    MUTATION_JOBS=2 scripts/mutation       # mutants tested at once (default 1: a shared machine)

Each run rewrites ``.mutation/<module>.survivors`` (kept in git) with every mutant not killed and
its diff. A survivor judged equivalent gets a line ``equivalent: <why>`` under its name, written
by hand; the next run keeps that line as long as the same mutant (name and changed lines)
survives, and the table counts the survivors that have none.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

MARKER = "mutation_fast"
#: Tests that start several processes are left out (-k): each would take half a minute per mutant.
#: The cross-process lock is therefore not judged here; tests/client/test_session_guarantees.py checks it
#: with the lock planted away.
DESELECT = "not processes"
#: What every mutant's pytest run is given besides its tests. ``no:unraisableexception``: at its end
#: pytest's unraisable-exception plugin runs gc.collect() several times, which in a child forked from
#: a process holding whylogs and pandas took about 0.8 s of the 1.3 s a one-test run took (each
#: collection touches every object, so the child copies the pages of the whole heap); nothing here
#: turns those warnings into failures, so a mutant's verdict does not change without it.
PYTEST_ARGS = ["-p", "no:xdist", "-p", "no:cacheprovider", "-p", "no:unraisableexception", "-k", DESELECT]
#: mutmut's timeout_multiplier (see configure).
TIMEOUT_MULTIPLIER = 15
#: Modules that should be held by fast tests: ``--list`` names those no test file marks yet.
EXPECTED = (
    "whylogs_songbird/timeline.py",
    "whylogs_songbird/monitors.py",
    "whylogs_songbird/check.py",
    "whylogs_songbird/timeline_client.py",
    "whylogs_songbird/background_server.py",
    "whylogs_songbird/server/timeline_service.py",
    "whylogs_songbird/server/routes/timeline.py",
    "whylogs_songbird/server/ingest.py",
    "whylogs_songbird/server/profile_check.py",
    "whylogs_songbird/server/sandbox.py",
    "whylogs_songbird/server/sketch_check.py",
    "whylogs_songbird/server/security.py",
    "whylogs_songbird/server/connections.py",
    "whylogs_songbird/server/quotas.py",
    "whylogs_songbird/server/digest.py",
    "whylogs_songbird/server/storage/postgres.py",
    "whylogs_songbird/server/storage/s3.py",
    "whylogs_songbird/engines/_common.py",
)


def marked_modules(path: Path) -> list[str]:
    """The modules a test file marks with ``pytest.mark.mutation_fast(...)`` (as pytestmark or on a test)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == MARKER:
            found += [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return found


def discover(root: Path = ROOT) -> dict[str, list[str]]:
    """module to mutate -> the test files that mark it, both sorted; a marked module that does not
    exist is an error (a module moved: its tests' markers must follow)."""
    modules: dict[str, list[str]] = {}
    for path in sorted((root / "tests").rglob("test_*.py")):
        for module in marked_modules(path):
            if not (root / module).is_file():
                raise SystemExit(f"{path.relative_to(root)} marks {module}, which does not exist")
            files = modules.setdefault(module, [])
            if str(path.relative_to(root)) not in files:
                files.append(str(path.relative_to(root)))
    return dict(sorted(modules.items()))


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
                f"pytest_add_cli_args = {json.dumps(PYTEST_ARGS)}",
                "use_git_change_detection = false",
                # a mutant that hangs is cut off after this many times its tests' usual time (plus one
                # second): under a heavy load 8 cut off mutants whose tests were only slow, and a
                # timeout counts as killed, so mutmut's own 15 stays
                f"timeout_multiplier = {TIMEOUT_MULTIPLIER}",
            ]
        )
        + "\n"
    )
    pyproject.write_text(pyproject.read_text() + section)


def score(work: Path) -> dict[str, int]:
    """Mutants per outcome, from ``mutmut export-cicd-stats``."""
    subprocess.run([sys.executable, "-m", "mutmut", "export-cicd-stats"], cwd=work, check=True, capture_output=True)
    return json.loads((work / "mutants" / "mutmut-cicd-stats.json").read_text())


#: The first line of a survivor's block in a ``.survivors`` file: ``<mutant name>: <status>``.
_HEADER = re.compile(r"^([\w.]+__mutmut_\d+): [\w ]+$")
#: The line that names a survivor equivalent, written by hand under its header.
REASON = "equivalent: "


def _changed(block: list[str]) -> tuple[str, ...]:
    """The diff lines a mutant changes (so a reason follows its mutant, not a name reused after an edit)."""
    return tuple(line for line in block if line.startswith(("+", "-")) and not line.startswith(("+++", "---")))


def reasons(text: str) -> dict[tuple[str, tuple[str, ...]], str]:
    """(mutant name, changed lines) -> the ``equivalent:`` reason given for it in a ``.survivors`` text."""
    found: dict[tuple[str, tuple[str, ...]], str] = {}
    blocks: list[list[str]] = []
    for line in text.splitlines():
        if _HEADER.match(line):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    for block in blocks:
        why = [line[len(REASON) :].strip() for line in block if line.startswith(REASON)]
        if why:
            found[(_HEADER.match(block[0]).group(1), _changed(block))] = " ".join(why)  # type: ignore[union-attr]
    return found


#: Prints what ``mutmut show NAME`` prints for every name given, each followed by a NUL line, in one
#: process: a ``mutmut show`` each spent seconds starting (one per survivor, minutes for a module).
_SHOW_ALL = """
import sys
from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant
from mutmut.stats import status_by_exit_code
found = None
for name in sys.argv[1:]:
    if found is None or name not in found.exit_code_by_key:
        found = find_mutant(name)
    print(f"# {name}: {status_by_exit_code[found.exit_code_by_key[name]]}")
    print(get_diff_for_mutant(name, path=found.path))
    print("\\0")
"""


def shown(work: Path, names: list[str]) -> dict[str, str]:
    """What ``mutmut show`` prints of each mutant named: in one process, or (when mutmut's internals
    moved) one ``mutmut show`` each."""
    if not names:
        return {}
    done = subprocess.run([sys.executable, "-c", _SHOW_ALL, *names], cwd=work, capture_output=True, text=True)  # noqa: S603
    parts = done.stdout.split("\0\n")
    if done.returncode == 0 and len(parts) == len(names) + 1:
        return dict(zip(names, parts))
    show = [sys.executable, "-m", "mutmut", "show"]
    return {name: subprocess.run([*show, name], cwd=work, capture_output=True, text=True).stdout for name in names}  # noqa: S603


def survivors(work: Path, known: dict[tuple[str, tuple[str, ...]], str]) -> tuple[str, int]:
    """Every mutant not killed, with its diff and the reason ``known`` gives for it (if the same
    mutant); and how many have no reason."""
    done = subprocess.run([sys.executable, "-m", "mutmut", "results"], cwd=work, capture_output=True, text=True)
    text = []
    unexplained = 0
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip().split(":")[0]]
    diffs = shown(work, [line.split(":")[0] for line in lines if not line.endswith(": no tests")])
    for line in lines:
        name = line.split(":")[0]
        if line.endswith(": no tests"):  # a function no test runs: its name says enough
            unexplained += 1
            text.append(f"{line}\n")
        else:
            diff = diffs[name]
            why = known.get((name, _changed(diff.splitlines())))
            unexplained += why is None and not line.endswith(": timeout")  # a timeout counts as killed
            text.append(f"{line}\n" + (f"{REASON}{why}\n" if why else "") + diff)
    return "\n".join(text), unexplained


#: Fixtures of tests/conftest.py that start PostgreSQL or SeaweedFS (or both, for the team store).
_NEEDS = {
    "postgres": ("postgres_service", "team_store_config", "storage_config", "make_store_config"),
    "s3": ("s3_service", "s3_bucket", "team_store_config", "storage_config", "make_store_config"),
}


def services_needed(tests: list[str]) -> set[str]:
    """Which services (``postgres``, ``s3``) these test files' fixtures start."""
    text = "\n".join((ROOT / name).read_text(encoding="utf-8") for name in tests)
    return {service for service, fixtures in _NEEDS.items() if any(f in text for f in fixtures)}


class Services:
    """PostgreSQL and SeaweedFS started once for the whole run, when a module's tests need them: a
    test session started per mutant would otherwise start its own (seconds each). Tests find them
    through the environment (``TEST_SHARED_SERVICES``, see tests/services.py)."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.stack = stack
        self.postgres: object = None
        self.s3: object = None

    def env(self, needed: set[str]) -> dict[str, str]:
        if not needed:
            return {}
        sys.path.insert(0, str(ROOT / "tests"))
        import services

        if "postgres" in needed and self.postgres is None:
            self.postgres = self.stack.enter_context(services.postgres_cluster())
        if "s3" in needed and self.s3 is None:
            self.s3 = self.stack.enter_context(services.seaweedfs())
        return services.shared_services_env(self.postgres, self.s3)


def main(words: list[str]) -> int:
    jobs = os.environ.get("MUTATION_JOBS", "1")
    modules = discover()
    if words == ["--list"]:
        for module, tests in modules.items():
            print(f"{module:45} {' '.join(tests)}")
        for module in EXPECTED:
            if module not in modules:
                print(f"{module:45} (no test file marks it)")
        return 0
    chosen = {m: t for m, t in modules.items() if not words or any(w in m for w in words)}
    if not chosen:
        print(f"no module matches {words}; modules: {', '.join(modules)}", file=sys.stderr)
        return 2
    # a mutant can leave a thread waiting forever: tests that know it end their run after this long
    env = {**os.environ, "WHYLOGS_NO_ANALYTICS": "True", "SONGBIRD_TEST_HANG_SECONDS": "6"}
    rows = []
    # stopped with SIGTERM: leave through the ExitStack, so the services it started are stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.ExitStack() as stack:
        shared = Services(stack)
        for module, tests in chosen.items():
            rows.append(run_module(module, tests, {**env, **shared.env(services_needed(tests))}, jobs))
            print(f"{module}: done in {rows[-1][2]:.0f}s", flush=True)
    report(rows, jobs)
    return 0


def run_module(module: str, tests: list[str], env: dict[str, str], jobs: str) -> tuple[str, Any, float]:
    """Mutate ``module`` in a throwaway copy of the tree against ``tests``: (module, stats or None, seconds)."""
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
            return module, None, time.monotonic() - started
        stats = score(work)
        kept = log.with_suffix(".survivors")
        text, stats["unexplained"] = survivors(work, reasons(kept.read_text() if kept.is_file() else ""))
        kept.write_text(text)
    return module, stats, time.monotonic() - started


def report(rows: list[tuple[str, Any, float]], jobs: str) -> None:
    """The table: per module its mutants, how many were killed, the score, the unexplained survivors, the time."""
    print(
        f"\n{'module':45} {'mutants':>7} {'killed':>7} {'survived':>9} {'no tests':>9} {'score':>7}"
        f" {'unexplained':>11} {'time':>6}"
    )
    for module, stats, took in rows:
        if stats is None:
            print(f"{module:45} {'failed':>7}")
            continue
        killed = stats.get("killed", 0) + stats.get("timeout", 0)
        survived = stats.get("survived", 0) + stats.get("suspicious", 0)
        untested = stats.get("no_tests", 0)
        tested = killed + survived + untested
        percent = 100 * killed / tested if tested else 0.0
        print(
            f"{module:45} {tested:>7} {killed:>7} {survived:>9} {untested:>9} {percent:>6.1f}%"
            f" {stats['unexplained']:>11} {took:>5.0f}s"
        )
    print(f"\n{len(rows)} module(s) in {sum(took for _, _, took in rows):.0f}s with MUTATION_JOBS={jobs}")
    print(
        "Mutants not killed, with their diffs and any 'equivalent:' reason: .mutation/<module>.survivors;"
        " mutmut's output: .mutation/<module>.log"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
