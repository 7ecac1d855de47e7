"""The root ``clowder-ml`` Typer app: every command group registered in one place, and
:func:`main`, the console-script entry point.

The command modules know nothing of this app (they import only :mod:`clowder_ml.cli.common`);
this module imports them to assemble it. Registration order is the order of ``--help``.
"""

from __future__ import annotations

import os

import typer

from clowder_ml.cli.accounts import audit, login, tokens_app, users_app
from clowder_ml.cli.clowder import clowder_app
from clowder_ml.cli.datasets import datasets_app, upload
from clowder_ml.cli.jobs import jobs_app
from clowder_ml.cli.models import models_app, tasks
from clowder_ml.cli.sandbox import sandbox_app
from clowder_ml.cli.server import demo, serve

app = typer.Typer(help="clowder-ml: fine-tune and run models from a dataset.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(datasets_app, name="datasets")
app.add_typer(tokens_app, name="tokens")
app.add_typer(users_app, name="users")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(jobs_app, name="jobs", help="Submit and follow jobs (dataset-profile, ...).")
app.add_typer(models_app, name="models", help="Registered models and their versions.")
app.add_typer(clowder_app, name="clowder")
app.command("tasks")(tasks)
app.command()(serve)
app.command()(demo)
app.command()(login)
app.command()(upload)
app.command()(audit)


def main() -> None:
    """Run the CLI (``clowder-ml``, ``python -m clowder_ml``) with unbuffered output, so that
    progress and logs reach a pipe as they happen."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
