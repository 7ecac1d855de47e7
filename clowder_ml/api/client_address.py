"""The client's address and scheme behind reverse proxies.

``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only from the peers named in
``trusted_proxies`` (addresses or networks); the client is then the nearest address in the
chain that is not a trusted proxy. Unset, the headers are ignored, so that a client cannot
name its own address (the log-in throttle counts per address) or pretend it came over
https. ``clowder-ml serve`` turns uvicorn's own handling of these headers off (it trusts
127.0.0.1 by default); run uvicorn directly with ``--no-proxy-headers`` likewise.
"""

from __future__ import annotations

import ipaddress

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from clowder_ml.errors import ValidationFailed
from clowder_ml.settings import Settings


def trusted_proxies(settings: Settings) -> list[str]:
    """The configured proxies, checked (a value that is not an address or network, or
    ``*``, which would let every client choose its address, stops the server)."""
    for value in settings.trusted_proxies:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValidationFailed(
                f"CLOWDER_ML_TRUSTED_PROXIES: {value!r} is not an IP address or network.",
                "Name the reverse proxies in front of the server, e.g. [\"10.0.0.5\"] or "
                "[\"10.0.0.0/8\"].") from None
    return list(settings.trusted_proxies)


def install(app: FastAPI, settings: Settings) -> None:
    """Rewrite the client address and scheme from trusted proxies' headers (outermost
    middleware: everything after it sees the real client)."""
    proxies = trusted_proxies(settings)
    if proxies:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=proxies)
