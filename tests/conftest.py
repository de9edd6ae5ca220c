"""Shared fixtures: local songbird servers on free loopback ports, and small whylogs profiles."""

import os

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")  # before anything imports whylogs
# whylogs' writer("whylabs") reads a config file from a public S3 bucket on every write unless this
# is set (read once, at import): nothing outside loopback answers here.
os.environ.setdefault("_WHYLABS_SKIP_CONFIG_READ", "True")

import contextlib  # noqa: E402
import http.server  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from hang_bound import hang_watchdog, rearm_hang_watchdog  # noqa: E402
from services import (  # noqa: E402
    PostgresService,
    S3Service,
    ServiceUnavailable,
    postgres_bin_dir,
    postgres_cluster,
    seaweedfs,
    shared_postgres,
    shared_s3,
    weed_binary,
)

from whylogs_songbird.server import LocalServer  # noqa: E402
from whylogs_songbird.server.store import Store  # noqa: E402

#: API keys of the ``server`` fixture: one bound to org-test, one that may claim into any org.
ORG_KEY = "testkey.secret:org-test"
ANY_ORG_KEY = "anykey.secret"
TEST_API_KEYS = [ORG_KEY, ANY_ORG_KEY]


#: The embedded store's first schema (before ingest states and duplicates), for migration tests.
FIRST_SCHEMA = """CREATE TABLE sessions (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, org_id TEXT NOT NULL,
created_at INTEGER NOT NULL, claimed_at INTEGER, claimed_org TEXT);
CREATE TABLE uploads (id TEXT PRIMARY KEY, session_id TEXT NOT NULL REFERENCES sessions(id),
kind TEXT NOT NULL, dataset_timestamp INTEGER, alias TEXT, segment_tags TEXT NOT NULL DEFAULT '[]',
created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, stored_at INTEGER, size INTEGER,
sha256 TEXT, path TEXT);"""


def make_profile_bytes(n_rows: int = 10, seed: int = 0) -> bytes:
    """The serialized whylogs profile of a small DataFrame with an int, a float and a str column."""
    import pandas as pd
    import whylogs as why

    df = pd.DataFrame(
        {
            "n": [seed + i for i in range(n_rows)],
            "x": [(seed + i) * 0.5 for i in range(n_rows)],
            "s": [f"v{(seed + i) % 3}" for i in range(n_rows)],
        }
    )
    return why.log(df).view().serialize()


def health(url: str, data_dir: Path) -> dict[str, Any]:
    """What ``/healthz`` of the server at ``url`` tells its own user: sent with the token of its data dir."""
    import requests

    from whylogs_songbird.background_server import health_token
    from whylogs_songbird.models import HEALTH_TOKEN_HEADER

    token = health_token(data_dir)
    assert token, f"no health token in {data_dir}"
    answer = requests.get(f"{url}/healthz", headers={HEALTH_TOKEN_HEADER: token}, timeout=10)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


@contextlib.contextmanager
def serving(httpd: http.server.HTTPServer) -> Iterator[str]:
    """``httpd`` (bound to a loopback port) served in a thread; yields its URL, then shuts it down."""
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def http_server_thread(handler: type[http.server.BaseHTTPRequestHandler]) -> contextlib.AbstractContextManager[str]:
    """A plain ``http.server`` with ``handler`` on a free loopback port, in a thread; yields its URL."""
    return serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler))


def free_port() -> int:
    """A port nothing listens on right now (bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test reads or writes the developer's songbird settings, sessions or outbox.

    Settings from the environment (SONGBIRD_*, WHYLABS_API_ENDPOINT) are removed, and the config
    dir is a fresh temporary one unless a test passes its own. The embedded default server gets a
    free port and a temporary data dir (never the real default port), and any server started there by the
    test is stopped afterwards. AWS settings are removed too, and boto3 never asks an
    instance-metadata address for credentials: a test that needs S3 sets the variables of the
    SeaweedFS it uses.
    """
    for name in list(os.environ):
        if name.startswith(("SONGBIRD_", "AWS_")) or name in (
            "WHYLABS_API_ENDPOINT",
            "WHYLABS_API_KEY",
            "WHYLABS_DEFAULT_ORG_ID",
            "WHYLABS_DEFAULT_DATASET_ID",
        ):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SONGBIRD_CONFIG_DIR", str(tmp_path_factory.mktemp("songbird-config")))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    local_dir = tmp_path_factory.mktemp("songbird-local-server")
    port = free_port()
    monkeypatch.setenv("SONGBIRD_LOCAL_PORT", str(port))
    monkeypatch.setenv("SONGBIRD_LOCAL_DATA_DIR", str(local_dir))
    yield
    stop_local_server(port, local_dir)


def stop_local_server(port: int, data_dir: Path) -> None:
    """Stop the embedded default server a test started on ``port`` with ``data_dir`` (if any)."""
    if (data_dir / "server.pid").exists():
        from whylogs_songbird.background_server import stop_server
        from whylogs_songbird.config import resolve_settings

        stop_server(resolve_settings({"local_port": port, "local_data_dir": data_dir}, environ={}))


#: The modules that take longest, longest first (from the durations of a full run). They are
#: collected first, and ``scripts/test`` runs with ``--no-loadscope-reorder``: under ``--dist
#: loadfile`` a worker takes a whole module, so a long one handed out last leaves the other workers
#: idle while it runs. The other modules follow, those with the most tests first (xdist's own order).
SLOWEST_MODULES = [
    "tests/server/api/test_notify.py",
    "tests/server/ingest/test_sandbox.py",
    "tests/server/storage/test_many_hosts.py",
    "tests/client/test_distributed.py",
    "tests/server/storage/test_lifecycle.py",
    "tests/server/storage/test_dataset_deletion.py",
    "tests/server/api/test_workers.py",
    "tests/server/storage/test_team_server.py",
    "tests/server/api/test_server_defences.py",
    "tests/client/test_embedded_default.py",
    "tests/server/observatory/test_dataset_pages.py",
    "tests/cli/test_cli_streams.py",
    "tests/server/timeline/test_timeline_server.py",
    "tests/cli/test_demo.py",
    "tests/test_docs.py",
    "tests/cli/test_check_cli.py",
    "tests/server/storage/test_team_storage.py",
    "tests/server/ingest/test_sketch_fuzz.py",
    "tests/server/observatory/test_session_page.py",
]


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules in the order of :data:`SLOWEST_MODULES`, then by number of tests (a module's tests
    keep their order and stay together)."""
    rank = {module: index for index, module in enumerate(SLOWEST_MODULES)}
    counts = Counter(item.nodeid.partition("::")[0] for item in items)

    def order(item: pytest.Item) -> tuple[int, int, str]:
        module = item.nodeid.partition("::")[0]
        return (rank.get(module, len(rank)), -counts[module], module)

    items.sort(key=order)


@pytest.fixture(autouse=True)
def signal_state_kept(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test leaves this process's SIGINT as it found it: not ignored and not blocked in the main
    thread. Both pass on to every child process the later tests start (an ignored or blocked SIGINT
    survives exec), whose Ctrl-C would then do nothing. A change is undone and reported."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGINT)
    yield
    changed = []
    now = signal.getsignal(signal.SIGINT)
    if now != handler:
        signal.signal(signal.SIGINT, handler)
        changed.append(f"its handler, {handler!r} -> {now!r}")
    if signal.SIGINT in signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT]):
        changed.append("its blocking")
    if changed:
        warnings.warn(f"{request.node.nodeid} changed SIGINT ({', '.join(changed)}); undone", stacklevel=1)


#: Set by scripts/mutation: the directory under which each mutant's pytest run (a process forked by
#: mutmut) keeps its tmp_path directories, see :func:`pytest_configure`.
MUTATION_TMP = "SONGBIRD_MUTATION_TMP"
_OWN_BASETEMP = pytest.StashKey[Path]()
#: test file -> the names asked for in it (see :func:`pytest_pycollect_makeitem`); mutation runs only
_WANTED = pytest.StashKey[dict[str, set[str]]]()
#: the paths of the files (or directories) given on the command line; mutation runs only
_WANTED_PATHS = pytest.StashKey[list[Path]]()


@pytest.hookimpl(tryfirst=True)  # before the tmpdir plugin reads --basetemp
def pytest_configure(config: pytest.Config) -> None:
    """The ``mutation_fast`` marker; and, in a mutation run, a base temp directory of this process's
    own: pytest's numbered directories would otherwise be locked, listed and pruned by every one of
    the run's ~20,000 sessions, all in one directory (see :func:`pytest_unconfigure`)."""
    config.addinivalue_line(
        "markers",
        "mutation_fast(*modules): the test (or module, as pytestmark) is a fast behaviour test of these "
        "source files; scripts/mutation runs it against their mutants",
    )
    config.addinivalue_line(
        "markers",
        "own_sandbox: the test's servers (server_factory) make their own sandbox, not the shared one: for "
        "tests that count, limit or kill a server's sandbox children",
    )
    config.addinivalue_line(
        "markers",
        "hang_bound: with SONGBIRD_TEST_HANG_SECONDS set (scripts/mutation), each of the test's phases (setup "
        "and call, then teardown) that outlasts it ends the run (tests/support/hang_bound.py); for tests that "
        "take well under a second, whose code under test may loop or wait forever when broken",
    )
    mutation_tmp = os.environ.get(MUTATION_TMP)
    if not mutation_tmp:
        return
    _fresh_request_threads()
    config.stash[_WANTED] = _requested_names(config)
    config.stash[_WANTED_PATHS] = [(config.invocation_params.dir / arg.partition("::")[0]) for arg in config.args]
    if config.option.basetemp is None:
        config.option.basetemp = str(Path(mutation_tmp) / f"p{os.getpid()}")
        config.stash[_OWN_BASETEMP] = Path(config.option.basetemp)


def _fresh_request_threads() -> None:
    """A new pool for the routes' ``in_thread``: each mutant's session runs in a process forked (by
    mutmut) from one that has used the pool, whose threads do not exist in the fork, so work handed
    to it there would never run (and its tests would time out, counted as killing the mutant)."""
    from whylogs_songbird.server.routes import deps

    deps._THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix=deps._THREADS._thread_name_prefix)


def pytest_unconfigure(config: pytest.Config) -> None:
    """A mutation run's base temp directory goes with its session (pytest keeps one it was given)."""
    if (own := config.stash.get(_OWN_BASETEMP, None)) is not None:
        shutil.rmtree(own, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[object]:
    """A ``hang_bound`` test's watchdog: armed for setup and call, armed afresh for teardown (pytest
    cancels it when a test fails, and a failed test's teardown may wait for threads that never end)."""
    if item.get_closest_marker("hang_bound") is None:
        return (yield)
    with hang_watchdog():
        return (yield)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if item.get_closest_marker("hang_bound") is not None:
        rearm_hang_watchdog()


def _requested_names(config: pytest.Config) -> dict[str, set[str]]:
    """Test file -> the names of the module-level tests (or classes) its node ids on the command line
    ask for; a file named alone is left out (all of it is wanted)."""
    names: dict[str, set[str]] = {}
    whole = set()
    for arg in config.args:
        path, _, rest = arg.partition("::")
        if rest:
            names.setdefault(path, set()).add(rest.split("::")[0].split("[")[0])
        else:
            whole.add(path)
    return {path: wanted for path, wanted in names.items() if path not in whole}


@pytest.hookimpl(tryfirst=True)
def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """In a mutation run the other files and directories beside those given are passed over at once
    (pytest would match each against its ignore patterns and make it a node, for every session)."""
    wanted = config.stash.get(_WANTED_PATHS, None)
    if wanted is None:
        return None
    near = any(collection_path.is_relative_to(p) or p.is_relative_to(collection_path) for p in wanted)
    return None if near else True


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> list[pytest.Item] | None:
    """In a mutation run a mutant's tests are given as node ids, a few of a file's: only those are
    made into items (pytest would otherwise build every test of the file, then keep the few asked for,
    for each of the run's ~20,000 sessions). Elsewhere pytest's own collection is untouched."""
    wanted = collector.config.stash.get(_WANTED, None)
    if wanted is None or not isinstance(collector, pytest.Module):
        return None
    names = wanted.get(collector.nodeid)
    return [] if names is not None and name not in names else None


def _register_hypothesis_profiles() -> None:
    """The property tests' Hypothesis settings: ``songbird-ci`` (the default) repeats the same
    examples on every run, a few dozen per property, with no deadline on a shared machine and no
    example database; ``HYPOTHESIS_PROFILE=songbird-thorough`` explores many more, randomly;
    ``songbird-mutation`` (scripts/mutation's) is ``songbird-ci`` without shrinking: a mutant is
    killed by the first failing example, and making it smaller only costs time."""
    try:
        from hypothesis import HealthCheck, Phase, settings
    except ImportError:
        return
    settings.register_profile(
        "songbird-ci",
        derandomize=True,
        deadline=None,
        max_examples=40,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile(
        "songbird-thorough", parent=settings.get_profile("songbird-ci"), derandomize=False, max_examples=2000
    )
    settings.register_profile(
        "songbird-mutation",
        parent=settings.get_profile("songbird-ci"),
        phases=[phase for phase in Phase if phase not in (Phase.shrink, Phase.explain)],
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "songbird-ci"))


_register_hypothesis_profiles()


@pytest.fixture(autouse=True, scope="session")
def hypothesis_home_outside_the_tree(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Hypothesis (under schemathesis) keeps caches in ./.hypothesis by default: not in the repository."""
    try:
        from hypothesis.configuration import set_hypothesis_home_dir
    except ImportError:
        return
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))


@pytest.fixture(name="make_profile_bytes")
def make_profile_bytes_fixture() -> Callable[..., bytes]:
    """:func:`make_profile_bytes` as a fixture."""
    return make_profile_bytes


#: Storage configurations a test can run its servers with: a name -> a function of (request,
#: tmp_path) giving ServerConfig keyword arguments (``database_url``, ``blob_store``, ...). A test
#: module runs against several with
#: ``pytestmark = pytest.mark.parametrize("storage_config", STORAGE_NAMES, indirect=True)``.
STORAGE_CONFIGS: dict[str, Callable[[pytest.FixtureRequest, Path], dict[str, Any]]] = {
    "embedded": lambda request, tmp_path: {},
    # PostgreSQL + S3 (SeaweedFS), see team_store_config below.
    "team": lambda request, tmp_path: team_store_config(request, request.getfixturevalue("monkeypatch")),
}
STORAGE_NAMES = list(STORAGE_CONFIGS)


@pytest.fixture
def storage_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """ServerConfig keyword arguments of a storage configuration (default: the embedded store);
    ``server_factory`` and ``server`` start their servers with them."""
    name = getattr(request, "param", "embedded")
    return STORAGE_CONFIGS[name](request, tmp_path)


#: Server settings that change a server's sandbox: a server given one makes its own.
_SANDBOX_SETTINGS = frozenset({"sandbox_memory_mb", "sandbox_cpu_seconds", "max_columns", "ingest_concurrency"})


@pytest.fixture(scope="session")
def shared_sandbox() -> Iterator[Any]:
    """One sandbox of the default limits for this test process's servers (:func:`server_factory`):
    its children, each of which imports whylogs at start (about a CPU-second), are started once
    instead of by every test's server. Nothing of a job stays in a child."""
    from whylogs_songbird.server.app import sandbox_for
    from whylogs_songbird.server.config import ServerConfig

    sandbox = sandbox_for(ServerConfig())
    yield sandbox
    sandbox.close()


@pytest.fixture
def server_factory(
    tmp_path: Path, storage_config: dict[str, Any], shared_sandbox: Any, request: pytest.FixtureRequest
) -> Iterator[Callable[..., LocalServer]]:
    """Start LocalServers with config keyword arguments; all are stopped at teardown.

    Without ``data_dir`` each server gets a fresh directory under ``tmp_path``; the storage
    configuration (:func:`storage_config`) fills in what is not given. The servers read uploads in
    :func:`shared_sandbox`, unless given sandbox settings, started with a sandbox test fault in the
    environment, or in a test marked ``own_sandbox`` (one that counts or kills children).
    """
    from whylogs_songbird.server.sandbox import TEST_FAULT_ENV

    started: list[LocalServer] = []
    counter = 0

    def start(**config: Any) -> LocalServer:
        nonlocal counter
        counter += 1
        config.setdefault("data_dir", tmp_path / f"server-{counter}")
        config.setdefault("api_keys", TEST_API_KEYS)
        for name, value in storage_config.items():
            config.setdefault(name, value)
        own = _SANDBOX_SETTINGS & config.keys() or TEST_FAULT_ENV in os.environ
        if not own and request.node.get_closest_marker("own_sandbox") is None:
            config["sandbox"] = shared_sandbox
        server = LocalServer(**config).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(server_factory: Callable[..., LocalServer]) -> LocalServer:
    """A running server with a temporary data dir and the keys in :data:`TEST_API_KEYS`."""
    return server_factory()


# -- real components of the team server (see services.py) ----------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """An embedded store (SQLite and files) in the test's own directory, closed after the test."""
    opened = Store(tmp_path / "data")
    yield opened
    opened.close()


def _unavailable(exc: ServiceUnavailable) -> None:
    # scripts/test installs both; in CI a missing component is a failure, not a skip.
    if os.environ.get("CI"):
        pytest.fail(f"{exc} (CI must run the team-store tests)")
    pytest.skip(str(exc))


@pytest.fixture(scope="session")
def postgres_service() -> Iterator[PostgresService]:
    """One throwaway PostgreSQL cluster per test session (per xdist worker)."""
    try:
        import psycopg  # noqa: F401

        postgres_bin_dir()
    except ImportError:
        _unavailable(ServiceUnavailable("psycopg is not installed (pip install -e '.[dev]')"))
    except ServiceUnavailable as exc:
        _unavailable(exc)
    shared = shared_postgres()
    if shared is not None:  # one started for many runs (scripts/mutation)
        yield shared
        return
    with postgres_cluster() as service:
        yield service


@pytest.fixture(scope="session")
def s3_service() -> Iterator[S3Service]:
    """One SeaweedFS (S3 gateway with an access key) per test session (per xdist worker)."""
    try:
        import boto3  # noqa: F401

        weed_binary()
    except ImportError:
        _unavailable(ServiceUnavailable("boto3 is not installed (pip install -e '.[dev]')"))
    except ServiceUnavailable as exc:
        _unavailable(exc)
    shared = shared_s3()
    if shared is not None:  # one started for many runs (scripts/mutation)
        yield shared
        return
    with seaweedfs() as service:
        yield service


@pytest.fixture(scope="session")
def s3_bucket(s3_service: S3Service) -> str:
    """One bucket shared by the session's team servers (each gets its own prefix in it)."""
    client = s3_service.client()
    name = s3_service.new_bucket_name()
    client.create_bucket(Bucket=name)  # type: ignore[attr-defined]
    return name


#: Run a test (or, as ``pytestmark``, a module) once per storage configuration: embedded, team.
both_stores = pytest.mark.parametrize("storage_config", STORAGE_NAMES, indirect=True)


def team_store_config(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Server settings of a fresh PostgreSQL schema and a fresh S3 prefix (AWS variables set).

    Works from fixtures of any scope: pass a ``pytest.MonkeyPatch.context()`` from a module one.
    """
    postgres: PostgresService = request.getfixturevalue("postgres_service")
    s3: S3Service = request.getfixturevalue("s3_service")
    bucket: str = request.getfixturevalue("s3_bucket")
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return {
        "database_url": postgres.new_schema(),
        "blob_store": f"s3://{bucket}/team-{secrets.token_hex(6)}",
        "s3_endpoint_url": s3.endpoint_url,
    }


def make_store_config(kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Server settings of the storage configuration ``kind`` from a fixture of any scope (pass
    ``pytest.MonkeyPatch.context()`` from a module-scoped one)."""
    if kind == "embedded":
        return {}
    if kind != "team":
        raise ValueError(f"unknown storage configuration {kind!r}; use one of {STORAGE_NAMES}")
    return team_store_config(request, monkeypatch)
