"""Security headers on every response, and the content security policies: the one place
that sets them (tune the policies here).

Every response gets ``X-Content-Type-Options: nosniff`` (a browser never guesses a type,
so a dataset file cannot run as a script or page), ``Referrer-Policy: same-origin`` (URLs,
which name datasets and files, do not leak to other sites), ``X-Frame-Options: DENY`` and a
``Content-Security-Policy`` with ``frame-ancestors 'none'`` (no clickjacking), and over
https ``Strict-Transport-Security``. Which policy:

* ``/api/...`` and the server's other machine answers: ``API_CONTENT_SECURITY_POLICY``,
  which lets a response run, load or embed nothing (a dataset's HTML or SVG file opened
  in the browser stays inert);
* the API docs (``/docs``, ``/redoc``): ``docs_content_security_policy`` (their pages load
  Swagger UI and ReDoc from a CDN and run one inline script, allowed by its hash);
* everything else, the web UI: ``UI_CONTENT_SECURITY_POLICY``.

Responses that hand out credentials (``/api/v1/auth/...``, ``/api/v1/tokens``) are also
``Cache-Control: no-store``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clowder_ml.settings import Settings

# What the web UI (React, Monaco, uPlot, tus-js-client, y-websocket) needs and no more: no
# inline scripts and no eval (Monaco's workers are bundled files, started as same-origin or
# blob: workers), inline styles (Monaco and uPlot set them), WebSockets (job logs,
# co-editing).
UI_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; object-src 'none'"
)

# API answers are data, never pages: nothing may run, load or embed them.
API_CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'"

# The docs pages: Swagger UI and ReDoc from the CDN FastAPI names, plus the inline
# scripts of the pages FastAPI renders (their hashes are added by
# ``docs_content_security_policy``).
_DOCS_CDN = "https://cdn.jsdelivr.net"
_DOCS_POLICY = (
    "default-src 'none'; script-src 'self' " + _DOCS_CDN + " {hashes}; "
    "style-src 'self' 'unsafe-inline' " + _DOCS_CDN + " https://fonts.googleapis.com; "
    "img-src 'self' data: " + _DOCS_CDN + " https://fastapi.tiangolo.com; "
    "font-src 'self' data: https://fonts.gstatic.com; connect-src 'self'; "
    "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; object-src 'none'"
)

NOSNIFF = "nosniff"
REFERRER_POLICY = "same-origin"
FRAME_OPTIONS = "DENY"
HSTS = "max-age=31536000"
# The server's own answers outside /api/ that are not pages.
MACHINE_PATHS = frozenset({"/openapi.json", "/healthz", "/readyz", "/metrics"})
NO_STORE_PREFIXES = ("/api/v1/auth/", "/api/v1/tokens")

# For the server's last-resort 500 answer, which no middleware sees.
LAST_RESORT = {"X-Content-Type-Options": NOSNIFF, "Referrer-Policy": REFERRER_POLICY,
               "X-Frame-Options": FRAME_OPTIONS,
               "Content-Security-Policy": API_CONTENT_SECURITY_POLICY}

_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script>", re.S | re.I)


def inline_script_hashes(html: str) -> list[str]:
    """CSP source expressions (``'sha256-...'``) for each inline script in ``html``."""
    return [f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
            for body in _INLINE_SCRIPT.findall(html)]


def docs_content_security_policy(app: FastAPI, root_path: str = "") -> str:
    """The docs pages' policy: their CDN and the hashes of the inline scripts FastAPI
    renders for ``app`` (computed from FastAPI's own page templates, with the same
    arguments its routes use, so nothing from a request goes into it)."""
    pages = []
    if app.openapi_url and app.docs_url:
        redirect = app.swagger_ui_oauth2_redirect_url
        pages.append(get_swagger_ui_html(
            openapi_url=root_path + app.openapi_url, title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root_path + redirect if redirect else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters).body)
        if redirect:
            pages.append(get_swagger_ui_oauth2_redirect_html().body)
    hashes = sorted({h for page in pages for h in inline_script_hashes(bytes(page).decode())})
    return _DOCS_POLICY.format(hashes=" ".join(hashes)).replace("  ", " ")


def is_https(scope: Scope, settings: Settings) -> bool:
    """Whether the client reached this server over https: the request's scheme (a trusted
    proxy's ``X-Forwarded-Proto`` considered) or an https ``public_url``."""
    return scope.get("scheme") in ("https", "wss") or \
        (settings.public_url or "").lower().startswith("https://")


class SecurityHeadersMiddleware:
    """Adds the headers in the module docstring to every HTTP response; a header of the
    same name set by a route is replaced (this module is the one place that decides)."""

    def __init__(self, app: ASGIApp, *, settings: Settings,
                 docs_paths: frozenset[str], docs_policy: Callable[[str], str]) -> None:
        self.app = app
        self.settings = settings
        self.docs_paths = docs_paths
        self.docs_policy = docs_policy

    def policy_for(self, path: str, root_path: str) -> str:
        if path.startswith("/api/") or path == "/api" or path in MACHINE_PATHS:
            return API_CONTENT_SECURITY_POLICY
        if path in self.docs_paths:
            return self.docs_policy(root_path)
        return UI_CONTENT_SECURITY_POLICY

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root_path = scope.get("root_path", "")
        path = scope["path"]
        if root_path and path.startswith(root_path):
            path = path[len(root_path):] or "/"
        policy = self.policy_for(path, root_path)
        https = is_https(scope, self.settings)
        no_store = path.startswith(NO_STORE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = NOSNIFF
                headers["Referrer-Policy"] = REFERRER_POLICY
                headers["X-Frame-Options"] = FRAME_OPTIONS
                headers["Content-Security-Policy"] = policy
                if https:
                    headers["Strict-Transport-Security"] = HSTS
                if no_store:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: FastAPI, settings: Settings) -> None:
    """Add the middleware to ``app`` (after its routes exist: the docs paths come from it)."""
    docs_paths = frozenset(p for p in (app.docs_url, app.redoc_url,
                                       app.swagger_ui_oauth2_redirect_url) if p)
    policy = functools.lru_cache(maxsize=8)(functools.partial(docs_content_security_policy, app))
    app.add_middleware(SecurityHeadersMiddleware, settings=settings, docs_paths=docs_paths,
                       docs_policy=policy)
