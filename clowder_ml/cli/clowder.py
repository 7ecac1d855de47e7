"""``clowder-ml clowder ...``: run clowder-ml's tasks as Clowder v2 extractors.

``extractor-info TASK`` prints the ``extractor_info.json`` the task announces to Clowder
(generated from its params model; see :mod:`clowder_ml.clowder.extractor_info`). The task
modules are imported only when the command runs.
"""

from __future__ import annotations

from typing import Annotated

import typer

from clowder_ml.cli.common import print_json, run

clowder_app = typer.Typer(help="Run tasks as Clowder v2 extractors.", no_args_is_help=True)


@clowder_app.command("extractor-info")
def extractor_info_cmd(
    task: Annotated[str, typer.Argument(help="Task name, e.g. text-classification-predict")],
    repository_url: Annotated[str | None, typer.Option(
        "--repository-url", help="Source repository to name in the extractor info")] = None,
) -> None:
    """Print the task's extractor_info.json (its parameters are the task's JSON schema)."""
    from clowder_ml import __version__
    from clowder_ml.clowder.extractor_info import extractor_info
    from clowder_ml.settings import Settings
    from clowder_ml.tasks.registry import TaskRegistry

    definition = run(lambda: TaskRegistry(Settings().extra_tasks).get(task))
    print_json(extractor_info(definition, __version__, repository_url))
