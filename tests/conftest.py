"""Shared fixtures: local songbird servers on free loopback ports, and small whylogs profiles."""

import os

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")  # before anything imports whylogs

import contextlib  # noqa: E402
import http.server  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from whylogs_songbird.server import LocalServer  # noqa: E402

#: API keys of the ``server`` fixture: one bound to org-test, one that may claim into any org.
ORG_KEY = "testkey.secret:org-test"
ANY_ORG_KEY = "anykey.secret"
TEST_API_KEYS = [ORG_KEY, ANY_ORG_KEY]


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


@contextlib.contextmanager
def http_server_thread(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A plain ``http.server`` with ``handler`` on a free loopback port, in a thread; yields its URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the developer's songbird settings, sessions or outbox.

    Settings from the environment (SONGBIRD_*, WHYLABS_API_ENDPOINT) are removed, and the config
    dir is a fresh temporary one unless a test passes its own.
    """
    for name in list(os.environ):
        if name.startswith("SONGBIRD_") or name in ("WHYLABS_API_ENDPOINT", "WHYLABS_API_KEY"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SONGBIRD_CONFIG_DIR", str(tmp_path_factory.mktemp("songbird-config")))


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
}
STORAGE_NAMES = list(STORAGE_CONFIGS)


@pytest.fixture
def storage_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """ServerConfig keyword arguments of a storage configuration (default: the embedded store);
    ``server_factory`` and ``server`` start their servers with them."""
    name = getattr(request, "param", "embedded")
    return STORAGE_CONFIGS[name](request, tmp_path)


@pytest.fixture
def server_factory(tmp_path: Path, storage_config: dict[str, Any]) -> Iterator[Callable[..., LocalServer]]:
    """Start LocalServers with config keyword arguments; all are stopped at teardown.

    Without ``data_dir`` each server gets a fresh directory under ``tmp_path``; the storage
    configuration (:func:`storage_config`) fills in what is not given.
    """
    started: list[LocalServer] = []
    counter = 0

    def start(**config: Any) -> LocalServer:
        nonlocal counter
        counter += 1
        config.setdefault("data_dir", tmp_path / f"server-{counter}")
        config.setdefault("api_keys", TEST_API_KEYS)
        for name, value in storage_config.items():
            config.setdefault(name, value)
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
