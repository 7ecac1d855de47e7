"""``clowder-ml clowder ...``: run clowder-ml's tasks as Clowder v2 extractors.

``extractor-info TASK`` prints the ``extractor_info.json`` the task announces to Clowder
(generated from its params model; see :mod:`clowder_ml.clowder.extractor_info`). The task
modules are imported only when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from clowder_ml.cli.common import err_console, load_settings, print_json, run

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


@clowder_app.command("listen")
def listen_cmd(
    clowder_url: Annotated[str, typer.Option(
        "--clowder-url", envvar="CLOWDER_ML_CLOWDER_URL",
        help="Clowder's base URL; data is read and results written there (never to the "
             "host a message names)")],
    rabbitmq_uri: Annotated[str, typer.Option(
        "--rabbitmq-uri", envvar="CLOWDER_ML_RABBITMQ_URI",
        help="Clowder's RabbitMQ, e.g. amqp://guest:guest@rabbitmq:5672/%2F")],
    task: Annotated[list[str] | None, typer.Option(
        "--task", help="Task to run as an extractor (repeatable; default: every task)")]
    = None,
    data_dir: Annotated[Path | None, typer.Option(
        help="The server's data folder (CLOWDER_ML_DATA_DIR); jobs run on its engine")]
    = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64,
                                             help="Requests worked on at once")] = 2,
    heartbeat: Annotated[float, typer.Option(min=1.0, help="Seconds between heartbeats")]
    = 10.0,
    lease: Annotated[float, typer.Option(
        min=4.0, help="Seconds a killed listener's requests stay claimed before another "
                      "listener takes them over")] = 30.0,
    owner: Annotated[str | None, typer.Option(
        help="E-mail Clowder shows as the extractors' owner")] = None,
    log_level: Annotated[str, typer.Option(help="Log level")] = "info",
) -> None:
    """Run tasks as Clowder v2 extractors until interrupted (next to `clowder-ml serve`,
    on the same database and data folder: the server's engine runs the jobs)."""
    import signal

    from clowder_ml import __version__, logs
    from clowder_ml.clowder.extraction import Extractions
    from clowder_ml.clowder.extractor_info import extractor_info, extractor_name
    from clowder_ml.clowder.listener import Listener
    from clowder_ml.db import migrate
    from clowder_ml.services.platform import Platform
    from clowder_ml.settings import url_placeholder

    overrides: dict[str, Any] = {"clowder_url": clowder_url}
    if data_dir:
        overrides["data_dir"] = data_dir
    settings = load_settings(**overrides)  # refused settings end the command here
    part = url_placeholder(rabbitmq_uri)
    if part is not None:
        err_console.print(f"[bold red]Settings refused[/]: --rabbitmq-uri "
                          f"(CLOWDER_ML_RABBITMQ_URI): its {part} is a placeholder; set the "
                          "real RabbitMQ URI.")
        raise typer.Exit(2)
    logs.configure(log_level, settings.log_json)

    def build() -> Listener:
        platform = Platform.build(settings)
        migrate.upgrade(platform.db.engine)
        chosen = [platform.tasks.get(t) for t in (task or platform.tasks.names())]
        infos = {extractor_name(t.name): extractor_info(t, __version__) for t in chosen}
        return Listener(rabbitmq_uri,
                        Extractions(platform, clowder_url, __version__, lease_s=lease), chosen,
                        infos, heartbeat_s=heartbeat, concurrency=concurrency, owner=owner)

    listener = run(build)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: listener.stop())
    err_console.print(f"clowder-ml listening for Clowder at [bold]{clowder_url}[/] on "
                      f"{', '.join(listener.queues)}")
    listener.run()
