"""``clowder-ml jobs ...``: submit, list, show, follow and cancel jobs (docs/jobs.md).

Output contract: ``--json`` prints exactly one JSON document on stdout (the job, or a list for
``ls``) and nothing else there; live progress goes to stderr. With ``--wait`` the exit status
is 0 when the job succeeded and 1 when it failed or was cancelled. Platform errors print as
code, message and hint (exit 1) like every other command.

Registered on the root app as ``jobs`` by :mod:`clowder_ml.cli.app`; the shared helpers come
from :mod:`clowder_ml.cli.common`.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.json import JSON
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Column, Table
from rich.text import Text

from clowder_ml.cli.common import console, err_console, human_size, make_client, print_json, run

if TYPE_CHECKING:
    from clowder_ml.client import Client

jobs_app = typer.Typer(help="Submit and follow jobs.", no_args_is_help=True)

# Not common.JsonOpt: a job prints as one JSON object, not instead of a table.
JobJsonOpt = Annotated[bool, typer.Option("--json", help="Print the job as one JSON object")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Return once the job is terminal; "
                                                      "exit 0 if it succeeded, 1 otherwise")]
STATE_STYLE = {"pending": "yellow", "submitted": "yellow", "running": "cyan",
               "succeeded": "bold green", "failed": "bold red", "cancelled": "magenta"}


def _client_factory() -> Client:
    """The client every command uses (a seam: tests replace it with a mock-backed one)."""
    return make_client()


def parse_params(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs to a dict; a value that is valid JSON is parsed (``3`` -> 3,
    ``true`` -> True, ``[1,2]`` -> a list), anything else stays a string. A pair without
    ``=`` or with an empty key is a usage error."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--param")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


# rendering -------------------------------------------------------------------------------

def _state(state: str) -> str:
    return f"[{STATE_STYLE.get(state, 'bold')}]{escape(state)}[/]"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return "-" if value is None else str(value)


def _progress(job: dict[str, Any]) -> RenderableType | None:
    p = job.get("progress")
    if not isinstance(p, dict):
        return None
    done, total, message = p.get("done"), p.get("total"), p.get("message") or ""
    if isinstance(total, int | float) and total > 0 and isinstance(done, int | float):
        bar = ProgressBar(total=float(total), completed=float(done), width=40)
        label = Text(f" {done:g}/{total:g} {message}")
        grid = Table.grid(padding=0)
        grid.add_row(bar, label)
        return grid
    return Text(str(message)) if message else None


class _LiveView:
    """What ``--wait`` shows on stderr; rendered on every refresh so the clock ticks
    between polls."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.started = time.monotonic()

    def __rich__(self) -> RenderableType:
        job = self.job
        elapsed = int(time.monotonic() - self.started)
        lines: list[RenderableType] = [Text.from_markup(
            f"[bold]{escape(str(job['id']))}[/] {escape(str(job.get('task', '')))}  "
            f"{_state(str(job['state']))}  [dim]{elapsed // 60}:{elapsed % 60:02d}[/]")]
        if job.get("waiting_for"):
            pos = job.get("queue_position")
            lines.append(Text(f"waiting for: {job['waiting_for']}"
                              + (f" (queue position {pos})" if pos else ""), style="yellow"))
        if (bar := _progress(job)) is not None:
            lines.append(bar)
        return Group(*lines)


def _profile_result(result: dict[str, Any]) -> list[RenderableType]:
    """A dataset-profile result: a table per data file, then images, other files, errors."""
    out: list[RenderableType] = [Text(
        f"{result.get('files', '?')} files, {human_size(int(result.get('bytes') or 0))}")]
    for t in result.get("tables") or []:
        # A heading line, not a table title: Rich wraps titles to the (narrow) table width.
        out.append(Text(f"{t.get('path')} ({t.get('format')}): {_cell(t.get('rows'))} rows, "
                        f"{_cell(t.get('duplicate_rows'))} duplicate rows", style="bold"))
        table = Table("column", "type", "missing", "distinct")
        for c in t.get("columns") or []:
            table.add_row(str(c.get("name")), _cell(c.get("type")), _cell(c.get("missing")),
                          _cell(c.get("distinct")))
        out.append(table)
        label = t.get("label")
        if isinstance(label, dict):
            dist = label.get("distribution")
            shown = (", ".join(f"{k}: {_cell(v)}" for k, v in dist.items())
                     if isinstance(dist, dict) else _cell(dist))
            out.append(Text(f"labels (column {label.get('column')!r}): {shown}"
                            + (f" (missing {_cell(label['missing'])})"
                               if label.get("missing") else "")))
    images = result.get("images")
    if isinstance(images, dict):
        grid = Table("images", "", show_header=True)
        for key, value in images.items():
            grid.add_row(str(key), _cell(value)[:120])
        out.append(grid)
    if result.get("other_files"):
        out.append(Text(f"other files: {_cell(result['other_files'])[:300]}"))
    for err in result.get("errors") or []:
        out.append(Text(f"error: {_cell(err)}", style="red"))
    return out


def _result(result: Any) -> list[RenderableType]:
    if isinstance(result, dict) and isinstance(result.get("tables"), list) \
            and "files" in result:
        return _profile_result(result)
    return [JSON(json.dumps(result, default=str))]


def _summary(job: dict[str, Any], events: list[dict[str, Any]] | None = None,
             ) -> list[RenderableType]:
    """The state of a job for people: state, reason, what it waits for, events, then the
    result (succeeded) or the last log lines (failed)."""
    state = str(job["state"])
    attempt = job.get("attempt")
    out: list[RenderableType] = [Text.from_markup(
        f"[bold]{escape(str(job['id']))}[/] {escape(str(job.get('task', '')))}: {_state(state)}"
        + (f" (attempt {attempt})" if isinstance(attempt, int) and attempt > 1 else "")
        + (" [dim](cancel requested)[/]" if job.get("cancel_requested")
           and state != "cancelled" else ""))]
    if job.get("reason"):
        out.append(Text(str(job["reason"]).splitlines()[0], style="red"))
    if job.get("waiting_for"):
        out.append(Text(f"waiting for: {job['waiting_for']}", style="yellow"))
    if state not in ("succeeded", "failed", "cancelled") and (bar := _progress(job)):
        out.append(bar)
    if events:
        table = Table("at", "state", "message", title="events", title_justify="left")
        for e in events:
            table.add_row(str(e.get("at", ""))[:19], str(e.get("state") or ""),
                          str(e.get("message") or ""))
        out.append(table)
    if state == "failed" and job.get("log_tail"):
        out.append(Text("last log lines:", style="dim"))
        out.append(Text(str(job["log_tail"]).rstrip("\n")))
    if state == "succeeded" and job.get("result") is not None:
        out.extend(_result(job["result"]))
        out.extend(_training_stop(job["result"]))
    return out


def _training_stop(result: Any) -> list[RenderableType]:
    """A fine-tune's closing lines: why training stopped, and a warning when more epochs
    may help (the ``training`` part of its result)."""
    training = result.get("training") if isinstance(result, dict) else None
    if not isinstance(training, dict) or not training.get("message"):
        return []
    lines: list[RenderableType] = [Text(f"training stopped: {training['message']}")]
    if training.get("warning"):
        lines.append(Text(f"warning: {training['warning']}", style="yellow"))
    return lines


def _print_summary(job: dict[str, Any], events: list[dict[str, Any]] | None = None) -> None:
    for part in _summary(job, events):
        console.print(part)


# waiting ---------------------------------------------------------------------------------

def _wait(client: Client, job: dict[str, Any], live: bool) -> dict[str, Any]:
    """Wait until ``job`` is terminal (live display on stderr unless ``live`` is False);
    Ctrl-C stops waiting (exit 130), not the job."""
    try:
        if not live:
            return run(lambda: client.wait_job(job["id"]))
        view = _LiveView(job)
        with Live(view, console=err_console, refresh_per_second=4, transient=True):
            def update(j: dict[str, Any]) -> None:
                view.job = j
            return run(lambda: client.wait_job(job["id"], on_update=update))
    except KeyboardInterrupt:
        err_console.print(f"Stopped waiting; job {job['id']} goes on "
                          f"(`clowder-ml jobs cancel {job['id']}` stops it).")
        raise typer.Exit(130) from None


def _finish(job: dict[str, Any], as_json: bool) -> None:
    """Print the terminal job and exit with the job's outcome."""
    if as_json:
        print_json(job)
    else:
        _print_summary(job)
    raise typer.Exit(0 if job["state"] == "succeeded" else 1)


# commands --------------------------------------------------------------------------------

@jobs_app.command("submit")
def jobs_submit(
    task: Annotated[str, typer.Argument(help="Task, e.g. dataset-profile")],
    dataset: Annotated[list[str] | None, typer.Option(
        "--dataset", "-d", help="Dataset to read (repeat for several)")] = None,
    dataset_version: Annotated[list[int] | None, typer.Option(
        "--dataset-version", help="Version of the --dataset at the same position "
                                  "(latest if omitted)")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="KEY=VALUE; VALUE is parsed as JSON when it is valid JSON")]
    = None,
    cpus: Annotated[float | None, typer.Option(help="CPUs to reserve")] = None,
    gpus: Annotated[float | None, typer.Option(help="GPUs to reserve")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Workers of tasks that have them (sets the task's workers param). "
                    "Fine-tunes train data parallel on that many Ray Train workers, each "
                    "reserving --cpus/--gpus")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory to reserve, e.g. 2G")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds before the "
                                                                    "job is stopped")] = None,
    retries: Annotated[int | None, typer.Option(help="Resubmissions after the cluster "
                                                     "was lost")] = None,
    wait: WaitOpt = False,
    as_json: JobJsonOpt = False,
) -> None:
    """Submit a job. Prints the job; with --wait follows it to the end and prints its result
    (or why it failed with the last log lines)."""
    names = dataset or []
    versions = dataset_version or []
    if versions and len(versions) != len(names):
        raise typer.BadParameter("give one --dataset-version per --dataset",
                                 param_hint="--dataset-version")
    datasets: list[str | tuple[str, int]] = (
        list(zip(names, versions, strict=True)) if versions else list(names))
    params = parse_params(param or [])
    if workers is not None:
        # The param route: the server sets the job's resources.workers from a fine-tune's
        # workers param (one source of truth), and the client sends params as given.
        if params.get("workers", workers) != workers:
            raise typer.BadParameter("--workers and --param workers=... disagree",
                                     param_hint="--workers")
        params["workers"] = workers
    mem: int | str | None = int(memory) if memory and memory.isdigit() else memory
    client = _client_factory()
    job = run(lambda: client.submit_job(task, datasets=datasets, params=params, cpus=cpus,
                                        gpus=gpus, memory=mem, timeout_s=timeout,
                                        retries=retries))
    if not wait:
        if as_json:
            print_json(job)
        else:
            err_console.print(f"Submitted job [bold]{escape(job['id'])}[/] "
                              f"({_state(str(job['state']))}).")
            sys.stdout.write(job["id"] + "\n")  # the id alone on stdout, for scripts
        return
    if as_json:
        err_console.print(f"Waiting for job {job['id']}...")
    _finish(_wait(client, job, live=not as_json), as_json)


@jobs_app.command("ls")
def jobs_ls(
    state: Annotated[str | None, typer.Option(help="Only jobs in this state")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list")] = False,
) -> None:
    """List your jobs, oldest first."""
    client = _client_factory()
    rows = run(lambda: client.list_jobs(state))
    if as_json:
        return print_json(rows)
    # ids are copied from here to other commands: never cut them
    table = Table(Column("id", no_wrap=True), "task", "state", "created", "reason")
    for j in rows:
        reason = str(j.get("reason") or "")
        table.add_row(str(j["id"]), str(j.get("task", "")), _state(str(j["state"])),
                      str(j.get("created_at") or "")[:16].replace("T", " "),
                      escape(reason if len(reason) <= 60 else reason[:59] + "…"))
    console.print(table)


@jobs_app.command("show")
def jobs_show(job_id: Annotated[str, typer.Argument(metavar="ID")],
              as_json: JobJsonOpt = False) -> None:
    """Show a job: state, reason, what it waits for, its events and its result."""
    client = _client_factory()
    job = run(lambda: client.get_job(job_id))
    if as_json:
        return print_json(job)
    _print_summary(job, run(lambda: client.job_events(job_id)))


@jobs_app.command("logs")
def jobs_logs(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    follow: Annotated[bool, typer.Option("--follow", "-f",
                                         help="Keep printing until the job ends")] = False,
) -> None:
    """Print a job's log; with -f follow it until the job is terminal."""
    client = _client_factory()
    if not follow:
        sys.stdout.write(run(lambda: client.job_logs(job_id)))
        return

    def pump() -> None:
        for text in client.follow_job_logs(job_id):
            sys.stdout.write(text)
            sys.stdout.flush()

    try:
        run(pump)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@jobs_app.command("cancel")
def jobs_cancel(job_id: Annotated[str, typer.Argument(metavar="ID")],
                wait: WaitOpt = False) -> None:
    """Ask to cancel a job and print its state; with --wait, until it is terminal."""
    client = _client_factory()
    job = run(lambda: client.cancel_job(job_id))
    if not wait:
        console.print(f"{escape(job_id)}: {_state(str(job['state']))}"
                      + (" (cancel requested)" if job.get("cancel_requested")
                         and job["state"] != "cancelled" else ""))
        return
    _finish(_wait(client, job, live=True), as_json=False)
