"""``clowder-ml serve`` and ``clowder-ml demo``: the server side of the CLI.

Both are registered on the root app by :mod:`clowder_ml.cli.app`. The server (uvicorn and the
API) is imported only when one of them runs, to keep every other command's start-up fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from clowder_ml.cli.common import err_console, load_settings, run


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder (CLOWDER_ML_DATA_DIR)")]
    = None,
    log_level: Annotated[str, typer.Option(help="Log level")] = "info",
) -> None:
    """Start the API server (embedded defaults: SQLite and blobs in the data folder)."""
    import uvicorn

    from clowder_ml import logs
    from clowder_ml.api.app import create_app

    overrides: dict[str, Any] = {"data_dir": data_dir} if data_dir else {}
    settings = load_settings(**overrides)  # refused settings end the command here
    logs.configure(log_level, settings.log_json)
    local = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"  # noqa: S104
    url = settings.public_url or local
    if settings.job_api_url is None:
        # Runners on the embedded head are local; a remote cluster needs the URL set.
        settings.job_api_url = local
    err_console.print(f"clowder-ml serving at [bold]{url}[/] (data: {settings.resolved_data_dir})"
                      f"\n  API docs: {url}/docs   log in: clowder-ml login --url {url}")
    # proxy_headers off: uvicorn's would believe X-Forwarded-For from 127.0.0.1 by default; the
    # app does it itself, only for CLOWDER_ML_TRUSTED_PROXIES (clowder_ml.api.client_address).
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None,
                log_level=log_level.lower(), timeout_graceful_shutdown=5, proxy_headers=False)


def demo(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    data_dir: Annotated[Path, typer.Option(help="Data folder")] = Path("clowder-ml-data"),
    exit_after: Annotated[bool, typer.Option("--exit", help="Stop after the walk-through")]
    = False,
) -> None:
    """Start on embedded defaults and run the main flow on a generated sample."""
    from clowder_ml import demo as demo_mod

    run(lambda: demo_mod.run(host, port, data_dir, keep_serving=not exit_after))
