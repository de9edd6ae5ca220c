"""Local extras: ``/_local/stats`` (operation counters, kept in the store so every worker
process agrees) and ``/healthz``."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from whylogs_songbird.server.routes.deps import StoreDep

router = APIRouter(tags=["local"])


@router.get("/_local/stats")
async def local_stats(store: StoreDep) -> dict[str, int]:
    """Calls per operation since the server started (for tests and benchmarks)."""
    return await run_in_threadpool(store.stats)


@router.get("/healthz")
async def healthz(request: Request, store: StoreDep) -> dict[str, Any]:
    """Liveness check: who answers (service, version, process id, start time in epoch ms, data
    dir) and how many sessions the store holds."""
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
    }
