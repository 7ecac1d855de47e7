"""The published API contract: ``/openapi.json`` is the document FastAPI builds from the
routes, completed with what no single route declares: the errors every operation can answer
(``api.responses``) and the links from one operation's answer to the next (``api.links``).

Clients are generated from it (the web UI's typed client), and the suite's fuzz test and
``scripts/fuzz-api.sh`` hold the server to it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from clowder_ml.api.links import add_links
from clowder_ml.api.responses import complete_document


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and so ``/openapi.json``) return the completed document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_links(complete_document(build()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
