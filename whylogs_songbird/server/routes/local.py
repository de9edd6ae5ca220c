"""Local extras: ``/_local/stats`` (operation counters, kept in the store so every worker
process agrees) and ``/healthz``."""

from __future__ import annotations

import hmac
import os
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from starlette.concurrency import run_in_threadpool

from whylogs_songbird.models import HEALTH_TOKEN_FILE, HEALTH_TOKEN_HEADER
from whylogs_songbird.server.lifecycle import disk_usage
from whylogs_songbird.server.routes.deps import StoreDep

router = APIRouter(tags=["local"])


@router.get("/_local/stats")
async def local_stats(store: StoreDep) -> dict[str, int]:
    """Calls per operation (for tests and benchmarks): since the server started on the embedded store;
    on a team store, every host's since the store was made (a start resets nothing shared). And the
    disk used: ``stored_profiles`` and ``stored_bytes``."""
    return await run_in_threadpool(lambda: {**store.stats(), **disk_usage(store)})


@router.get("/healthz")
async def healthz(
    request: Request,
    store: StoreDep,
    token: Annotated[
        str | None,
        Header(
            alias=HEALTH_TOKEN_HEADER,
            description=f"The token in <data dir>/{HEALTH_TOKEN_FILE}: adds the details to the answer.",
        ),
    ] = None,
) -> dict[str, Any]:
    """Liveness check: ``{"status": "ok"}``. With the token of the server's data dir (a file only
    the server's user can read), also who answers: service, version, process id, start time in
    epoch ms, data dir, how many sessions the store holds and the disk it uses (``stored_profiles``,
    ``stored_bytes``)."""
    expected: str = request.app.state.health_token
    if token is None or not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), expected.encode()):
        return {"status": "ok"}
    from whylogs_songbird import __version__

    config = request.app.state.config
    return {
        "status": "ok",
        "service": "songbird",
        "version": __version__,
        "pid": os.getpid(),
        "started_at": request.app.state.started_at,
        "data_dir": str(config.data_dir) if config.data_dir is not None else None,
        "sessions": await run_in_threadpool(store.session_count),
        **await run_in_threadpool(disk_usage, store),
    }
