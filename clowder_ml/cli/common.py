"""What every command group of the CLI shares: the consoles, the client, error handling and
output helpers, and the shared option types.

This module is the bottom of :mod:`clowder_ml.cli`: the command modules import it, and it
imports none of them (nor the app), so there is no import circle. It stays light: the SDK
is imported only when a command asks for a client.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from clowder_ml.errors import ClowderMLError

if TYPE_CHECKING:
    from clowder_ml.client import Client
    from clowder_ml.settings import Settings

__all__ = ["JsonOpt", "console", "err_console", "human_size", "load_settings", "make_client",
           "print_json", "run"]

#: Human-readable output (tables, messages) goes to stdout through this console.
console = Console()
#: Progress, live views, errors and hints go to stderr, so ``--json`` keeps stdout clean.
err_console = Console(stderr=True)
T = TypeVar("T")

#: The ``--json`` flag of the listing and show commands (print JSON instead of a table).
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


def make_client() -> Client:
    """A new SDK client for the server the user chose: ``CLOWDER_ML_URL`` with
    ``CLOWDER_ML_TOKEN``, or the saved login (see :class:`clowder_ml.client.Client`).
    The SDK is imported here, not at module import, to keep CLI start-up fast."""
    from clowder_ml.client import Client

    return Client()


def load_settings(**overrides: Any) -> Settings:
    """The server's settings (environment plus ``overrides``), for the commands that run
    server parts (``serve``, ``clowder listen``). Refused settings (a placeholder secret, a
    malformed value) are printed naming the setting and why, never the value (it may be a
    secret), and end the command with exit status 2 before anything starts."""
    from pydantic import ValidationError

    from clowder_ml.settings import Settings

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        for err in exc.errors(include_input=False, include_url=False):
            where = ".".join(map(str, err["loc"]))
            why = err["msg"].removeprefix("Value error, ")
            err_console.print(f"[bold red]Settings refused[/]: {where + ': ' if where else ''}"
                              f"{why}")
        raise typer.Exit(2) from None


def run(fn: Callable[[], T]) -> T:
    """Call ``fn`` and return what it returns. A :class:`~clowder_ml.errors.ClowderMLError`
    is printed to stderr as its code and message (and hint, if any), never a traceback, and
    ends the command with exit status 1 (``typer.Exit(1)``). Other exceptions (including
    ``KeyboardInterrupt``) pass through unchanged."""
    try:
        return fn()
    except ClowderMLError as exc:
        err_console.print(f"[bold red]Error[/] ({exc.code}): {exc.message}")
        if exc.hint:
            err_console.print(f"[dim]Hint:[/] {exc.hint}")
        raise typer.Exit(1) from None


def print_json(data: Any) -> None:
    """Write ``data`` to stdout as one JSON document (2-space indent, then a newline);
    values JSON cannot hold (datetimes, paths, ...) are written as their ``str``. Nothing
    else is written, so the output can be piped to ``jq`` or parsed by a script."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def human_size(n: int) -> str:
    """A byte count for people, in binary units: ``"512 B"``, ``"1.5 KiB"``, ... up to
    ``TiB`` (bytes without decimals, larger units with one)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
