"""The FastAPI application: wiring, start-up work and error mapping.

Start-up (in order): create folders, migrate the database, create the first admin (printing
a generated password once), finalize uploads that were complete when the server died,
expire stale uploads. A background task repeats the housekeeping every few minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from clowder_ml import __version__
from clowder_ml.api import client_address, contract, security_headers, web
from clowder_ml.api.deps import SESSION_COOKIE, reject_nul_path_params
from clowder_ml.api.middleware import ObservabilityMiddleware
from clowder_ml.api.origin_check import OriginCheckMiddleware, configured_origins
from clowder_ml.api.routers import (
    audit,
    auth,
    datasets,
    documents,
    jobs,
    models,
    ops,
    runner,
    scan,
    task_forms,
    uploads,
)
from clowder_ml.db import migrate
from clowder_ml.engine.dispatcher import Dispatcher
from clowder_ml.errors import (
    ERRORS_BY_CODE,
    BadRequest,
    ClowderMLError,
    InternalError,
    MethodNotAllowed,
    ValidationFailed,
)
from clowder_ml.services import accounts, maintenance
from clowder_ml.services.collab import CollabHub
from clowder_ml.services.job_store import DbJobStore
from clowder_ml.services.platform import Platform
from clowder_ml.settings import Settings

log = logging.getLogger("clowder_ml.api")
HOUSEKEEPING_SECONDS = 600.0


def bootstrap(platform: Platform) -> str | None:
    """Migrate, create the first admin, recover uploads. Returns a generated admin password."""
    migrate.upgrade(platform.db.engine)
    pw = platform.settings.admin_password
    with platform.db.session() as s:
        generated = accounts.ensure_admin(s, pw.get_secret_value() if pw else None)
    recovered = platform.uploads.recover()
    expired = platform.uploads.expire()
    if recovered or expired:
        log.info("uploads reconciled", extra={"finalized": recovered, "expired": expired})
    return generated


def announce_admin_password(password: str) -> None:
    # Printed once, to the terminal that started the server; it is never stored in clear.
    print(f"\n  First start: created user 'admin' with password: {password}\n"
          "  (shown only now; set CLOWDER_ML_ADMIN_PASSWORD to choose it)\n",
          file=sys.stderr, flush=True)


async def _housekeeping(platform: Platform) -> None:
    while True:
        await asyncio.sleep(HOUSEKEEPING_SECONDS)
        try:
            await to_thread.run_sync(maintenance.collect, platform)
        except Exception:
            log.exception("housekeeping failed")


def _error_response(err: ClowderMLError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": err.to_dict()}, status_code=err.status, headers=headers)


def _http_error(status: int) -> type[ClowderMLError]:
    # The most general class for the status; never the root, whose code "error" says nothing.
    if status == InternalError.status:
        return InternalError
    for cls in ERRORS_BY_CODE.values():
        if cls.status == status and cls is not ClowderMLError:
            return cls
    return InternalError if status >= 500 else BadRequest


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the app's API routes take at ``path``. As in OpenAPI, a concrete path
    (``/models/import``) is matched before templated ones (``/models/{name}``)."""
    matching = [(concrete, methods) for pattern, concrete, methods in app.state.route_methods
                if pattern.match(path)]
    concrete = any(c for c, _ in matching)
    return sorted({m for c, methods in matching if c or not concrete for m in methods})


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{loc or 'request'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ClowderMLError)
    async def _platform_error(request: Request, exc: ClowderMLError) -> JSONResponse:
        return _error_response(exc, exc.http_headers() or None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(ValidationFailed(
            f"Invalid request: {_describe_validation(exc)}.",
            "See the API reference at /docs for the expected fields."))

    @app.exception_handler(StarletteHTTPException)
    async def _http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cls = _http_error(exc.status_code)
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        err = cls(message)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == MethodNotAllowed.status:
            # The router names only the first route it matched; Allow lists every method
            # this path takes (RFC 9110), from all of its routes.
            headers["Allow"] = ", ".join(_allowed_methods(app, request.url.path))
        return JSONResponse({"error": err.to_dict()}, status_code=exc.status_code,
                            headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = request.scope.get("state", {}).get("request_id", "?")
        log.error("unhandled error", exc_info=exc, extra={"request_id": rid})
        # Answered outside every middleware: the security headers are added here.
        return _error_response(InternalError(
            "The server hit an unexpected error.",
            f"Report request id {rid} to the operator."), security_headers.LAST_RESORT)


def create_app(settings: Settings | None = None, *, announce: bool = True) -> FastAPI:
    settings = settings or Settings()
    platform = Platform.build(settings)
    collab = CollabHub(platform)  # the web editor's co-editing rooms

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        generated = await to_thread.run_sync(bootstrap, platform)
        if generated and announce:
            announce_admin_password(generated)
        app.state.generated_admin_password = generated
        tasks = [asyncio.create_task(_housekeeping(platform))]
        await collab.open()
        if settings.engine_enabled:
            # The first pass connects to Ray (starting the embedded head takes seconds), in a
            # thread: the API answers meanwhile and new jobs wait in the queue.
            platform.dispatcher = Dispatcher(settings, DbJobStore(settings, platform.db))
            tasks.append(asyncio.create_task(platform.dispatcher.run()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await collab.close()  # compacts the open co-editing drafts
            if platform.dispatcher is not None:
                await to_thread.run_sync(platform.dispatcher.close)
            await to_thread.run_sync(platform.uploads.close)  # stop the commit retries
            platform.db.dispose()

    app = FastAPI(title="clowder-ml", version=__version__, lifespan=lifespan,
                  description="Fine-tune and run models from a dataset.",
                  dependencies=[Depends(reject_nul_path_params)])
    app.state.platform = platform
    app.state.collab = collab
    install_error_handlers(app)
    routers = (ops.router, auth.router, datasets.router, uploads.router, jobs.router,
               runner.router, models.router, task_forms.router, scan.router,
               documents.router, audit.router)
    for r in routers:
        app.include_router(r)
    app.state.route_methods = [(route.path_regex, "{" not in route.path, route.methods)
                               for r in routers for route in r.routes
                               if isinstance(route, APIRoute)]
    # /openapi.json tells the whole contract: every error each operation can answer, and
    # the links that chain operations.
    contract.install(app)
    web.install(app)  # last: the web UI's fallback route never shadows an API route
    # Inner to outer: refuse cross-site writes, add security headers (to refusals too), log
    # and count every request, then (outermost) learn the client's address from trusted
    # proxies, so that everything inside sees the real client.
    app.add_middleware(OriginCheckMiddleware, allowed=configured_origins(settings),
                       cookie_name=SESSION_COOKIE)
    security_headers.install(app, settings)
    app.add_middleware(ObservabilityMiddleware)
    client_address.install(app, settings)
    return app


def app_factory() -> Any:
    """For ``uvicorn --factory clowder_ml.api.app:app_factory``."""
    return create_app()
