"""``clowder-ml models ...`` and ``clowder-ml tasks``: the model registry and the task
catalogue. ``--json`` prints one JSON document on stdout and nothing else.

:mod:`clowder_ml.cli.app` adds ``models_app`` as ``models`` and registers ``tasks`` on the
root app.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from clowder_ml.cli.common import JsonOpt, console, human_size, make_client, print_json, run

models_app = typer.Typer(help="Registered models and their versions.", no_args_is_help=True)


def _metrics(m: dict[str, Any]) -> str:
    shown = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
             for k, v in m.items() if k.startswith("eval_")]
    return ", ".join(shown)


@models_app.command("ls")
def models_ls(as_json: JsonOpt = False) -> None:
    """Models you own or that are shared with you (all, for an admin)."""
    rows = run(lambda: make_client().list_models())
    if as_json:
        print_json(rows)
        return
    table = Table("name", "owner", "versions", "latest", "description")
    for m in rows:
        table.add_row(m["name"], m["owner"], str(m["versions"]), str(m["latest"] or "-"),
                      m["description"])
    console.print(table)


@models_app.command("info")
def models_info(name: str, as_json: JsonOpt = False) -> None:
    """A model: description, tags, aliases, best-version rule."""
    m = run(lambda: make_client().model(name))
    if as_json:
        print_json(m)
        return
    console.print(f"[bold]{m['ref']}[/] ({m['versions']} version(s), you: {m['permission']})")
    console.print(f"  description: {m['description'] or '-'}")
    console.print(f"  aliases: {', '.join(f'{k}->{v}' for k, v in m['aliases'].items()) or '-'}"
                  f" (latest->{m['latest'] or '-'})")
    rule = f"{m['best_mode']} {m['best_metric']}" if m["best_metric"] else "none"
    console.print(f"  best rule: {rule}")


@models_app.command("versions")
def models_versions(name: str, as_json: JsonOpt = False) -> None:
    """A model's versions: number, metrics, digest, aliases, source job."""
    rows = run(lambda: make_client().model_versions(name))
    if as_json:
        print_json(rows)
        return
    table = Table("version", "metrics", "digest", "size", "aliases", "job", "created")
    for v in rows:
        table.add_row(str(v["version"]), _metrics(v["metrics"]), v["digest"][:12],
                      human_size(v["size"]), ", ".join(v["aliases"]), v["job_id"] or "-",
                      v["created_at"][:19])
    console.print(table)


@models_app.command("show")
def models_show(ref: Annotated[str, typer.Argument(help="NAME/N or NAME@latest")],
                as_json: JsonOpt = False) -> None:
    """One version: where it came from (job, base model, data, params) and its metrics."""
    v = run(lambda: make_client().model_version(ref))
    if as_json:
        print_json(v)
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
    out = run(lambda: make_client().download_model(ref, output))
    console.print(f"Downloaded {ref} to {out}")


@models_app.command("alias")
def models_alias(name: str, version: int, alias: str,
                 reason: Annotated[str, typer.Option(help="Why (kept in the history)")] = "",
                 as_json: JsonOpt = False) -> None:
    """Point ALIAS (production, staging, ...) at VERSION, moving it if it exists."""
    out = run(lambda: make_client().set_model_alias(name, version, alias, reason))
    if as_json:
        print_json(out)
        return
    console.print(f"{name}@{alias} -> version {version}")


@models_app.command("unalias")
def models_unalias(name: str, alias: str) -> None:
    """Remove ALIAS from the model (recorded in its history)."""
    run(lambda: make_client().remove_model_alias(name, alias))
    console.print(f"Removed {name}@{alias}")


@models_app.command("aliases")
def models_aliases(name: str, as_json: JsonOpt = False) -> None:
    """Current aliases and the history of every move."""
    out = run(lambda: make_client().model_aliases(name))
    if as_json:
        print_json(out)
        return
    table = Table("alias", "version")
    for a in out["aliases"]:
        table.add_row(a["alias"], str(a["version"]))
    console.print(table)
    hist = Table("when", "alias", "from", "to", "by", "why")
    for e in out["history"]:
        hist.add_row(e["at"][:19], e["alias"], str(e["from_version"] or "-"),
                     str(e["to_version"] or "-"), e["by"] or "registry", e["reason"])
    console.print(hist)


@models_app.command("rule")
def models_rule(name: str,
                metric: Annotated[str | None, typer.Argument(help="e.g. eval_accuracy")] = None,
                mode: Annotated[str, typer.Option(help="max or min")] = "max",
                clear: Annotated[bool, typer.Option("--clear", help="Remove the rule")] = False,
                ) -> None:
    """Set the best-version rule: the 'best' alias follows the best METRIC (max or min)."""
    if clear:
        m = run(lambda: make_client().update_model(name, clear_best_rule=True))
    elif metric is None:
        raise typer.BadParameter("Give a METRIC, or --clear.")
    else:
        m = run(lambda: make_client().update_model(name, best_metric=metric, best_mode=mode))
    best = m["aliases"].get("best")
    console.print(f"{name}: best rule {m['best_mode']} {m['best_metric']}; best -> "
                  f"{best if best is not None else '-'}" if m["best_metric"]
                  else f"{name}: no best rule")


@models_app.command("describe")
def models_describe(ref: str, text: str) -> None:
    """Set the description of a model (NAME) or of one version (NAME/N)."""
    def go() -> None:
        client = make_client()
        if "/" in ref or "@" in ref:
            v = client.update_model_version(ref, description=text)
            console.print(f"Described {v['ref']}")
        else:
            client.update_model(ref, description=text)
            console.print(f"Described {ref}")

    run(go)


@models_app.command("compare")
def models_compare(name: str, versions: Annotated[list[int], typer.Argument(min=1)],
                   as_json: JsonOpt = False) -> None:
    """Versions side by side: params that differ, metrics, data, base model."""
    out = run(lambda: make_client().compare_models(name, versions))
    if as_json:
        print_json(out)
        return
    table = Table("", *[f"v{n}" for n in out["versions"]])
    for key, values in out["metrics"].items():
        table.add_row(key, *[f"{v:.4g}" if isinstance(v, float) else str(v) for v in values])
    for key, values in out["params_differing"].items():
        table.add_row(f"param {key}", *[json.dumps(v) for v in values])
    table.add_row("data", *[", ".join(d) for d in out["data"]])
    table.add_row("base model", *out["base_model"])
    table.add_row("digest", *[d[:12] for d in out["digest"]])
    console.print(table)


@models_app.command("lineage")
def models_lineage(ref: Annotated[str, typer.Argument(help="NAME/N, NAME@ALIAS")],
                   as_json: JsonOpt = False) -> None:
    """Where a version came from and what used it (predictions, fine-tunes)."""
    out = run(lambda: make_client().model_lineage(ref))
    if as_json:
        print_json(out)
        return

    def node(n: dict[str, Any] | None) -> str:
        if not n:
            return "-"
        if n["kind"] == "dataset":
            return f"dataset {n['owner']}:{n['name']} v{n['version']}"
        if n["kind"] == "model":
            return f"model {n['ref']}"
        if n["kind"] == "import":
            return f"imported from {node(n.get('dataset'))} {n.get('path') or ''}"
        return f"{n['kind']} {n.get('ref', '')}"

    console.print(f"[bold]{out['model']['ref']}[/] ({out['source']}); parent: "
                  f"{node(out['parent'])}")
    made = out["produced_by"]
    if made:
        console.print(f"  made by job {made['job']['id']} ({made['job']['task']}) from "
                      + ", ".join(node(n) for n in made["inputs"]))
    for used in out["used_by"]:
        console.print(f"  used by job {used['job']['id']} ({used['job']['task']}, "
                      f"{used['job']['state']}) -> "
                      + (", ".join(node(n) for n in used["outputs"]) or "no outputs yet"))


@models_app.command("zip")
def models_zip(ref: str, output: Annotated[Path, typer.Option("--output", "-o")]) -> None:
    """Download a version as one zip of its Hugging Face folder."""
    out = run(lambda: make_client().download_model_zip(ref, output))
    console.print(f"Wrote {out}")


@models_app.command("export")
def models_export(
    ref: str,
    dataset: Annotated[str | None, typer.Argument(help="A dataset here to add the files to")]
    = None,
    path: Annotated[str, typer.Option(help="Folder in the dataset")] = "",
    to_clowder: Annotated[str | None, typer.Option(
        "--to-clowder", metavar="DATASET_ID",
        help="Upload the version (a zip) into this Clowder dataset instead")] = None,
    clowder_key: Annotated[str | None, typer.Option(
        "--clowder-key", envvar="CLOWDER_API_KEY",
        help="Your Clowder API key (asked for when not given)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a version's files (and its metadata) to a dataset as a new dataset version, or
    with --to-clowder upload it with its metadata into a Clowder dataset."""
    if (dataset is None) == (to_clowder is None):
        raise typer.BadParameter("Give a DATASET or --to-clowder DATASET_ID (one of them).")
    if to_clowder is not None:
        key = clowder_key or typer.prompt("Clowder API key", hide_input=True)
        out = run(lambda: make_client().export_model_to_clowder(ref, to_clowder, key))
        if as_json:
            print_json(out)
            return
        console.print(f"Uploaded {out['model']} to Clowder dataset {out['dataset_id']} as "
                      f"{out['file']} (file {out['file_id']}, {human_size(out['bytes'] or 0)})"
                      f"; metadata {out['metadata_id']}")
        return
    assert dataset is not None
    out = run(lambda: make_client().export_model(ref, dataset, path))
    if as_json:
        print_json(out)
        return
    console.print(f"Exported {ref} to {out['dataset']}:{out['path']} "
                  f"(dataset version {out['version']})")


@models_app.command("import")
def models_import(name: str,
                  dataset: Annotated[str, typer.Option(help="Dataset holding the folder")],
                  path: Annotated[str, typer.Option(help="Folder with config.json")] = "",
                  description: str = "", as_json: JsonOpt = False) -> None:
    """Register an uploaded Hugging Face model folder (safetensors only) as a version, to
    fine-tune from (base_model=NAME@latest)."""
    out = run(lambda: make_client().import_model(name, dataset, path, description=description))
    if as_json:
        print_json(out)
        return
    console.print(f"Imported {out['version']['ref']} (digest {out['version']['digest'][:12]})")
    if out["skipped"]:
        console.print(f"  left out (pickle-based): {', '.join(out['skipped'])}")


@models_app.command("rm")
def models_rm(ref: Annotated[str, typer.Argument(help="NAME/N")],
              force: Annotated[bool, typer.Option(help="Also remove its aliases")] = False,
              ) -> None:
    """Delete a version (refused while an alias points at it, unless --force)."""
    run(lambda: make_client().delete_model_version(ref, force))
    console.print(f"Deleted {ref}")


@models_app.command("share")
def models_share(name: str, username: str,
                 write: Annotated[bool, typer.Option(help="Allow changes")] = False) -> None:
    """Let another user read (or, with --write, change) the model."""
    run(lambda: make_client().share_model(name, username, "write" if write else "read"))
    console.print(f"Shared {name} with {username} ({'write' if write else 'read'})")


@models_app.command("reproduce")
def models_reproduce(ref: Annotated[str, typer.Argument(help="NAME/N")],
                     cpus: Annotated[float | None, typer.Option(
                         help="Re-run with other CPUs (changes the thread count)")] = None,
                     wait: Annotated[bool, typer.Option(help="Wait for the verdict")] = False,
                     timeout: Annotated[float | None, typer.Option()] = None,
                     as_json: JsonOpt = False) -> None:
    """Re-run a version's job and say whether the result is bit-identical, and if not,
    where (weights, metrics) and why (the recorded environment facts that differ)."""
    def go() -> dict[str, Any]:
        client = make_client()
        started: dict[str, Any] = client.reproduce_model(ref, cpus=cpus)
        if not wait:
            return started
        done: dict[str, Any] = client.wait_reproduction(ref, started["id"], timeout_s=timeout)
        return done

    out = run(go)
    if as_json:
        print_json(out)
        return
    console.print(f"[bold]{out['verdict']}[/] ({out['ref']}, job {out['job_id']}): {out['why']}")
    for d in out["differences"]:
        if d["kind"] == "weights":
            console.print(f"  weights: max |diff| {d['max_abs_diff']:.3g} in "
                          f"{d['tensors_differing']} tensor(s)")
        elif d["kind"] == "metric":
            console.print(f"  metric {d['name']}: {d['original']} -> {d['reproduced']}")
        elif d["kind"] == "environment":
            console.print(f"  {d['fact']}: {d['original']} -> {d['reproduced']}")


def tasks(as_json: JsonOpt = False) -> None:
    """The tasks jobs can run, with their params (name, type, default)."""
    rows = run(lambda: make_client().list_tasks())
    if as_json:
        print_json(rows)
        return
    for t in rows:
        console.print(f"[bold]{t['name']}[/]: {t['summary']}")
        props = t["params_schema"].get("properties", {})
        required = set(t["params_schema"].get("required", []))
        table = Table("param", "type", "default", "description", show_edge=False)
        for name, spec in props.items():
            kind = spec.get("type") or "/".join(
                # A constant ("auto") says more than its type ("string").
                str(a.get("const", a.get("type", "?"))) for a in spec.get("anyOf", []))
            table.add_row(name + (" *" if name in required else ""), str(kind),
                          "" if name in required else json.dumps(spec.get("default")),
                          spec.get("description", ""))
        console.print(table)
