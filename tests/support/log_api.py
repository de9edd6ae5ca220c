"""The WhyLabs log API in tests: an org, its keys, a dataset, frames to log, a server and whylogs
pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pandas as pd
from whylogs.api.whylabs.session import session_manager
from whylogs.api.whylabs.session.whylabs_client_cache import WhylabsClientCache
from whylogs.api.writer import whylabs_base

ORG = "org-logapi"
DATASET = "model-7"
# whylogs' format: a 10-character key id, '.', the secret, ':' and the org id
KEY = "K3yId0001A.s3cretS3cretS3cret:" + ORG
OTHER_ORG_KEY = "K3yId0002B.an0therS3cret0000:org-other"
DAY_MS = 86_400_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS


def frame(rows: int, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "amount": [float(offset + i) for i in range(rows)],
            "region": ["north" if i % 3 else "south" for i in range(rows)],
        }
    )


def start_log_server(server_factory):
    """A server that knows the org's key and a key of another org (the ``log_server`` fixture)."""
    return server_factory(api_keys=[KEY, OTHER_ORG_KEY])


def pointing_whylabs(monkeypatch, tmp_path) -> Iterator[Callable[..., None]]:
    """The ``whylabs_env`` fixture: ``point(url, key=KEY)``, which sets whylogs' settings and caches
    for a WhyLabs writer talking to ``url``."""

    def point(url: str, key: str = KEY) -> None:
        assert url.startswith("http://127.0.0.1:")
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        for name in ("WHYLABS_PRIVATE_S3_ENDPOINT", "WHYLABS_PRIVATE_API_ENDPOINT", "WHYLABS_SESSION_ID"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.setenv("WHYLABS_API_ENDPOINT", url)
        monkeypatch.setenv("WHYLABS_API_KEY", key)
        monkeypatch.setenv("WHYLABS_DEFAULT_ORG_ID", ORG)
        monkeypatch.setenv("WHYLABS_DEFAULT_DATASET_ID", DATASET)
        monkeypatch.setenv("WHYLOGS_CONFIG_PATH", str(tmp_path / "whylogs-config"))
        monkeypatch.setenv("WHYLOGS_NO_ANALYTICS", "True")
        monkeypatch.setenv("_WHYLABS_SKIP_CONFIG_READ", "1")
        monkeypatch.setattr(whylabs_base, "_WHYLABS_SKIP_CONFIG_READ", True)  # read once, at import
        # as in a pipeline that never calls why.init(): whylogs makes its default session on the first write
        # (a session of type WHYLABS, made by why.init(), would upload inside why.log() too)
        session_manager.SessionManager.reset()
        WhylabsClientCache.reset()

    yield point
    WhylabsClientCache.reset()
    session_manager.SessionManager.reset()
