"""Print the API's OpenAPI document as JSON (``python -m clowder_ml.api.openapi_dump``).

The web UI's typed client (``web/src/api/schema.d.ts``) is generated from this output by
``web/scripts/gen-api.sh``; a test checks the two agree.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from clowder_ml.api.app import create_app
from clowder_ml.settings import Settings


def openapi_document(settings: Settings | None = None) -> dict[str, Any]:
    """The OpenAPI document of an app built on ``settings`` (nothing is started)."""
    app = create_app(settings or Settings(engine_enabled=False), announce=False)
    return app.openapi()


def openapi_json(settings: Settings | None = None) -> str:
    """The document as the generator reads it (sorted keys: a stable input, a stable file)."""
    return json.dumps(openapi_document(settings), indent=2, sort_keys=True) + "\n"


def main() -> None:
    sys.stdout.write(openapi_json())


if __name__ == "__main__":
    main()
