"""``clowder-ml sandbox ...``: run or scan untrusted Python with the platform's sandbox.

The sandbox itself (:mod:`clowder_ml.sandbox`) is imported only when a command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from clowder_ml.cli.common import console, err_console, human_size, print_json, run

sandbox_app = typer.Typer(help="Run untrusted code in the gVisor sandbox.", no_args_is_help=True)


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

    result = run(go)
    if as_json:
        print_json(result.to_dict())
    else:
        sys.stdout.buffer.write(result.stdout)
        sys.stdout.flush()
        sys.stderr.buffer.write(result.stderr)
        sys.stderr.flush()
        u = result.usage
        colour = "green" if result.ok else "red"
        err_console.print(
            f"[bold {colour}]{result.verdict}[/] exit={result.exit_code} "
            f"cpu={u.cpu_s:.2f}s wall={u.wall_s:.2f}s memory={human_size(u.peak_memory_bytes)} "
            f"disk={human_size(u.disk_bytes)} isolation={result.isolation}"
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

    report = run(lambda: scan(file.read_text(encoding="utf-8", errors="replace")))
    if as_json:
        print_json(report.to_dict())
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
