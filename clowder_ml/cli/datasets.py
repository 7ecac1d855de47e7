"""``clowder-ml upload`` and ``clowder-ml datasets ...``: resumable uploads, and browsing
and fetching datasets.

``upload`` is registered on the root app by :mod:`clowder_ml.cli.app`, which also adds
``datasets_app`` as ``datasets``. Transfer progress goes to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from clowder_ml.cli.common import (
    JsonOpt,
    console,
    err_console,
    human_size,
    make_client,
    print_json,
    run,
)

datasets_app = typer.Typer(help="Browse and fetch datasets.", no_args_is_help=True)


# uploads ---------------------------------------------------------------------------------

def _progress() -> Progress:
    """The transfer bars of ``upload`` and ``datasets download`` (on stderr)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=err_console)


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
    client = make_client()
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
                        bar.console.print(f"Resuming {label} at {human_size(done)}.")
                    return
                bar.update(t, completed=done, total=total)

            def send(local: Path = local, target: str | None = target,
                     on_send: Any = on_send, on_hash: Any = on_hash) -> dict[str, Any]:
                return dict(client.upload(local, dataset, target, unpack=unzip,
                                          progress=on_send, hash_progress=on_hash))

            try:
                st = run(send)
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
    rows = run(lambda: make_client().list_datasets())
    if as_json:
        return print_json(rows)
    table = Table("name", "owner", "version", "access", "id", "description")
    for d in rows:
        table.add_row(d["name"], d["owner"], str(d["latest_version"]), d["permission"], d["id"],
                      d["description"][:40])
    console.print(table)


@datasets_app.command("create")
def datasets_create(name: str, description: str = "") -> None:
    """Create an empty dataset."""
    d = run(lambda: make_client().create_dataset(name, description))
    console.print(f"Created dataset [bold]{d['name']}[/] ({d['id']}).")


@datasets_app.command("show")
def datasets_show(
    name: str,
    version: Annotated[int | None, typer.Option(help="Version (latest if omitted)")] = None,
    folder: Annotated[str, typer.Option("--folder", help="Folder to list")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Show a dataset: details, versions and the files of one folder."""
    client = make_client()
    d = run(lambda: client.get_dataset(name))
    versions = run(lambda: client.versions(name))
    tree = run(lambda: client.tree(name, folder, version)) if d["latest_version"] else None
    if as_json:
        return print_json({"dataset": d, "versions": versions, "tree": tree})
    console.print(f"[bold]{d['name']}[/] ({d['id']}) owner {d['owner']}, "
                  f"latest version {d['latest_version']}, your access: {d['permission']}")
    if d["description"]:
        console.print(d["description"])
    if versions:
        console.print("Versions: " + ", ".join(
            f"{v['number']} ({v['file_count']} files, {human_size(v['total_bytes'])})"
            for v in versions[-5:]))
    if tree:
        table = Table("name", "kind", "size", "files", title=f"/{tree['path']}")
        for e in tree["entries"]:
            table.add_row(e["name"] + ("/" if e["kind"] == "folder" else ""), e["kind"],
                          human_size(e["size"]), str(e["files"]))
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
    client = make_client()
    if path is None:
        v = version or run(lambda: client.get_dataset(name))["latest_version"]
        out = run(lambda: client.download_version(name, v, output))
        err_console.print(f"Wrote version {v} of {name} to {out}.")
        return
    with _progress() as bar:
        task = bar.add_task(f"downloading {path}", total=None)
        out = run(lambda: client.download(
            name, path, output, version,
            progress=lambda d, t: bar.update(task, completed=d, total=t)))
    err_console.print(f"Wrote {out}.")


@datasets_app.command("preview")
def datasets_preview(name: str, path: str, rows: int = 10, as_json: JsonOpt = False) -> None:
    """Schema, row count and first rows of a CSV, TSV, JSONL or Parquet file."""
    p = run(lambda: make_client().preview(name, path, rows))
    if as_json:
        return print_json(p)
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
    run(lambda: make_client().share(name, username, permission))
    console.print(f"Shared {name} with {username} ({permission}).")


@datasets_app.command("rm")
def datasets_rm(name: str, yes: Annotated[bool, typer.Option("--yes", "-y")] = False) -> None:
    """Delete a dataset and all its versions."""
    if not yes:
        typer.confirm(f"Delete dataset {name} and all its versions?", abort=True)
    run(lambda: make_client().delete_dataset(name))
    console.print(f"Deleted {name}.")
