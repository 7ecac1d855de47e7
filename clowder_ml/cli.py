"""The ``clowder-ml`` command line (Typer + Rich).

Server side: ``serve``, ``demo``. Client side (talks to ``CLOWDER_ML_URL`` with
``CLOWDER_ML_TOKEN`` or the saved login): ``login``, ``upload``, ``datasets ...``,
``tokens ...``, ``users ...``. Errors print the server's message and hint, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from clowder_ml.cli_jobs import jobs_app
from clowder_ml.cli_models import models_app, tasks
from clowder_ml.errors import ClowderMLError

app = typer.Typer(help="clowder-ml: fine-tune and run models from a dataset.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
datasets_app = typer.Typer(help="Browse and fetch datasets.", no_args_is_help=True)
tokens_app = typer.Typer(help="Manage your API tokens.", no_args_is_help=True)
users_app = typer.Typer(help="Manage users (admins).", no_args_is_help=True)
sandbox_app = typer.Typer(help="Run untrusted code in the gVisor sandbox.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(tokens_app, name="tokens")
app.add_typer(users_app, name="users")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(jobs_app, name="jobs", help="Submit and follow jobs (dataset-profile, ...).")
app.add_typer(models_app, name="models", help="Registered models and their versions.")
app.command("tasks")(tasks)

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


def _client() -> Any:
    from clowder_ml.client import Client

    return Client()


def _run(fn: Callable[[], T]) -> T:
    """Run a client action; turn platform errors into a message and exit code 1."""
    try:
        return fn()
    except ClowderMLError as exc:
        err_console.print(f"[bold red]Error[/] ({exc.code}): {exc.message}")
        if exc.hint:
            err_console.print(f"[dim]Hint:[/] {exc.hint}")
        raise typer.Exit(1) from None


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


# server ----------------------------------------------------------------------------------

@app.command()
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
    from clowder_ml.settings import Settings

    overrides: dict[str, Any] = {"data_dir": data_dir} if data_dir else {}
    settings = Settings(**overrides)
    logs.configure(log_level, settings.log_json)
    local = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"  # noqa: S104
    url = settings.public_url or local
    if settings.job_api_url is None:
        # Runners on the embedded head are local; a remote cluster needs the URL set.
        settings.job_api_url = local
    err_console.print(f"clowder-ml serving at [bold]{url}[/] (data: {settings.resolved_data_dir})"
                      f"\n  API docs: {url}/docs   log in: clowder-ml login --url {url}")
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None,
                log_level=log_level.lower(), timeout_graceful_shutdown=5)


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    data_dir: Annotated[Path, typer.Option(help="Data folder")] = Path("clowder-ml-data"),
    exit_after: Annotated[bool, typer.Option("--exit", help="Stop after the walk-through")]
    = False,
) -> None:
    """Start on embedded defaults and run the main flow on a generated sample."""
    from clowder_ml import demo as demo_mod

    _run(lambda: demo_mod.run(host, port, data_dir, keep_serving=not exit_after))


# login and tokens ------------------------------------------------------------------------

@app.command()
def login(
    url: Annotated[str, typer.Option(envvar="CLOWDER_ML_URL", help="Server URL")]
    = "http://127.0.0.1:8000",
    username: Annotated[str, typer.Option(prompt=True)] = "admin",
    password: Annotated[str, typer.Option(prompt=True, hide_input=True,
                                          envvar="CLOWDER_ML_PASSWORD")] = "",
    token_name: Annotated[str, typer.Option(help="Name for the new token")] = "cli",
) -> None:
    """Log in and save a token for later commands."""
    from clowder_ml.client import Client, save_login

    client = _run(lambda: Client.login(url, username, password, token_name))
    path = save_login(client.url, client.token or "")
    console.print(f"Logged in to {client.url} as [bold]{username}[/]; token saved in {path}.")


@tokens_app.command("ls")
def tokens_ls(as_json: JsonOpt = False) -> None:
    """List your API tokens."""
    rows = _run(lambda: _client().list_tokens())
    if as_json:
        return _print_json(rows)
    table = Table("id", "name", "created", "expires", "last used")
    for t in rows:
        table.add_row(t["id"], t["name"], t["created_at"][:19], (t["expires_at"] or "never")[:19],
                      (t["last_used_at"] or "-")[:19])
    console.print(table)


@tokens_app.command("create")
def tokens_create(name: str, expires_days: Annotated[float | None, typer.Option()] = None,
                  ) -> None:
    """Create a new API token (printed once)."""
    t = _run(lambda: _client().create_token(name, expires_days))
    console.print(f"Token [bold]{t['name']}[/] (id {t['id']}); store it now, it is shown once:")
    sys.stdout.write(t["token"] + "\n")


@tokens_app.command("revoke")
def tokens_revoke(token_id: str) -> None:
    """Revoke a token by id."""
    _run(lambda: _client().revoke_token(token_id))
    console.print(f"Revoked token {token_id}.")


@users_app.command("create")
def users_create(username: str,
                 password: Annotated[str, typer.Option(prompt=True, hide_input=True,
                                                       confirmation_prompt=True)],
                 admin: Annotated[bool, typer.Option("--admin")] = False) -> None:
    """Create a user (admins only)."""
    u = _run(lambda: _client().create_user(username, password, admin))
    console.print(f"Created user [bold]{u['username']}[/].")


# uploads ---------------------------------------------------------------------------------

def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=err_console)


@app.command()
def upload(
    path: Annotated[Path, typer.Argument(help="File or folder to upload",
                                         exists=True, readable=True)],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset (created if new)")],
    dest: Annotated[str | None, typer.Option("--path", "-p",
                                             help="Path in the dataset (folder for --unzip)")]
    = None,
    unzip: Annotated[bool, typer.Option("--unzip", help="Unpack a .zip into the dataset")]
    = False,
) -> None:
    """Upload a file (or every file in a folder), resumably: after Ctrl-C or a crash, run
    the same command again and it continues where it stopped."""
    client = _client()
    items: list[tuple[Path, str | None]]
    if path.is_dir():
        base = dest.strip("/") + "/" if dest else ""
        items = [(f, base + f.relative_to(path).as_posix())
                 for f in sorted(path.rglob("*")) if f.is_file()]
    else:
        items = [(path, dest)]
    with _progress() as bar:
        for local, target in items:
            label = local.name
            hashing = bar.add_task(f"hashing {label}", total=local.stat().st_size)
            sending = bar.add_task(f"uploading {label}", total=local.stat().st_size,
                                   visible=False)

            def on_hash(done: int, total: int, t: Any = hashing) -> None:
                bar.update(t, completed=done, total=total)

            def on_send(done: int, total: int, h: Any = hashing, t: Any = sending,
                        label: str = label) -> None:
                if not bar.tasks[t].visible:
                    # First report: start the speed clock at the server's offset.
                    bar.update(h, visible=False)
                    bar.reset(t, total=total, completed=done, visible=True)
                    if done:
                        bar.console.print(f"Resuming {label} at {_size(done)}.")
                    return
                bar.update(t, completed=done, total=total)

            def send(local: Path = local, target: str | None = target,
                     on_send: Any = on_send, on_hash: Any = on_hash) -> dict[str, Any]:
                return dict(client.upload(local, dataset, target, unpack=unzip,
                                          progress=on_send, hash_progress=on_hash))

            try:
                st = _run(send)
            except KeyboardInterrupt:
                bar.stop()
                err_console.print("\nInterrupted. Run the same command again to resume.")
                raise typer.Exit(130) from None
            bar.update(hashing, visible=False)
            err_console.print(f"{label} -> {dataset}:{st['path'] or '/'} "
                              f"(version {st['version']})")


# datasets --------------------------------------------------------------------------------

@datasets_app.command("ls")
def datasets_ls(as_json: JsonOpt = False) -> None:
    """List the datasets you can see."""
    rows = _run(lambda: _client().list_datasets())
    if as_json:
        return _print_json(rows)
    table = Table("name", "owner", "version", "access", "id", "description")
    for d in rows:
        table.add_row(d["name"], d["owner"], str(d["latest_version"]), d["permission"], d["id"],
                      d["description"][:40])
    console.print(table)


@datasets_app.command("create")
def datasets_create(name: str, description: str = "") -> None:
    """Create an empty dataset."""
    d = _run(lambda: _client().create_dataset(name, description))
    console.print(f"Created dataset [bold]{d['name']}[/] ({d['id']}).")


@datasets_app.command("show")
def datasets_show(
    name: str,
    version: Annotated[int | None, typer.Option(help="Version (latest if omitted)")] = None,
    folder: Annotated[str, typer.Option("--folder", help="Folder to list")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Show a dataset: details, versions and the files of one folder."""
    client = _client()
    d = _run(lambda: client.get_dataset(name))
    versions = _run(lambda: client.versions(name))
    tree = _run(lambda: client.tree(name, folder, version)) if d["latest_version"] else None
    if as_json:
        return _print_json({"dataset": d, "versions": versions, "tree": tree})
    console.print(f"[bold]{d['name']}[/] ({d['id']}) owner {d['owner']}, "
                  f"latest version {d['latest_version']}, your access: {d['permission']}")
    if d["description"]:
        console.print(d["description"])
    if versions:
        console.print("Versions: " + ", ".join(
            f"{v['number']} ({v['file_count']} files, {_size(v['total_bytes'])})"
            for v in versions[-5:]))
    if tree:
        table = Table("name", "kind", "size", "files", title=f"/{tree['path']}")
        for e in tree["entries"]:
            table.add_row(e["name"] + ("/" if e["kind"] == "folder" else ""), e["kind"],
                          _size(e["size"]), str(e["files"]))
        console.print(table)


@datasets_app.command("download")
def datasets_download(
    name: str,
    output: Annotated[Path, typer.Option("--output", "-o", help="File or folder to write")],
    path: Annotated[str | None, typer.Option("--path", "-p",
                                             help="File to fetch; whole version as zip if omitted")]
    = None,
    version: Annotated[int | None, typer.Option(help="Version (latest if omitted)")] = None,
) -> None:
    """Download one file (resumable, sha256-checked) or a whole version as a zip."""
    client = _client()
    if path is None:
        v = version or _run(lambda: client.get_dataset(name))["latest_version"]
        out = _run(lambda: client.download_version(name, v, output))
        err_console.print(f"Wrote version {v} of {name} to {out}.")
        return
    with _progress() as bar:
        task = bar.add_task(f"downloading {path}", total=None)
        out = _run(lambda: client.download(
            name, path, output, version,
            progress=lambda d, t: bar.update(task, completed=d, total=t)))
    err_console.print(f"Wrote {out}.")


@datasets_app.command("preview")
def datasets_preview(name: str, path: str, rows: int = 10, as_json: JsonOpt = False) -> None:
    """Schema, row count and first rows of a CSV, TSV, JSONL or Parquet file."""
    p = _run(lambda: _client().preview(name, path, rows))
    if as_json:
        return _print_json(p)
    cols = [c["name"] for c in p["columns"]]
    table = Table(*[f"{c['name']}\n[dim]{c['type']}[/]" for c in p["columns"]],
                  title=f"{path}: {p['row_count']} rows ({p['format']})")
    for r in p["rows"]:
        table.add_row(*[str(r.get(c, "")) if isinstance(r, dict) else str(r) for c in cols])
    console.print(table)


@datasets_app.command("share")
def datasets_share(name: str, username: str,
                   permission: Annotated[str, typer.Option(help="read or write")] = "read",
                   ) -> None:
    """Share a dataset with another user."""
    _run(lambda: _client().share(name, username, permission))
    console.print(f"Shared {name} with {username} ({permission}).")


@datasets_app.command("rm")
def datasets_rm(name: str, yes: Annotated[bool, typer.Option("--yes", "-y")] = False) -> None:
    """Delete a dataset and all its versions."""
    if not yes:
        typer.confirm(f"Delete dataset {name} and all its versions?", abort=True)
    _run(lambda: _client().delete_dataset(name))
    console.print(f"Deleted {name}.")


# sandbox ---------------------------------------------------------------------------------

@sandbox_app.command("run")
def sandbox_run(
    file: Annotated[Path, typer.Argument(help="Python file to run", exists=True,
                                         dir_okay=False, readable=True)],
    args: Annotated[list[str] | None, typer.Argument(help="Arguments for the program")]
    = None,
    input_dir: Annotated[Path | None, typer.Option(
        "--input", help="Folder mounted read-only at /data", exists=True, file_okay=False)]
    = None,
    timeout: Annotated[float | None, typer.Option(help="Wall-time limit in seconds")] = None,
    cpu: Annotated[float | None, typer.Option(help="CPU-time limit in seconds")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory limit, e.g. 512M")] = None,
    disk: Annotated[str | None, typer.Option(help="Work-folder size, e.g. 256M")] = None,
    output: Annotated[str | None, typer.Option(help="Bytes kept of stdout and of stderr")]
    = None,
    processes: Annotated[int | None, typer.Option(help="Most processes/threads at once")]
    = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e",
                                                  help="KEY=VALUE for the program")] = None,
    collect_dir: Annotated[Path | None, typer.Option(
        "--collect", help="Copy the work folder's files here afterwards")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Run FILE in a fresh sandbox (gVisor unless the operator chose bubblewrap) and report
    its verdict. Exits 0 when the verdict is ok, 1 otherwise."""
    from clowder_ml.errors import ValidationFailed
    from clowder_ml.sandbox import Limits, get_sandbox
    from clowder_ml.settings import Settings

    def go() -> Any:
        environ: dict[str, str] = {}
        for item in env or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValidationFailed(f"--env needs KEY=VALUE, got {item!r}")
            environ[key] = value
        limits = Limits().with_(wall_s=timeout, cpu_s=cpu, memory_bytes=memory,
                                disk_bytes=disk, output_bytes=output, processes=processes)
        sandbox = get_sandbox(Settings())
        return sandbox.run_python(file, args or [], input_dir=input_dir, env=environ,
                                  limits=limits, collect_into=collect_dir)

    result = _run(go)
    if as_json:
        _print_json(result.to_dict())
    else:
        sys.stdout.buffer.write(result.stdout)
        sys.stdout.flush()
        sys.stderr.buffer.write(result.stderr)
        sys.stderr.flush()
        u = result.usage
        colour = "green" if result.ok else "red"
        err_console.print(
            f"[bold {colour}]{result.verdict}[/] exit={result.exit_code} "
            f"cpu={u.cpu_s:.2f}s wall={u.wall_s:.2f}s memory={_size(u.peak_memory_bytes)} "
            f"disk={_size(u.disk_bytes)} isolation={result.isolation}"
            + (" [yellow](weaker than gVisor)[/]" if result.weaker_isolation else ""))
        if result.detail and not result.ok:
            err_console.print(f"[dim]{result.detail}[/]")
        if result.files or result.refused:
            err_console.print(f"Collected {len(result.files)} files into {collect_dir}"
                              + (f"; refused {result.refused}" if result.refused else ""))
    raise typer.Exit(0 if result.ok else 1)



@sandbox_app.command("scan")
def sandbox_scan(
    file: Annotated[Path, typer.Argument(help="Python file to check", exists=True,
                                         dir_okay=False, readable=True)],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Check FILE with the pre-run scanner (nothing is executed) and list its findings.
    Exits 1 when a finding would block the run, 0 otherwise."""
    from clowder_ml.sandbox.scan import scan

    report = _run(lambda: scan(file.read_text(encoding="utf-8", errors="replace")))
    if as_json:
        _print_json(report.to_dict())
    else:
        for f in report.findings:
            colour = "red" if f in report.blocking else "yellow"
            console.print(f"{file}:{f.line}:{f.column + 1}: [{colour}]{f.severity}[/] "
                          f"{f.rule_id} {f.message}" + (f" [dim]({f.hint})[/]" if f.hint
                                                         else ""), markup=True,
                          highlight=False)
        for note in report.notes:
            err_console.print(f"[dim]{note}[/]")
        verdict = "blocked" if report.blocked else "ok"
        err_console.print(f"{len(report.findings)} findings; {verdict}")
    raise typer.Exit(1 if report.blocked else 0)

def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()
