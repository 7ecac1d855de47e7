"""The web UI: the single-page app built from ``web/`` into ``api/static/``, served at ``/``.

Contract:

* Files of the build are served as they are (``/assets/*`` are content-hashed by Vite, so
  they are cached for a year; everything else is revalidated).
* Any other ``GET``/``HEAD`` path answers ``index.html``, so the app's own routes
  (``/datasets/x``) survive a reload. Server paths are never shadowed: ``/api`` and the
  paths in ``SERVER_PATHS`` do not match this route at all, so an unknown API path still
  answers the API's JSON 404 and a wrong method its 405.
* Its responses get the UI's Content-Security-Policy (and the other security headers) from
  :mod:`clowder_ml.api.security_headers`, the one place that sets them.
* Without a build the route answers 503 with how to build it; the API works regardless.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Match, Route
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"

# Paths the server answers itself (besides everything under /api/): never the app's.
SERVER_PATHS = frozenset({"/docs", "/redoc", "/openapi.json", "/healthz", "/readyz",
                          "/metrics"})
_ASSET_CACHE = "public, max-age=31536000, immutable"
NOT_BUILT = ("The web UI is not built. Build it with `bash scripts/setup.sh` "
             "(or `npm --prefix web ci && npm --prefix web run build`).\n")


def is_server_path(path: str) -> bool:
    """True for paths the API owns (so the app's fallback must not answer them)."""
    if path == "/api" or path.startswith("/api/"):
        return True
    return any(path == p or path.startswith(p + "/") for p in SERVER_PATHS)


class _AppRoute(Route):
    """Matches GET/HEAD requests for paths that are not the server's; nothing else."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if (scope["type"] != "http" or scope["method"] not in ("GET", "HEAD")
                or is_server_path(scope["path"])):
            return Match.NONE, {}
        return super().matches(scope)


def _file_in(root: Path, rel: str) -> Path | None:
    """``root/rel`` if it is a file inside ``root`` (no traversal, no links out)."""
    if not rel or "\x00" in rel:
        return None
    try:
        candidate = (root / rel).resolve()
    except (OSError, RuntimeError):
        return None
    if not candidate.is_relative_to(root.resolve()) or not candidate.is_file():
        return None
    return candidate


def _with_headers(response: Response, cache: str) -> Response:
    response.headers["Cache-Control"] = cache
    return response


def make_endpoint(root: Path) -> Callable[[Request], Awaitable[Response]]:
    async def serve_app(request: Request) -> Response:
        rel = request.path_params.get("path", "")
        found = _file_in(root, rel)
        if found is not None:
            cache = _ASSET_CACHE if rel.startswith("assets/") else "no-cache"
            return _with_headers(FileResponse(found), cache)
        if rel.startswith("assets/"):  # a missing build file is a 404, not the app
            return _with_headers(PlainTextResponse("Not found.\n", status_code=404),
                                 "no-store")
        index = root / "index.html"
        if not index.is_file():
            return _with_headers(PlainTextResponse(NOT_BUILT, status_code=503), "no-store")
        return _with_headers(FileResponse(index, media_type="text/html"), "no-cache")

    return serve_app


def install(app: FastAPI, root: Path | None = None) -> None:
    """Add the app's route last, after every API route (call after ``include_router``).
    ``root``: the build folder, ``STATIC_DIR`` by default."""
    app.router.routes.append(_AppRoute("/{path:path}", make_endpoint(root or STATIC_DIR),
                                       methods=["GET", "HEAD"], include_in_schema=False))
