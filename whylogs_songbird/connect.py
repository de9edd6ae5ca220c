"""The client that resolved settings describe: the one place a :class:`SongbirdClient` is built from
:class:`~whylogs_songbird.config.Settings`.

It stands above both the settings (``config.py``) and the embedded default server
(``background_server.py``), so that neither needs the other's way back.
"""

from __future__ import annotations

from whylogs_songbird import background_server
from whylogs_songbird.client import SongbirdClient
from whylogs_songbird.config import Settings


def make_client(settings: Settings, endpoint: str | None = None) -> SongbirdClient:
    """The client these settings describe (for ``endpoint`` instead of ``settings.endpoint`` if given).

    For the embedded default, the client makes sure the local server runs (starting it if need
    be) just before its first request: building a client never touches the network.
    """
    target = endpoint or settings.endpoint
    prepare = None
    if settings.embedded and target == settings.endpoint:

        def prepare() -> None:
            background_server.ensure_server(settings)

    return SongbirdClient(
        target,
        prepare=prepare,
        api_key=settings.api_key,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        backoff_factor=settings.backoff,
        pool_size=max(settings.max_workers, 4),
    )


__all__ = ["make_client"]
