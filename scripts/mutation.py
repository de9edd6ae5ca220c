"""Mutation testing of the core modules with mutmut; prints the score per module. Not part of CI.

One mutmut run mutates every chosen module at once, in a throwaway copy of the working tree (so
mutmut's ``mutants/`` directory never lands in the repository): one copy and one stats run for all
of them, not one each (that fixed cost, times the number of modules, was a large share of a full
run); mutmut's clean run, a second pass of the same tests, is skipped once the stats run passed.
Only a module's own fast test files run against its mutants, as if it were mutated alone: mutmut
narrows them to the tests that execute the mutated function, and ``_RUN`` keeps of those only the
ones in files that mark the module, fastest first (mutmut stops at the first failure). A test file
names the modules it holds with a marker, found here without importing it::

    pytestmark = pytest.mark.mutation_fast("whylogs_songbird/monitors.py")

so a new module or test file needs no edit here.

    scripts/mutation                       # every module some test file marks
    scripts/mutation session outbox        # modules whose path contains one of these words
    scripts/mutation -listing              # every module but those whose path contains "listing"
    scripts/mutation --list [words]        # the modules a run would take, their test files, and modules no test marks
    MUTATION_JOBS=2 scripts/mutation       # mutants tested at once (default 1: a shared machine)
    scripts/mutation --estimate [N] [words] # predict a run's cost from N sampled mutants a module
    MUTATION_SCRATCH= scripts/mutation     # keep the run's files in the usual temp dir, not /dev/shm

A broken mutant can leave the servers, relays or database clusters its tests started running: at the
end, every process still working in the run's copy of the tree or its scratch directory is killed.

Each run rewrites ``.mutation/<module>.survivors`` (kept in git) of every module it ran with every
mutant not killed and its diff (mutmut's output and the slowest mutants: ``.mutation/mutation.log``).
A survivor judged equivalent gets a line ``equivalent: <why>`` under its name, written by hand;
the next run keeps that line as long as the same mutant (name and changed lines)
survives, and the table counts the survivors that have none. It also records in
``.mutation/killed-by.json`` (kept in git) the test that killed each killed mutant: the next run
tries that test first, then those that killed the same function's other mutants, and only then
mutmut's fastest-first order (a full run's time went mostly to killed mutants running the faster
tests that pass before the one that fails).
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import resource
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
#: The cross-process lock is therefore not judged here; tests/client/test_session_guarantees.py (not
#: marked, it runs in CI) checks it with real processes.
DESELECT = "not processes"
#: What every mutant's pytest run is given besides its tests. ``no:unraisableexception``: at its end
#: pytest's unraisable-exception plugin runs gc.collect() several times, which in a child forked from
#: a process holding whylogs and pandas took about 0.8 s of the 1.3 s a one-test run took (each
#: collection touches every object, so the child copies the pages of the whole heap); nothing here
#: turns those warnings into failures, so a mutant's verdict does not change without it.
#: ``--assert=plain``: each mutant's pytest run otherwise walks the files of every installed
#: distribution to mark plugins for assertion rewriting, a fifth of its CPU time (0.124 s -> 0.100 s
#: per one-test run, measured in a forked child); a failing assert fails the same, only its message
#: is plainer, and the clean run (same arguments) stops the run if a test needed rewriting.
#: ``--disable-plugin-autoload``: the installed plugins are not loaded (and registered, and scanned for
#: fixtures) by every mutant's run, only Hypothesis', which the property tests use, given to
#: pytest.main as a module by ``_RUN`` (``-p hypothesispytest`` would read every installed
#: distribution's entry points each time); a marked test that needs another plugin (an async test, a
#: timeout mark) fails the clean run, which stops the run. The ``no:`` built-ins provide options and
#: fixtures (tmpdir, subtests) no marked test uses. With :data:`MUTATION_TMP` and the conftest read
#: from bytecode, a one-test session in a forked child took 0.037 CPU-s instead of 0.060 (median of
#: 12, interleaved, load ~11).
PYTEST_ARGS = [
    *("-p", "no:xdist", "-p", "no:cacheprovider", "-p", "no:unraisableexception"),
    "--disable-plugin-autoload",
    *[
        arg
        for name in ("junitxml", "pastebin", "doctest", "stepwise", "setuponly", "setupplan", "subtests", "legacypath")
        for arg in ("-p", f"no:{name}")
    ],
    *("--assert=plain", "-k", DESELECT),
]
#: The variable that tells tests/conftest.py it runs under this script: its value is a directory in
#: which each test session (one per mutant) has a base temp directory named after its process id, and
#: a session given node ids makes only those tests of their files into items. A one-test session on
#: a file of 137 tests otherwise built all 137 and pytest's numbered temp directories were locked,
#: listed and pruned by each of the run's sessions.
MUTATION_TMP = "SONGBIRD_MUTATION_TMP"
#: Mutants tested per module by ``--estimate`` (unless a number follows it).
ESTIMATE_SAMPLE = 12
#: ``--estimate`` names each sampled mutant that held its slot at least this many seconds.
SLOW_MUTANT_SECONDS = 1.0
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
    "whylogs_songbird/server/rollups.py",
    "whylogs_songbird/server/storage/postgres.py",
    "whylogs_songbird/server/storage/s3.py",
    "whylogs_songbird/engines/_common.py",
    "whylogs_songbird/engines/__init__.py",
    "whylogs_songbird/engines/dask.py",
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


def dotted(module: str) -> str:
    """The name mutmut gives a module file in its mutant names (``a/b/c.py`` -> ``a.b.c``)."""
    name = module[: -len(".py")].replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def configure(work: Path, modules: dict[str, list[str]]) -> None:
    """mutmut's settings in the copy's pyproject.toml: these modules, against the union of their tests."""
    tests = sorted({test for files in modules.values() for test in files})
    pyproject = work / "pyproject.toml"
    section = (
        "\n[tool.mutmut]\n"
        + "\n".join(
            [
                'source_paths = ["whylogs_songbird"]',
                f"only_mutate = {json.dumps(sorted(modules))}",
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


#: How ``_RUN`` and ``_ESTIMATE`` end: mutmut's run, then the records it has not written yet.
_MUTMUT_RUN = """
try:
    mutmut_main.cli(["run", "--max-children", sys.argv[2]])
finally:
    save_unsaved()
"""


#: ``mutmut run`` with the tests of each mutated function narrowed to its module's own test files
#: (argv[1]: JSON of dotted module -> test files) and ordered fastest first: by the stats run's
#: time of each test as a mutant pays it, setup, call and teardown (mutmut times the call only, so a
#: test with a costly fixture came first), less the time its thread waited for a CPU (so the order
#: does not follow the others' load on a shared machine), and never less than its CPU time. mutmut's
#: timeouts come from the same times with that wait left in (a loaded machine stretches a mutant's
#: run as it stretched the stats run).
#: With every module mutated at once, the stats run records a function as executed by
#: any test of the union, and a module is judged by its own tests only. mutmut runs a mutant's tests
#: in the order given and stops at the first failure, so a killed mutant usually costs its fastest
#: test. argv[2]: mutants tested at once.
_RUN = """
import json, os, sys, time
import mutmut.__main__ as mutmut_main
import pytest
from mutmut.runners.harness import PytestRunner
from mutmut.state import state
from mutmut.utils.format_utils import get_module_from_key, mangled_name_from_mutant_name

def waited():
    try:  # seconds this thread spent runnable but waiting for a CPU (Linux)
        with open("/proc/thread-self/schedstat") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0

QUIET = os.path.abspath("quiet-test-times.jsonl")  # the stats run's child writes, narrowed() reads

class WholeTestTime:
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        started, queued, cpu = time.monotonic(), waited(), time.process_time()
        try:
            return (yield)
        finally:
            wall = time.monotonic() - started
            state().duration_by_test[item.nodeid] = wall
            # the scheduler's clock and this one drift apart a little: under a heavy load (the
            # wait close to the wall time) their difference alone can come out below the CPU time
            quiet = max(wall - (waited() - queued), time.process_time() - cpu)
            with open(QUIET, "a") as out:
                out.write(json.dumps([item.nodeid, quiet]) + "\\n")

import _hypothesis_pytestplugin

KILLED_BY = os.path.abspath("killed-by.jsonl")  # each killed mutant's child writes, run_all() keeps

class FirstFailure:
    # in a mutant's child: the test that failed, and so killed it (mutmut runs them with -x)
    def pytest_runtest_logreport(self, report):
        mutant = os.environ.get("MUTANT_UNDER_TEST", "")
        if report.failed and "__mutmut_" in mutant:
            with open(KILLED_BY, "a") as out:
                out.write(json.dumps([mutant, report.nodeid]) + "\\n")

execute_pytest = PytestRunner.execute_pytest

def with_hypothesis(self, params, **kwargs):  # see PYTEST_ARGS
    plugins = [*kwargs.pop("plugins", []), _hypothesis_pytestplugin, FirstFailure()]
    return execute_pytest(self, params, plugins=plugins, **kwargs)

PytestRunner.execute_pytest = with_hypothesis
run_stats = PytestRunner.run_stats

def timed_stats(self, *, tests):
    execute = self.execute_pytest
    plugin = WholeTestTime()
    self.execute_pytest = lambda params, **kw: execute(params, **{**kw, "plugins": [*kw.get("plugins", []), plugin]})
    try:
        return run_stats(self, tests=tests)
    finally:
        del self.execute_pytest

PytestRunner.run_stats = timed_stats
files_by_module = {module: set(files) for module, files in json.loads(sys.argv[1]).items()}
collect = mutmut_main.collect_or_load_stats

quiet_times = {}

def narrowed(*args, **kwargs):
    collect(*args, **kwargs)
    durations = quiet_times
    durations.update(state().duration_by_test)
    if os.path.exists(QUIET):
        with open(QUIET) as times:
            durations.update(json.loads(line) for line in times)
    tests_by_function = state().tests_by_mangled_function_name
    for function, tests in list(tests_by_function.items()):
        own = files_by_module.get(get_module_from_key(function), set())
        tests_by_function[function] = sorted(
            (test for test in tests if test.split("::")[0] in own), key=lambda test: (durations.get(test, 0.0), test)
        )

mutmut_main.collect_or_load_stats = narrowed
make_runner = mutmut_main.get_mutant_runner
stats_passed = []

def runner_trusting_its_stats_run(*args, **kwargs):
    # the clean run runs the same tests with the same arguments (-x) as the stats run just did, and a
    # failing stats run already stopped mutmut: skipped when this process ran all of them and they
    # passed (not when the stats came from a file), a serial pass of every marked test saved
    runner = make_runner(*args, **kwargs)
    collect_stats, run_clean_tests = runner.collect_stats, runner.run_clean_tests

    def collect_all(tests):
        code = collect_stats(tests)
        stats_passed.append(code == 0 and not tests)
        return code

    runner.collect_stats = collect_all
    runner.run_clean_tests = lambda tests: 0 if stats_passed == [True] else run_clean_tests(tests)
    submit = runner.submit

    def killers_first(mutant_name, tests, *args):
        # the test that killed this mutant in an earlier run, then those that killed its function's
        # other mutants (most kills first), ahead of mutmut's fastest-first order: a mutant killed
        # again costs one test, not every faster one that passes before it. mutmut's child sorts by
        # duration_by_test, so the hints are given the lowest durations until the child is forked.
        own = killed_by.get(mutant_name)
        function = killers_of.get(mangled_name_from_mutant_name(mutant_name), {})
        hints = [own] if own else []
        hints += sorted((t for t in function if t != own), key=lambda t: (-function[t], t))
        given = set(tests)
        hints = [t for t in hints if t in given]
        durations = state().duration_by_test
        saved = {test: durations[test] for test in hints if test in durations}
        for rank, test in enumerate(hints):
            durations[test] = -1.0 + rank * 1e-6
        try:
            return submit(mutant_name, tests, *args)
        finally:
            durations.update(saved)

    runner.submit = killers_first
    startup = runner.startup

    def sized_startup():
        # each mutant's child is a fork of this process, which ran the stats run: a fork copies the
        # page tables of its whole heap (about 30 ms for half a gigabyte here)
        with open("/proc/self/status") as status:
            rss = next((int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:")), 0.0)
        print(f"mutmut's process before its first mutant: {rss:.0f} MB")
        startup()

    runner.startup = sized_startup
    return runner

KNOWN_KILLERS = os.path.join(".mutation", "killed-by.json")
killed_by = {}  # mutant -> the test that killed it (kept in git)
if os.path.exists(KNOWN_KILLERS):
    with open(KNOWN_KILLERS) as known:
        killed_by = json.load(known)
killers_of = {}  # mangled function name -> {test: mutants of it that test killed}
for mutant, test in killed_by.items():
    counts = killers_of.setdefault(mangled_name_from_mutant_name(mutant), {})
    counts[test] = counts.get(test, 0) + 1

mutmut_main.get_mutant_runner = runner_trusting_its_stats_run

# mutmut's parent process recounts every module's verdicts before each mutant it starts, to print its
# progress line, and rewrites the mutant's whole module record after each verdict: both grow with the
# run (a full run's parent spent half its CPU, a third of one core, in the count alone, taken from
# the two mutants' children). Here the line is printed at most once a second, and the records are
# written at most every ten seconds and when mutmut is done.
print_stats = mutmut_main.print_stats
printed_at = [0.0]

def print_stats_now_and_then(data, force_output=False):
    if force_output or time.monotonic() - printed_at[0] >= 1.0:
        printed_at[0] = time.monotonic()
        print_stats(data, force_output=force_output)

mutmut_main.print_stats = print_stats_now_and_then
register = mutmut_main._register_mutant_result
unsaved = {}
saved_at = [time.monotonic()]
PARENT = os.getpid()

def save_unsaved():
    if os.getpid() == PARENT:  # never from a mutant's child
        for data in unsaved.values():
            data.save()
        unsaved.clear()
        saved_at[0] = time.monotonic()

def register_then_save_now_and_then(result, by_name):
    data = by_name[result.mutant_name]
    data.save = lambda: None  # an attribute of this record, over its class's method
    try:
        register(result, by_name)
    finally:
        del data.save
    unsaved[id(data)] = data
    if time.monotonic() - saved_at[0] >= 10.0:
        save_unsaved()

mutmut_main._register_mutant_result = register_then_save_now_and_then
""" + _MUTMUT_RUN


#: ``--estimate``: the same copy, mutant generation, stats run, narrowing and clean run (of every
#: test) as ``_RUN``, then only a fixed sample of each module's mutants (seeded: the same sample for
#: the same mutants) tested by mutmut's own runner. Each mutant's child appends to argv[5] one JSON
#: line: its name, exit code, CPU seconds (its own and its reaped children's; a fork starts its
#: counters at zero), wall seconds, and wall seconds less the time it waited for a CPU ("quiet": what
#: it would take on an idle machine). argv[3]: mutants sampled per module; argv[4]: where to write,
#: per module, its mutant count, the sample, and what the stats run predicts (seconds of its narrowed
#: tests: the fastest one, as for a mutant killed at once, and all of them, as for a survivor).
_ESTIMATE = _RUN.replace(
    _MUTMUT_RUN,
    """
import os, random, resource, time
from mutmut.runners.harness import PytestRunner
from mutmut.utils.format_utils import mangled_name_from_mutant_name

per_module = int(sys.argv[3])
sampled = []
collect_data = mutmut_main.collect_source_file_mutation_data

def sample(*, mutant_names):
    mutants, by_path = collect_data(mutant_names=mutant_names)
    by_module = {}
    for entry in mutants:
        by_module.setdefault(get_module_from_key(entry[1]), []).append(entry)
    durations = quiet_times
    tests_by_function = state().tests_by_mangled_function_name
    summary = {}
    for module, entries in sorted(by_module.items()):
        fastest = every = 0.0
        for _, name, _ in entries:
            tests = tests_by_function.get(mangled_name_from_mutant_name(name), [])
            fastest += durations.get(tests[0], 0.0) if tests else 0.0
            every += sum(durations.get(test, 0.0) for test in tests)
        chosen = random.Random(module).sample(entries, min(per_module, len(entries)))
        sampled.extend(chosen)
        limits = {name: sum(durations.get(test, 0.0) for test in tests_by_function.get(
            mangled_name_from_mutant_name(name), [])) for _, name, _ in chosen}
        summary[module] = {"mutants": len(entries), "fastest": fastest, "every": every,
                           "sample": [name for _, name, _ in chosen], "tests_time": limits}
    with open(sys.argv[4], "w") as out:
        json.dump(summary, out)
    return sampled, by_path

run_tests = PytestRunner.run_tests

def timed(self, *, mutant_name, tests):
    started, queued = time.monotonic(), waited()
    code = run_tests(self, mutant_name=mutant_name, tests=tests)
    if mutant_name:
        used = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        cpu = sum(u.ru_utime + u.ru_stime for u in used)
        wall = time.monotonic() - started
        quiet = wall - (waited() - queued)
        line = json.dumps({"name": mutant_name, "code": code, "cpu": cpu, "wall": wall, "quiet": quiet})
        with open(sys.argv[5], "a") as out:
            out.write(line + "\\n")
    return code

mutmut_main.collect_source_file_mutation_data = sample
PytestRunner.run_tests = timed
"""
    + _MUTMUT_RUN,
)


def outcomes(work: Path, module: str) -> dict[str, tuple[str, float]]:
    """mutant name -> (mutmut's status, seconds its tests took), for one module, in mutmut's order."""
    from mutmut.stats import status_by_exit_code  # the venv's mutmut (scripts/mutation installs it)

    path = work / "mutants" / (module + ".meta")
    if not path.is_file():  # nothing in it to mutate
        return {}
    meta = json.loads(path.read_text())
    durations = meta.get("durations_by_key", {})
    return {
        name: (status_by_exit_code[code], float(durations.get(name, 0.0)))
        for name, code in meta["exit_code_by_key"].items()
    }


def survivors_need(work: Path, modules: list[str]) -> list[tuple[float, str, float, float]]:
    """Per surviving mutant, largest first: the timeout multiplier it needed (its tests' wall time over
    mutmut's estimate of their time plus its 1 s constant: a lower TIMEOUT_MULTIPLIER would have cut it
    off, a false kill), its name, its time, and the estimate. The evidence for TIMEOUT_MULTIPLIER."""
    from mutmut.stats import status_by_exit_code

    found = []
    for module in modules:
        path = work / "mutants" / (module + ".meta")
        if not path.is_file():
            continue
        meta = json.loads(path.read_text())
        durations, estimates = meta.get("durations_by_key", {}), meta.get("estimated_durations_by_key", {})
        for name, code in meta["exit_code_by_key"].items():
            if status_by_exit_code[code] == "survived" and name in durations and name in estimates:
                took, estimate = float(durations[name]), float(estimates[name])
                found.append((took / (estimate + 1.0), name, took, estimate))
    return sorted(found, reverse=True)


def tally(found: dict[str, tuple[str, float]]) -> dict[str, int]:
    """Mutants per outcome, keyed as ``mutmut export-cicd-stats`` keys them."""
    counts: dict[str, int] = {}
    for status, _ in found.values():
        counts[status.replace(" ", "_")] = counts.get(status.replace(" ", "_"), 0) + 1
    return counts


#: mutmut's statuses, besides "killed", of a mutant its tests caught, listed in ``.survivors`` but
#: counted as killed: cut off by mutmut's timeout, or the tests' process ended by a signal
#: ("segfault": SIGSEGV or SIGKILL; a mutant whose worker spins without waiting was seen ending so).
DETECTED = ("timeout", "segfault")
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


def known_reason(known: dict[tuple[str, tuple[str, ...]], str], name: str, changed: tuple[str, ...]) -> str | None:
    """The reason ``known`` gives for the mutant ``name`` changing ``changed``; or, when none is known
    under that name, the one given for the only mutant of the same function with the same change
    (mutmut numbers a function's mutants in order, so an edit that adds or drops one renumbers the rest)."""
    if (name, changed) in known:
        return known[(name, changed)]
    function = name.rsplit("__mutmut_", 1)[0]
    same = [
        why for (other, lines), why in known.items() if lines == changed and other.rsplit("__mutmut_", 1)[0] == function
    ]
    return same[0] if len(same) == 1 else None


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


def survivors(
    found: dict[str, tuple[str, float]], diffs: dict[str, str], known: dict[tuple[str, tuple[str, ...]], str]
) -> tuple[str, int]:
    """Every mutant not killed, with its diff and the reason ``known`` gives for it (if the same
    mutant); and how many have no reason."""
    text = []
    unexplained = 0
    for name, (status, _) in found.items():
        if status == "killed":
            continue
        line = f"{name}: {status}"
        if status == "no tests":  # a function no test runs: its name says enough
            unexplained += 1
            text.append(f"{line}\n")
        else:
            diff = diffs[name]
            why = known_reason(known, name, _changed(diff.splitlines()))
            unexplained += why is None and status not in DETECTED
            text.append(f"{line}\n" + (f"{REASON}{why}\n" if why else "") + diff)
    return "\n".join(text), unexplained


#: Fixtures of tests/conftest.py (and its both_stores mark) that start PostgreSQL or SeaweedFS (or both,
#: for the team store).
_NEEDS = {
    "postgres": ("postgres_service", "team_store_config", "storage_config", "make_store_config", "both_stores"),
    "s3": ("s3_service", "s3_bucket", "team_store_config", "storage_config", "make_store_config", "both_stores"),
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
        sys.path.insert(0, str(ROOT / "tests" / "support"))  # where pytest finds it too (pyproject's pythonpath)
        import services

        if "postgres" in needed and self.postgres is None:
            self.postgres = self.stack.enter_context(services.postgres_cluster())
        if "s3" in needed and self.s3 is None:
            self.s3 = self.stack.enter_context(services.seaweedfs())
        return services.shared_services_env(self.postgres, self.s3)


#: Where the run keeps its files when it can: a memory file system. Tests make a store (SQLite,
#: files) in a fresh tmp_path; on a disk shared with other work each fsync waits for it, which made
#: the store's fast tests 27 s of wall for 7 CPU-s (5.5 s on tmpfs), and each mutant pays it again.
#: ``MUTATION_SCRATCH=`` (empty) keeps the usual temp dir; another path puts the run there.
SCRATCH = os.environ.get("MUTATION_SCRATCH", "/dev/shm")  # noqa: S108 (a fresh TemporaryDirectory in it)


@contextlib.contextmanager
def scratch_dir() -> Any:
    """A directory on :data:`SCRATCH` for the whole run (the tree's copy, the services' data and,
    through TMPDIR, every test's tmp_path), removed at the end; None (the usual temp dir) without it."""
    if not (SCRATCH and os.path.isdir(SCRATCH) and os.access(SCRATCH, os.W_OK)):
        yield None
        return
    with tempfile.TemporaryDirectory(dir=SCRATCH, prefix="songbird-mutation-") as scratch:
        # PostgreSQL, run as its own user, passes through (x only, no listing) to its cluster directory
        os.chmod(scratch, 0o711)  # noqa: S103
        before, tempfile.tempdir = tempfile.tempdir, scratch
        try:
            yield scratch
        finally:
            tempfile.tempdir = before


def sweep(directory: str | Path) -> int:
    """Kill every process still running in ``directory`` or below it (its working directory):
    servers, relays and database clusters that a mutant's tests started and, broken, never stopped.
    Returns how many there were."""
    inside = Path(directory).resolve()
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:  # gone, or not ours to read
            continue
        if cwd == inside or inside in cwd.parents:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed


def _swept(directory: str | Path) -> None:
    if killed := sweep(directory):
        print(f"stopped {killed} process(es) that mutants' tests left running", file=sys.stderr)


def main(words: list[str]) -> int:
    jobs = os.environ.get("MUTATION_JOBS", "1")
    modules = discover()
    sample = 0
    if words[:1] == ["--estimate"]:
        words = words[1:]
        sample = int(words.pop(0)) if words and words[0].isdigit() else ESTIMATE_SAMPLE
    listing = words[:1] == ["--list"]
    # a word with a leading "-" leaves out the modules whose path contains the rest of it
    left_out = [w[1:] for w in words[listing:] if w.startswith("-") and len(w) > 1]
    words = [w for w in words[listing:] if not w.startswith("-")]
    chosen = {
        m: t
        for m, t in modules.items()
        if (not words or any(w in m for w in words)) and not any(w in m for w in left_out)
    }
    if not chosen:
        print(f"no module matches {words}; modules: {', '.join(modules)}", file=sys.stderr)
        return 2
    if listing:  # what a run with the same words would mutate, and with which test files
        for module, tests in chosen.items():
            print(f"{module:45} {' '.join(tests)}")
        for module in EXPECTED:
            if module not in modules and (not words or any(w in module for w in words)):
                print(f"{module:45} (no test file marks it)")
        return 0
    # a mutant can leave a thread waiting forever: tests that know it end their run after this long
    env = {**os.environ, "WHYLOGS_NO_ANALYTICS": "True", "SONGBIRD_TEST_HANG_SECONDS": "6"}
    # pytest imports tests/conftest.py afresh in every mutant's session: from bytecode (written in the
    # run's copy of the tree), not compiled from source each time (0.048 -> 0.045 CPU-s a session)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # property tests stop at their first failing example instead of shrinking it (tests/conftest.py)
    env.setdefault("HYPOTHESIS_PROFILE", "songbird-mutation")
    # stopped with SIGTERM: leave through the ExitStack, so the services it started are stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(scratch_dir())
        if scratch is not None:
            env["TMPDIR"] = scratch
        # each test session's own base temp directory, in here (tests/conftest.py's pytest_configure)
        env[MUTATION_TMP] = stack.enter_context(tempfile.TemporaryDirectory(prefix="songbird-mutation-tmp-"))
        if scratch is not None:
            stack.callback(_swept, scratch)  # last of all: after the services stopped, before the directory goes
        needed = services_needed(sorted({test for tests in chosen.values() for test in tests}))
        if sample:
            return estimate(chosen, {**env, **Services(stack).env(needed)}, jobs, sample)
        rows = run_all(chosen, {**env, **Services(stack).env(needed)}, jobs)
    report(rows, jobs, time.monotonic() - started)
    return 0


def cpu_of_children() -> float:
    """CPU seconds (user and system) of this process's children reaped so far."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def estimate(chosen: dict[str, list[str]], env: dict[str, str], jobs: str, per_module: int) -> int:
    """``--estimate``: what a full run of ``chosen`` would cost, from a sample of ``per_module`` mutants
    of each module tested for real (see ``_ESTIMATE``), in CPU seconds (the machine is shared: wall
    time says more about the others' load than about the run). Per module: its mutants, the mean CPU
    and wall seconds of a sampled mutant, the CPU its mutants would take, and the stats run's
    prediction from its tests' durations alone (fastest test per mutant .. all of them); then the
    fixed cost (copy, generation, stats and clean runs: everything but the mutants' own children)
    and a predicted wall time for MUTATION_JOBS on this machine's cores."""
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="songbird-mutation-") as tmp:
        work = Path(tmp)
        summary_path, records_path = work / "estimate.json", work / "estimate.jsonl"
        cpu_before, started = cpu_of_children(), time.monotonic()
        copy_tree(work)
        configure(work, chosen)
        log = ROOT / ".mutation" / "estimate.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "w") as out:
            argv = [json.dumps({dotted(m): t for m, t in chosen.items()}), jobs, str(per_module)]
            done = subprocess.run(  # noqa: S603
                [sys.executable, "-c", _ESTIMATE, *argv, str(summary_path), str(records_path)],
                cwd=work,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _swept(work)
        cpu, wall = cpu_of_children() - cpu_before, time.monotonic() - started
        if done.returncode != 0 or not summary_path.is_file():
            print(f"mutmut failed (exit {done.returncode}); see {log}", file=sys.stderr)
            return 1
        summary = json.loads(summary_path.read_text())
        records = {}
        if records_path.is_file():
            records = {r["name"]: r for r in map(json.loads, records_path.read_text().splitlines())}
        found = {name: status for m in chosen for name, (status, _) in outcomes(work, m).items()}
        # a child that ended itself (a test's hang watchdog exits at once) wrote no record, but
        # mutmut timed it: its wall time stands for all three (its CPU is not known, at most that)
        for m in chosen:
            for name, (status, took) in outcomes(work, m).items():
                if name not in records and status not in ("timeout", "no tests") and took > 0:
                    records[name] = {"name": name, "code": "exited", "cpu": took, "quiet": took, "wall": took}
    print(
        f"\n{'module':45} {'mutants':>7} {'sampled':>7} {'cpu/mut':>8} {'quiet/mut':>9} {'wall/mut':>8}"
        f" {'cpu-s':>7} {'slot-s':>7} {'stats: fastest..all':>20} {'timeouts':>8}"
    )
    total_cpu = total_slot = sampled_cpu = 0.0
    all_timeouts: list[str] = []
    for module in chosen:
        row = summary.get(dotted(module))
        if row is None:
            print(f"{module:45} {0:>7}")
            continue
        names = row["sample"]
        timed = [records[n] for n in names if n in records]
        # a mutant with no tests costs nothing; one cut off by its timeout writes no record
        untested = sum(found.get(n) == "no tests" for n in names)
        timeouts = [n for n in names if n not in records and found.get(n) != "no tests"]
        all_timeouts += timeouts
        mean = {key: sum(r[key] for r in timed) / len(names) if names else 0.0 for key in ("cpu", "quiet", "wall")}
        # a mutant cut off by its timeout holds its slot until mutmut's wall limit, half its CPU limit:
        # (its tests' stats time + mutmut's timeout_constant of 1 s) x TIMEOUT_MULTIPLIER
        cut_off = sum((row["tests_time"][n] + 1.0) * TIMEOUT_MULTIPLIER for n in timeouts)
        # the time a mutant holds one of the JOBS slots: between its CPU time (what an idle machine
        # would take if it never slept) and its wall time less the time its main thread waited for a
        # CPU (which still counts its other threads' waits and its disk waits on a loaded machine)
        cpu_s = (mean["cpu"] + cut_off / len(names)) * row["mutants"] if names else 0.0
        slot = (sum(max(r["cpu"], r["quiet"]) for r in timed) + cut_off) / len(names) if names else 0.0
        total_cpu += cpu_s
        total_slot += slot * row["mutants"]
        sampled_cpu += sum(r["cpu"] for r in timed)
        bounds = f"{row['fastest']:.0f}..{row['every']:.0f}s"
        print(
            f"{module:45} {row['mutants']:>7} {len(names):>7} {mean['cpu']:>8.3f} {mean['quiet']:>9.3f}"
            f" {mean['wall']:>8.3f} {cpu_s:>6.0f}s {slot * row['mutants']:>6.0f}s {bounds:>20} {len(timeouts):>8}"
            + (f"  ({untested} no tests)" if untested else "")
        )
    slow = sorted(
        (r for r in records.values() if max(r["cpu"], r["quiet"]) >= SLOW_MUTANT_SECONDS),
        key=lambda r: -max(r["cpu"], r["quiet"]),
    )
    if slow:  # what to look at first to make a run cheaper: a test waiting for real, or a hang
        print(f"\nsampled mutants that held a slot {SLOW_MUTANT_SECONDS:.0f} s or more (cpu, quiet wall, exit code):")
        for r in slow:
            print(f"  {r['name']:70} {r['cpu']:6.2f} {r['quiet']:7.2f}  {r['code']}")
    if all_timeouts:
        print("sampled mutants cut off by their timeout: " + ", ".join(all_timeouts))
    fixed = cpu - sampled_cpu
    parallel = min(int(jobs), cores)
    print(
        f"\nsample run: {wall:.0f}s wall, {cpu:.0f} CPU-s; of these {fixed:.0f} CPU-s outside the sampled mutants"
        " (copy, generation, stats and clean runs, fork server)"
    )
    low, high = (total_cpu / parallel + fixed) / 60, (total_slot / parallel + fixed) / 60
    print(
        f"predicted full run with MUTATION_JOBS={jobs} on {cores} cores, a quiet machine: {low:.1f} to {high:.1f} min"
        f" ({total_cpu:.0f} CPU-s to {total_slot:.0f} slot-s of mutants / {parallel} at once + {fixed:.0f} CPU-s fixed)"
    )
    return 0


def keep_killers(work: Path, found: dict[str, dict[str, tuple[str, float]]]) -> None:
    """``.mutation/killed-by.json``: for each killed mutant of the modules just run, the test that
    killed it (the others' entries stay). The next run tries that test first (``_RUN``)."""
    path = ROOT / ".mutation" / "killed-by.json"
    known: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    ran = {dotted(module) for module in found}
    kept = {name: test for name, test in known.items() if name.rpartition(".x")[0] not in ran}
    records = work / "killed-by.jsonl"
    killed = {name for results in found.values() for name, (status, _) in results.items() if status == "killed"}
    if records.is_file():
        for name, test in map(json.loads, records.read_text().splitlines()):
            if name in killed:
                kept.setdefault(name, test)
    path.write_text(json.dumps(dict(sorted(kept.items())), indent=0) + "\n")


def run_all(chosen: dict[str, list[str]], env: dict[str, str], jobs: str) -> list[tuple[str, Any, float]]:
    """Mutate the ``chosen`` modules in one throwaway copy of the tree, each against its own tests:
    per module (module, stats or None, seconds its mutants' tests took)."""
    log = ROOT / ".mutation" / "mutation.log"
    log.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="songbird-mutation-") as tmp:
        work = Path(tmp)
        copy_tree(work)
        configure(work, chosen)
        with open(log, "w") as out:
            done = subprocess.run(  # noqa: S603
                [sys.executable, "-c", _RUN, json.dumps({dotted(m): t for m, t in chosen.items()}), jobs],
                cwd=work,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _swept(work)
        if done.returncode != 0:
            print(f"mutmut failed (exit {done.returncode}); see {log}", file=sys.stderr)
            return [(module, None, 0.0) for module in chosen]
        found = {module: outcomes(work, module) for module in chosen}
        keep_killers(work, found)
        shows = [n for r in found.values() for n, (status, _) in r.items() if status not in ("killed", "no tests")]
        diffs = shown(work, shows)
        rows = []
        for module, results in found.items():
            stats: dict[str, Any] = tally(results)
            kept = ROOT / ".mutation" / (module.replace("/", "_") + ".survivors")
            text, stats["unexplained"] = survivors(results, diffs, reasons(kept.read_text() if kept.is_file() else ""))
            kept.write_text(text)
            rows.append((module, stats, sum(took for _, took in results.values())))
        slowest = sorted(
            ((took, name, status) for r in found.values() for name, (status, took) in r.items()), reverse=True
        )
        with open(log, "a") as out:
            out.write("\nmutant-seconds per module by status, most first (where a run's time goes):\n")
            for module, results in sorted(found.items(), key=lambda item: -sum(t for _, t in item[1].values())):
                spent: dict[str, float] = {}
                for status, took in results.values():
                    spent[status] = spent.get(status, 0.0) + took
                shares = sorted(spent.items(), key=lambda item: -item[1])
                out.write(f"{module:50} " + "  ".join(f"{status} {took:.0f}s" for status, took in shares) + "\n")
            out.write("\nslowest mutants (seconds, name, status):\n")
            out.writelines(f"{took:8.1f} {name} {status}\n" for took, name, status in slowest[:40])
            need = survivors_need(work, list(chosen))
            out.write(
                f"\nsurvivors' time / (their tests' estimated time + 1 s), largest first (mutmut cuts a mutant"
                f" off at {TIMEOUT_MULTIPLIER}):\n"
            )
            out.writelines(
                f"{ratio:8.2f} {name} {took:.2f}s, estimate {est:.2f}s\n" for ratio, name, took, est in need[:10]
            )
    return rows


def report(rows: list[tuple[str, Any, float]], jobs: str, wall: float) -> None:
    """The table: per module its mutants, how many were killed, the score, the unexplained survivors,
    and the seconds its mutants' tests took (mutants run MUTATION_JOBS at once, so these add up to
    about JOBS times the wall time spent on mutants, not to the run's time: that is the last line)."""
    print(
        f"\n{'module':45} {'mutants':>7} {'killed':>7} {'survived':>9} {'no tests':>9} {'score':>7}"
        f" {'unexplained':>11} {'mutant-s':>8}"
    )
    for module, stats, took in rows:
        if stats is None:
            print(f"{module:45} {'failed':>7}")
            continue
        killed = stats.get("killed", 0) + sum(stats.get(status, 0) for status in DETECTED)
        survived = stats.get("survived", 0) + stats.get("suspicious", 0)
        untested = stats.get("no_tests", 0)
        tested = killed + survived + untested
        percent = 100 * killed / tested if tested else 0.0
        print(
            f"{module:45} {tested:>7} {killed:>7} {survived:>9} {untested:>9} {percent:>6.1f}%"
            f" {stats['unexplained']:>11} {took:>7.0f}s"
        )
    print(f"\n{len(rows)} module(s) in {wall:.0f}s with MUTATION_JOBS={jobs}")
    print(
        "Mutants not killed, with their diffs and any 'equivalent:' reason: .mutation/<module>.survivors;"
        " mutmut's output and the slowest mutants: .mutation/mutation.log"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
