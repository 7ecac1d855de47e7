"""Cross-site request refusal: writes a browser could send on a user's behalf must come from
one of this server's own origins.

A browser attaches the session cookie to requests that other sites' pages make to this
server (``SameSite=Lax`` stops most, not those from a sibling host of the same site), and it
cannot be stopped from sending them; but it always says which page sent them (``Origin``,
else ``Referer``), and that page's script cannot change what it says. So:

* An unsafe request (any method but GET, HEAD, OPTIONS, TRACE) that carries the session
  cookie and does not authenticate with an ``Authorization: Bearer`` header (which no page
  of another site can add without a CORS preflight, and CORS is closed) must name an
  allowed origin; without ``Origin`` its ``Referer``'s origin counts; with neither it is
  refused. This is cross-site request forgery.
* An unsafe request without a bearer header that names a foreign ``Origin`` is refused even
  without a cookie: a foreign page logging a visitor into the attacker's account (log-in
  forgery) is such a request. Clients that are not browsers (the CLI, the SDK, runners)
  send no ``Origin`` and are unaffected.
* A WebSocket handshake with the session cookie and no bearer header must name an allowed
  origin (cross-site WebSocket hijacking: browsers do not apply the same-origin policy to
  WebSockets).

Allowed origins: the request's own (its scheme, proxies considered, and ``Host``: the web UI
is served by this server, so it is always same-origin), ``public_url``'s, and
``public_origins``. Refusals answer 403 ``cross_site_request_refused`` (a WebSocket: the
handshake is closed, which the server answers with 403) and are logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from clowder_ml.errors import CrossSiteRequestRefused, ValidationFailed
from clowder_ml.settings import Settings

log = logging.getLogger("clowder_ml.http")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_WS_SCHEMES = {"ws": "http", "wss": "https"}


def normalize_origin(value: str) -> str | None:
    """``scheme://host[:port]`` in canonical form (lower case, default port dropped), or
    None when ``value`` is not an http(s) URL with a host (``null`` included). Paths,
    queries and credentials are ignored, so a ``Referer`` URL gives its origin."""
    try:
        parts = urlsplit(value.strip())
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    host = f"[{host}]" if ":" in host else host
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def configured_origins(settings: Settings) -> frozenset[str]:
    """``public_url``'s origin and ``public_origins``, checked: a typo here would either
    lock the UI out or let a site in, so a value that is not an origin stops the server."""
    out = set()
    named = ([("CLOWDER_ML_PUBLIC_URL", settings.public_url)] if settings.public_url else []) \
        + [("CLOWDER_ML_PUBLIC_ORIGINS", o) for o in settings.public_origins]
    for setting, value in named:
        origin = normalize_origin(value)
        if origin is None:
            raise ValidationFailed(
                f"{setting}: {value!r} is not an http(s) origin.",
                "Write origins as scheme://host[:port], e.g. https://ml.example.org.")
        out.add(origin)
    return frozenset(out)


def own_origin(scope: Scope, headers: Headers) -> str | None:
    """The origin this request was addressed to: its scheme and ``Host``."""
    scheme = _WS_SCHEMES.get(scope.get("scheme", "http"), scope.get("scheme", "http"))
    host = headers.get("host")
    return normalize_origin(f"{scheme}://{host}") if host else None


def claimed_origin(headers: Headers) -> str | None:
    """The origin of the page that sent the request: ``Origin``, else ``Referer``'s."""
    origin = headers.get("origin")
    if origin is not None and origin.strip().lower() != "null":
        return normalize_origin(origin)
    referer = headers.get("referer")
    return normalize_origin(referer) if referer else None


def has_bearer(headers: Headers) -> bool:
    """An ``Authorization: Bearer <token>`` header, which the API authenticates instead of
    the cookie (``api.deps``)."""
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(credentials.strip())


def has_cookie(headers: Headers, name: str) -> bool:
    return bool(cookie_parser(headers.get("cookie", "")).get(name))


class OriginCheckMiddleware:
    """Refuses the cross-site requests described in the module docstring."""

    def __init__(self, app: ASGIApp, *, allowed: Iterable[str], cookie_name: str) -> None:
        self.app = app
        self.allowed = frozenset(allowed)
        self.cookie_name = cookie_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            reason = self._refusal(scope, Headers(scope=scope), websocket=False)
            if reason:
                err = CrossSiteRequestRefused(
                    f"Refused a cross-site request: {reason}.",
                    "Browsers: use the web UI on this server's own address. Scripts and other "
                    "programs: authenticate with 'Authorization: Bearer <token>'.")
                response = JSONResponse({"error": err.to_dict()}, status_code=err.status)
                await response(scope, receive, send)
                return
        elif scope["type"] == "websocket":
            reason = self._refusal(scope, Headers(scope=scope), websocket=True)
            if reason:
                await receive()  # websocket.connect; closing before accepting answers 403
                await send({"type": "websocket.close", "code": 1008})
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: Headers, *, websocket: bool) -> str | None:
        """Why this request is refused, or None to let it through."""
        if has_bearer(headers):
            return None
        cookie = has_cookie(headers, self.cookie_name)
        if not cookie and (websocket or "origin" not in headers):
            return None
        claimed = claimed_origin(headers)
        if claimed is not None and (claimed in self.allowed
                                    or claimed == own_origin(scope, headers)):
            return None
        if claimed is None:
            reason = "it carries the session cookie but names no page it came from " \
                "(no Origin or Referer)" if cookie else "its Origin is not a web origin"
        else:
            reason = f"it came from a page of {claimed}, which is not this server"
        log.warning("cross-site request refused", extra={
            "method": scope.get("method", "WEBSOCKET"), "path": scope["path"],
            "origin": headers.get("origin"), "claimed_origin": claimed,
            "client": (scope.get("client") or ("?",))[0]})
        return reason
