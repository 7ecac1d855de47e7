"""``clowder-ml models ...`` and ``clowder-ml tasks``: the model registry and the task
catalogue. ``--json`` prints one JSON document on stdout and nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

models_app = typer.Typer(help="Registered models and their versions.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


def _metrics(m: dict[str, Any]) -> str:
    shown = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
             for k, v in m.items() if k.startswith("eval_")]
    return ", ".join(shown)


@models_app.command("ls")
def models_ls(as_json: JsonOpt = False) -> None:
    """Your models (all, for an admin)."""
    from clowder_ml.cli import _client, _print_json, _run, console

    rows = _run(lambda: _client().list_models())
    if as_json:
        _print_json(rows)
        return
    table = Table("name", "owner", "versions", "latest", "description")
    for m in rows:
        table.add_row(m["name"], m["owner"], str(m["versions"]), str(m["latest"] or "-"),
                      m["description"])
    console.print(table)


@models_app.command("versions")
def models_versions(name: str, as_json: JsonOpt = False) -> None:
    """A model's versions: number, metrics, digest, aliases, source job."""
    from clowder_ml.cli import _client, _print_json, _run, _size, console

    rows = _run(lambda: _client().model_versions(name))
    if as_json:
        _print_json(rows)
        return
    table = Table("version", "metrics", "digest", "size", "aliases", "job", "created")
    for v in rows:
        table.add_row(str(v["version"]), _metrics(v["metrics"]), v["digest"][:12],
                      _size(v["size"]), ", ".join(v["aliases"]), v["job_id"] or "-",
                      v["created_at"][:19])
    console.print(table)


@models_app.command("show")
def models_show(ref: Annotated[str, typer.Argument(help="NAME/N or NAME@latest")],
                as_json: JsonOpt = False) -> None:
    """One version: where it came from (job, base model, data, params) and its metrics."""
    from clowder_ml.cli import _client, _print_json, _run, console

    v = _run(lambda: _client().model_version(ref))
    if as_json:
        _print_json(v)
        return
    console.print(f"[bold]{v['ref']}[/] ({', '.join(v['aliases']) or 'no aliases'})")
    for key in ("task", "base_model", "job_id", "digest", "size", "created_at"):
        console.print(f"  {key}: {v[key]}")
    console.print(f"  inputs: {json.dumps(v['inputs'].get('inputs', []))}")
    console.print(f"  params: {json.dumps(v['params'])}")
    console.print(f"  metrics: {json.dumps(v['metrics'])}")


@models_app.command("download")
def models_download(ref: Annotated[str, typer.Argument(help="NAME/N or NAME@latest")],
                    output: Annotated[Path, typer.Option("--output", "-o")] = Path(".")
                    ) -> None:
    """Download a version's Hugging Face folder (every file verified by sha256)."""
    from clowder_ml.cli import _client, _run, console

    out = _run(lambda: _client().download_model(ref, output))
    console.print(f"Downloaded {ref} to {out}")


def tasks(as_json: JsonOpt = False) -> None:
    """The tasks jobs can run, with their params (name, type, default)."""
    from clowder_ml.cli import _client, _print_json, _run, console

    rows = _run(lambda: _client().list_tasks())
    if as_json:
        _print_json(rows)
        return
    for t in rows:
        console.print(f"[bold]{t['name']}[/]: {t['summary']}")
        props = t["params_schema"].get("properties", {})
        required = set(t["params_schema"].get("required", []))
        table = Table("param", "type", "default", "description", show_edge=False)
        for name, spec in props.items():
            kind = spec.get("type") or "/".join(
                str(a.get("type", a.get("const", "?"))) for a in spec.get("anyOf", []))
            table.add_row(name + (" *" if name in required else ""), str(kind),
                          "" if name in required else json.dumps(spec.get("default")),
                          spec.get("description", ""))
        console.print(table)
