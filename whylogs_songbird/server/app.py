"""The FastAPI app of the local songbird-compatible server. :func:`create_app` only wires:

- ``routes/sessions.py``: the seven session operations; ``routes/uploads.py``: presigned PUTs;
  ``routes/local.py``: ``/_local/stats`` and ``/healthz``; ``observatory/``: the pages;
- ``auth.py``: API keys; ``middleware.py``: the app's one middleware (host check, security headers,
  body limits, latency emulation and fault injection, unexpected errors, request durations);
- the store (``app.state.store``), reached by routes through ``routes/deps.py``.

Every API error answers JSON ``{"message": "..."}`` (``models.ErrorResponse``) with a sentence that
says what to do (the observatory pages answer HTML error pages); bad input never causes a 500.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from whylogs_songbird.monitors import load_monitors
from whylogs_songbird.server.auth import ApiKeyRing, KeyOwner
from whylogs_songbird.server.common import error_response
from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.errors import ApiError
from whylogs_songbird.server.ingest import IngestWorker, heartbeat_of
from whylogs_songbird.server.lifecycle import PurgeWorker
from whylogs_songbird.server.middleware import BodyTooLargeError, EdgeMiddleware, RequestCounter
from whylogs_songbird.server.notify import check_targets, mount_notifications
from whylogs_songbird.server.observatory import mount_observatory
from whylogs_songbird.server.ratelimits import ClientRateLimits
from whylogs_songbird.server.routes import lifecycle, local, organizations, sessions, uploads
from whylogs_songbird.server.routes.deps import add_routes, describe_validation_errors
from whylogs_songbird.server.routes.deps import check_text as _check_text  # noqa: F401 - reached here by tests
from whylogs_songbird.server.routes.timeline import mount_timeline
from whylogs_songbird.server.sandbox import Sandbox, SandboxLimits
from whylogs_songbird.server.security import HostAllowList, HostGate
from whylogs_songbird.server.signing import UrlSigner, load_or_create_health_token, load_or_create_secret
from whylogs_songbird.server.storage.base import SessionGoneError
from whylogs_songbird.server.store import Store, now_ms
from whylogs_songbird.server.sweep import SlotSweeper
from whylogs_songbird.server.unexpected import UNEXPECTED_MESSAGE, RepeatedErrors
from whylogs_songbird.server.warmup import warm_in_background

logger = logging.getLogger("whylogs_songbird.server")


def _openapi_without_422(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, without FastAPI's 422 answers (this server answers 400 instead)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                operation.get("responses", {}).pop("422", None)
        schemas = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


#: The answer to a write whose session or dataset a deletion removed after the route found it.
SESSION_GONE_MESSAGE = (
    "The session or dataset this request writes to was deleted meanwhile, so nothing was written; "
    "start a new session, or write to the dataset again to make it afresh."
)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(SessionGoneError)
    async def _session_gone(_: Request, exc: SessionGoneError) -> JSONResponse:
        return error_response(404, SESSION_GONE_MESSAGE)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, describe_validation_errors(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = (
                f"There is no route {request.method} {request.url.path}; "
                "see the songbird API contract for the routes this server answers."
            )
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see the songbird API contract."
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:  # raised outside the routes
        app.state.unexpected_errors.report(exc)
        return error_response(500, UNEXPECTED_MESSAGE)


def sandbox_for(config: ServerConfig) -> Sandbox:
    """The sandbox an app of ``config`` reads uploaded bytes in: its limits, and a child per ingest
    thread plus one for a page that summarises a profile the worker has not reached yet."""
    return Sandbox(
        SandboxLimits(
            memory_bytes=config.sandbox_memory_mb * 1024 * 1024,
            cpu_seconds=config.sandbox_cpu_seconds,
            wall_seconds=config.sandbox_cpu_seconds * 2.5,
            max_columns=config.max_columns,
        ),
        max_children=config.ingest_concurrency + 1,
    )


def create_app(config: ServerConfig, store: Store | None = None, sandbox: Sandbox | None = None) -> FastAPI:
    """Build the app. ``app.state`` carries ``config``, ``store``, ``signer``, ``api_keys`` (hashes only),
    ``health_token`` (see ``routes/local.py``) and ``ingest`` (the background ingest worker,
    running while the app runs).

    A store passed in stays owned by the caller; otherwise one is opened on ``config.data_dir``
    and closed when the app shuts down. So does a sandbox (:func:`sandbox_for`): one passed in, as
    several servers started one after another in one process may share, keeps its children.
    """
    monitors = load_monitors(config.monitors) if config.monitors else None  # a bad file fails before anything opens
    check_targets(monitors, smtp_url=config.smtp_url)
    owns_store = store is None
    the_store = store if store is not None else Store.open(config)

    requests_in_flight = RequestCounter()
    # uploaded bytes are deserialized only in the sandbox's child processes
    owns_sandbox = sandbox is None
    sandbox = sandbox if sandbox is not None else sandbox_for(config)
    heartbeat_of(the_store).lease_ms = round(config.claim_lease_seconds * 1000)
    worker = IngestWorker(
        the_store, sandbox=sandbox, concurrency=config.ingest_concurrency, busy=requests_in_flight.busy
    )
    sweeper = SlotSweeper(the_store, interval=config.slot_sweep_seconds, grace_seconds=config.slot_sweep_grace_seconds)
    purger = PurgeWorker(the_store, retention_seconds=config.retention_seconds)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # every upload this process records, however it landed, runs the timeline's hook once
        the_store.add_landed_hook(timeline.upload_landed)
        warm_in_background()  # what the first page pays once, paid now; readiness does not wait
        worker.start()
        sweeper.start()
        purger.start()
        if notifications is not None:
            notifications.start()
        try:
            yield
        finally:
            if notifications is not None:
                await run_in_threadpool(notifications.stop)
            await run_in_threadpool(purger.stop)
            await run_in_threadpool(sweeper.stop)
            await run_in_threadpool(worker.stop)
            the_store.remove_landed_hook(timeline.upload_landed)
            await run_in_threadpool(timeline.close)
            if owns_sandbox:
                await run_in_threadpool(sandbox.close)
            if owns_store:
                the_store.close()

    app = FastAPI(
        title="songbird (local)",
        summary="A local server compatible with the songbird sessions API of WhyLabs.",
        lifespan=lifespan,
        redoc_url=None,
        # FastAPI's own OpenTelemetry is off: the server sends nothing anywhere (an OTLP export
        # would leave the machine), and asking on every request whether it is set up costs CPU
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
    )
    app.openapi = lambda: _openapi_without_422(app)  # type: ignore[method-assign]
    app.state.config = config
    app.state.store = the_store
    app.state.signer = UrlSigner(load_or_create_secret(config.data_dir))
    app.state.health_token = load_or_create_health_token(config.data_dir)
    app.state.api_keys = ApiKeyRing(config.api_keys)
    app.state.rate_limits = ClientRateLimits.of(config)
    app.state.started_at = now_ms()
    app.state.ingest = worker
    app.state.sandbox = sandbox
    app.state.wake_ingest = worker.wake
    app.state.unexpected_errors = RepeatedErrors(logger)
    _add_error_handlers(app)
    add_routes(app.router, sessions.router)
    add_routes(app.router, uploads.router)
    add_routes(app.router, lifecycle.router)
    # Session ids open their profiles: the landing page lists them only when asked (never with a public URL).
    mount_observatory(app, the_store, public_url=config.public_url, list_sessions=config.list_sessions, sandbox=sandbox)
    timeline = mount_timeline(app, the_store, public_url=config.public_url, monitors=monitors)
    add_routes(app.router, organizations.router)  # the WhyLabs log API: datasets of organizations, with API keys
    notifications = mount_notifications(app, the_store, config, monitors, timeline)
    durations = None
    try:
        from whylogs_songbird.server.metrics import mount_metrics
    except ImportError:  # pragma: no cover - prometheus_client comes with the server extra
        logger.warning("/metrics is off: prometheus_client is missing (pip install 'whylogs-songbird[server]')")
    else:
        durations = mount_metrics(app, the_store, config, timeline, time_requests=False)
    add_routes(app.router, local.router)
    # the app's one middleware of its own: a request for a foreign Host name reaches nothing else,
    # every answer gets the security headers, and an unexpected error is answered and logged once
    app.add_middleware(
        EdgeMiddleware,
        config=config,
        gate=HostGate(HostAllowList(config.host, config.public_url, config.allowed_hosts)),
        counter=requests_in_flight,
        errors=app.state.unexpected_errors,
        durations=durations,
    )
    return app


__all__ = ["ApiError", "ApiKeyRing", "BodyTooLargeError", "KeyOwner", "create_app", "error_response", "sandbox_for"]
