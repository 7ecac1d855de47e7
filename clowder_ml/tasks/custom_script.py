"""``custom-script``: run a user's own ``train.py`` (or ``predict.py``) from the dataset,
entirely inside the gVisor sandbox, and turn what it writes into a model version (or a
predictions file) like any other task's.

Contract for the script
-----------------------
* It runs with the platform's Python and packages (torch, safetensors, numpy... as installed
  on the node), as uid 65534, with **no network**, under the job's limits (``timeout_s``
  wall time, ``memory``, ``disk`` for the work folder).
* ``/data`` is the dataset version (read-only; the script itself is there too), ``/work`` is
  the writable working directory, ``/code/<name>.py`` the script as it runs (read-only).
* ``/work/args.json`` holds the ``args`` param (a JSON object). The environment carries
  ``CLOWDER_ML_SEED`` (the ``seed`` param, also ``PYTHONHASHSEED``; ``random`` is seeded with
  it before the script starts), ``CLOWDER_ML_MODE`` (``train``/``predict``) and
  ``OMP_NUM_THREADS`` (the job's CPU reservation).
* **Outputs**: everything the script writes under ``/work/output/`` (created before it
  starts). In ``train`` mode that folder is the model: it must hold ``model.safetensors``
  (safetensors format, checked) and ``config.json``. In ``predict`` mode it must hold
  ``predictions.csv``, which is added to the dataset as a new version (the user needs write
  access to the dataset, checked at submission). Pickle weights (``.bin``, ``.pt``, ``.pth``,
  ``.pkl``, ``.pickle``, ``.ckpt``, ``.joblib``) anywhere in the output refuse the job: loading
  them runs code. ``manifest.json`` and ``metrics.json`` are written by the platform (the
  script's own files of those names are replaced).
* **Metrics**: JSON lines appended to ``/work/metrics.jsonl``, one object per line:
  ``{"step": 10, "name": "loss", "value": 0.42}`` (``step`` an int >= 0, defaulting to the line
  number; ``value`` a finite number). They are **streamed while the script runs**: the host
  follows the file in the sandbox's work folder (a host tmpfs mounted at /work, so no new
  mount or writable path; see :mod:`clowder_ml.sandbox.follow`), every
  :data:`METRICS_POLL_S`, and reports each point as soon as its line ends with a newline
  (on the job within ~1-2 s, the runner's reporter batching once a second); a last line
  without a newline is read when the script ends. Each line is reported once, in order,
  also when the script fails. Write and flush whole lines (``print(..., flush=True)`` or
  ``open(..., "a")`` per line). Rewriting the file from the start is tolerated (lines
  already reported are not reported again). Caps: :data:`MAX_METRIC_LINES` lines,
  :data:`MAX_METRIC_LINE_BYTES` per line, :data:`MAX_METRIC_BYTES` read in all (the file
  itself counts against ``disk``). Bad lines are skipped and counted in a job event. The
  job's result ``metrics`` is the last value of each name.
* The script's stdout and stderr (each capped at :data:`OUTPUT_BYTES`) go to the job log once
  it ends.
* Failures: any verdict other than ``ok`` fails the job with one line: the limit reached
  (timeout, memory limit, ...) or, for an exception, ``train.py, line N: Type: message``.

Before anything runs, the script passes the pre-run scan
(:mod:`clowder_ml.sandbox.scan`): findings at or above ``settings.scan_block_at`` refuse the
job, naming the finding. Only the script is scanned; the sandbox is the boundary either way.

Not done: mounting a registered model for ``predict`` mode (the script can read model files
uploaded to the dataset), and importing helper modules next to the script (the script is one
file; it can read any file in /data).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from clowder_ml.errors import TrainingFailed, ValidationFailed
from clowder_ml.ml.models import is_safetensors
from clowder_ml.tasks.outputs import MODEL_DIR, PREDICTIONS_FILE, Publish
from clowder_ml.tasks.params import TaskParams
from clowder_ml.tasks.registry import TaskDef

if TYPE_CHECKING:
    from clowder_ml.sandbox import SandboxResult
    from clowder_ml.settings import Settings
    from clowder_ml.tasks.context import TaskContext

TASK = "custom-script"
#: Where the script writes its outputs and metrics, inside the sandbox (relative to /work).
OUTPUT_DIR = "output"
METRICS_FILE = "metrics.jsonl"
#: File name endings refused in the output: pickle (or pickle-based) formats.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
#: Files the platform writes into the model folder (the script's own are replaced).
PLATFORM_FILES = ("manifest.json", "metrics.json")
#: stdout and stderr captured from the script, each.
OUTPUT_BYTES = 8 << 20
#: The most metric lines read from metrics.jsonl.
MAX_METRIC_LINES = 100_000
#: The longest metric line parsed (longer ones are skipped).
MAX_METRIC_LINE_BYTES = 64 << 10
#: The most bytes of metrics.jsonl read from the sandbox, in all.
MAX_METRIC_BYTES = 32 << 20
#: How often the host checks metrics.jsonl for new lines while the script runs (the
#: runner's reporter then sends them within its interval, ~1 s).
METRICS_POLL_S = 0.25
_BOOTSTRAP_NAME = "_clowder_bootstrap.py"
_ARGS_NAME = "_clowder_args.json"

# Runs first in the sandbox: prepares /work, seeds, then runs the user's script as __main__.
_BOOTSTRAP = """\
import os, random, runpy, shutil, sys
os.makedirs("/work/output", exist_ok=True)
shutil.copyfile("/code/{args}", "/work/args.json")
random.seed(int(os.environ["CLOWDER_ML_SEED"]))
script = "/code/" + os.environ["CLOWDER_ML_SCRIPT"]
sys.argv = [script]
sys.path[0] = "/code"
runpy.run_path(script, run_name="__main__")
"""

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class CustomScriptParams(TaskParams):
    """Params of ``custom-script`` (module docstring: what the script sees and must do)."""

    model_name: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Registry name the new version is registered under (train mode)")
    script: str = Field(default="train.py", min_length=4, max_length=1024,
                        description="Path of the .py script in the dataset")
    mode: Literal["train", "predict"] = Field(
        default="train", description="train: /work/output is the model; predict: "
        "/work/output/predictions.csv is added to the dataset")
    args: dict[str, Any] = Field(default_factory=dict,
                                 description="Passed to the script as /work/args.json")
    timeout_s: float = Field(default=600.0, gt=0, le=7 * 24 * 3600,
                             description="Wall-time limit of the script")
    memory: str = Field(default="2G", max_length=32, description="Memory limit (512M, 4G)")
    disk: str = Field(default="1G", max_length=32,
                      description="Size of the writable work folder /work (outputs included)")
    seed: int = Field(default=42, ge=0, le=2**31 - 1)

    @field_validator("script")
    @classmethod
    def _script_path(cls, v: str) -> str:
        parts = v.split("/")
        if (not v.endswith(".py") or v.startswith("/") or "\\" in v or "\x00" in v
                or any(p in ("", ".", "..") for p in parts)):
            raise ValueError("must be the relative path of a .py file in the dataset")
        if not _SAFE_NAME.match(parts[-1]) or parts[-1].startswith("_clowder"):
            raise ValueError("the file name must be plain letters, digits, '.', '_' or '-'")
        return v

    @field_validator("memory", "disk")
    @classmethod
    def _size(cls, v: str) -> str:
        from clowder_ml.sandbox.limits import parse_size

        try:
            parse_size(v)
        except ValidationFailed as exc:
            raise ValueError(exc.message) from None
        return v

    @model_validator(mode="after")
    def _check(self) -> CustomScriptParams:
        if self.mode == "train" and not self.model_name:
            raise ValueError("model_name is required in train mode")
        try:
            json.dumps(self.args, allow_nan=False)
        except ValueError:
            raise ValueError("args must be JSON (no NaN or infinity)") from None
        return self

    def publishes(self) -> Publish:
        """Train mode: ``model/`` becomes a version of ``model_name``. Predict mode:
        ``predictions.csv`` is added to the dataset (write access checked at submission)."""
        return Publish.PREDICTIONS if self.mode == "predict" else Publish.MODEL


# --------------------------------------------------------------------------- on the node


def _sandbox_settings() -> Settings:
    from clowder_ml.settings import Settings

    return Settings()


def run(ctx: TaskContext, settings: Settings | None = None) -> dict[str, Any]:
    """Run the script in the sandbox and collect its outputs (module docstring).

    Raises :class:`~clowder_ml.sandbox.scan.ScanBlocked` (scan finding),
    :class:`~clowder_ml.errors.ValidationFailed` (missing script, bad outputs),
    :class:`~clowder_ml.errors.TrainingFailed` (the script failed or hit a limit) or
    :class:`~clowder_ml.errors.SandboxUnavailable`.
    """
    from clowder_ml.ml import manifest
    from clowder_ml.ml.usercode import code_digest
    from clowder_ml.sandbox import Limits, get_sandbox, parse_size
    from clowder_ml.sandbox.follow import Follow
    from clowder_ml.sandbox.scan import ScanBlocked, ScanOptions, scan

    p = ctx.params
    assert isinstance(p, CustomScriptParams)
    settings = settings or _sandbox_settings()
    data = ctx.dataset()
    script = data.path / p.script
    if p.script not in data.files or not script.is_file():
        raise ValidationFailed(f"The script {p.script!r} is not in the dataset.",
                               "Upload it to the dataset, then name its path in 'script'.")
    name = PurePosixPath(p.script).name
    code = script.read_text(encoding="utf-8", errors="replace")
    if settings.scan_block_at != "off":
        try:
            scan(code, ScanOptions(block_at=settings.scan_block_at)).raise_if_blocked()
        except ScanBlocked as exc:
            exc.message = f"{name}: {exc.message}"
            raise
    digest = code_digest(script)

    threads = max(1, int(ctx.cpus))
    limits = Limits().with_(
        wall_s=p.timeout_s, cpu_s=p.timeout_s * threads * 2 + 30,
        memory_bytes=parse_size(p.memory), disk_bytes=parse_size(p.disk),
        output_bytes=OUTPUT_BYTES, processes=256)
    env = {"CLOWDER_ML_SEED": str(p.seed), "PYTHONHASHSEED": str(p.seed),
           "CLOWDER_ML_MODE": p.mode, "CLOWDER_ML_SCRIPT": name,
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    ctx.report.event(f"running {p.script} in the sandbox ({p.mode}; limits: "
                     f"{p.timeout_s:g}s, memory {p.memory}, disk {p.disk})")
    collected = Path(tempfile.mkdtemp(prefix="custom-script-", dir=ctx.work_dir))
    # Metrics are parsed as the script writes them and each point is reported once, as soon
    # as its line is complete (the job's metrics table keeps every report: no dedupe there).
    parser = MetricLines()

    def on_metrics(offset: int, chunk: bytes) -> None:
        for step, metric, value in parser.feed(offset, chunk):
            ctx.report.metric(step, metric, value)

    try:
        with tempfile.TemporaryDirectory(prefix="bootstrap-", dir=ctx.work_dir) as tmp:
            boot = Path(tmp) / _BOOTSTRAP_NAME
            boot.write_text(_BOOTSTRAP.format(args=_ARGS_NAME))
            res = get_sandbox(settings).run_python(
                boot, input_dir=data.path, env=env, limits=limits,
                files={name: script, _ARGS_NAME: json.dumps(p.args).encode()},
                collect_into=collected, collect_names=[OUTPUT_DIR],
                follow={METRICS_FILE: Follow(on_metrics, max_bytes=MAX_METRIC_BYTES,
                                             interval_s=METRICS_POLL_S)})
        for step, metric, value in parser.finish():
            ctx.report.metric(step, metric, value)
        points, skipped = parser.points, parser.skipped
        if skipped:
            ctx.report.event(f"{METRICS_FILE}: {len(skipped)} bad line(s) skipped "
                             f"(first: {skipped[0]})")
        _to_log(res)
        if not res.ok:
            raise TrainingFailed(failure_reason(name, res))
        ctx.report.event(f"{p.script} finished in {res.usage.wall_s:.1f}s "
                         f"(peak memory {res.usage.peak_memory_bytes >> 20} MiB)")
        for path, why in sorted(res.refused.items()):
            ctx.report.event(f"output {path} not collected: {why}")
        last = {metric: value for _, metric, value in points}
        out = collected / OUTPUT_DIR
        check_outputs(out, p.mode, name)
        result: dict[str, Any] = {
            "metrics": last, "script": p.script, "mode": p.mode, "code_digest": digest,
            "usage": res.usage.to_dict(), "isolation": res.isolation}
        if p.mode == "predict":
            shutil.copyfile(out / PREDICTIONS_FILE, ctx.outputs_dir / PREDICTIONS_FILE)
            result["model"] = f"script:{p.script}"
            result["files"] = [PREDICTIONS_FILE]
            return result
        model_out = ctx.outputs_dir / MODEL_DIR
        shutil.copytree(out, model_out)
        for own in PLATFORM_FILES:
            if (model_out / own).exists():
                ctx.report.event(f"{own} from the script replaced by the platform's")
        weights = code_digest(model_out / "model.safetensors")
        man = manifest.build(
            task=TASK, job_id=ctx.job_id,
            inputs=[{"kind": i.kind, "ref": i.name, "version": i.version, "files": i.digests}
                    for i in ctx.inputs],
            params=p.model_dump(mode="json"),
            determinism={"seed": p.seed, "threads": threads},
            code={p.script: digest},
            extra={"weights_sha256": weights, "metrics": last,
                   "sandbox": {"isolation": res.isolation, "usage": res.usage.to_dict(),
                               "limits": res.limits.to_dict()}})
        (model_out / "manifest.json").write_text(json.dumps(man, indent=2, default=str))
        (model_out / "metrics.json").write_text(json.dumps(
            {"metrics": last, "history": [{"step": s, "name": n, "value": v}
                                          for s, n, v in points]}, indent=2))
        result["digest"] = weights
        result["files"] = sorted(f.relative_to(model_out).as_posix()
                                 for f in model_out.rglob("*") if f.is_file())
        return result
    finally:
        shutil.rmtree(collected, ignore_errors=True)


def _to_log(res: SandboxResult) -> None:
    """The script's stdout and stderr into the job log (the runner captures ours)."""
    for data, stream, cut in ((res.stdout, sys.stdout, res.stdout_truncated),
                              (res.stderr, sys.stderr, res.stderr_truncated)):
        if data:
            text = data.decode("utf-8", "replace")
            stream.write(text if text.endswith("\n") else text + "\n")
        if cut:
            stream.write(f"[output cut at {OUTPUT_BYTES >> 20} MiB]\n")
        stream.flush()


_TRACE_LINE = re.compile(r'File "/code/([^"]+)", line (\d+)')


def failure_reason(name: str, res: SandboxResult) -> str:
    """One line for a run that did not end ``ok``: the limit reached, or the script's own
    exception as ``name, line N: Type: message`` (from its traceback on stderr)."""
    from clowder_ml.sandbox import Verdict

    if res.verdict is not Verdict.ERROR:
        return f"{name}: {res.detail or res.verdict.value} ({res.verdict.value})"
    err = res.stderr.decode("utf-8", "replace")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    line_no = None
    for m in _TRACE_LINE.finditer(err):
        if m.group(1) == name:
            line_no = m.group(2)
    if lines and "Traceback (most recent call last)" in err:
        last = lines[-1].strip()[:300]
        where = f"{name}, line {line_no}" if line_no else name
        return f"{where}: {last}"
    return f"{name}: exited with status {res.exit_code}" + (
        f": {lines[-1].strip()[:300]}" if lines else "")


Point = tuple[int, str, float]


class MetricLines:
    """Incremental parser of a metrics.jsonl (module docstring: the line format), fed the
    file's bytes as they are written; the live follower and :func:`read_metrics` share it.

    :meth:`feed` takes bytes read at a file offset and returns the points of the lines it
    completed, in order; a partial last line waits for the rest. :meth:`finish` (the file is
    complete) parses a last line without its newline. :attr:`points` holds every point so
    far and :attr:`skipped` why lines were skipped (``"line N: reason"``). Each line is
    parsed once, so each point is returned once: if the file is read again from offset 0
    (it was truncated or replaced), the lines already parsed are not parsed again (a script
    rewriting the whole file each time is thus reported once per line). Caps: the first
    ``max_lines`` lines are read; a line longer than ``max_line_bytes`` is skipped; after
    ``max_bytes`` in all the rest is ignored (a note in :attr:`skipped` says so).
    """

    def __init__(self, *, max_lines: int = MAX_METRIC_LINES,
                 max_line_bytes: int = MAX_METRIC_LINE_BYTES,
                 max_bytes: int = MAX_METRIC_BYTES) -> None:
        self.max_lines, self.max_line_bytes, self.max_bytes = max_lines, max_line_bytes, max_bytes
        self.points: list[Point] = []
        self.skipped: list[str] = []
        self._pending = bytearray()  # the current line so far (at most max_line_bytes + 1)
        self._pending_cut = False  # the current line went over max_line_bytes
        self._next = 0  # the file offset expected next
        self._fed = 0  # bytes fed in all (re-reads included)
        self._line = 0  # number of the last complete line of the file as read now
        self._parsed = 0  # lines parsed already (kept across a re-read from offset 0)
        self._done = False  # a cap was reached: nothing more is parsed

    def feed(self, offset: int, data: bytes) -> list[Point]:
        """Parse ``data``, read at byte ``offset`` of the file; the new points."""
        if self._done:
            return []
        if offset != self._next:
            if offset != 0:
                raise ValueError(f"metrics bytes out of order: at {offset}, not {self._next}")
            self._pending.clear()  # the file starts again (truncated or replaced)
            self._pending_cut = False
            self._line = 0
        room = self.max_bytes - self._fed
        if len(data) > room:
            data = data[:max(room, 0)]
        self._next = offset + len(data)
        self._fed += len(data)
        start = len(self.points)
        pos = 0
        while pos < len(data) and not self._done:
            end = data.find(b"\n", pos)
            piece = data[pos:] if end < 0 else data[pos:end]
            self._add(piece)
            if end < 0:
                break
            self._end_line()
            pos = end + 1
        if self._fed >= self.max_bytes and not self._done:
            self.skipped.append(f"line {self._line + 1}: over {self.max_bytes >> 20} MiB "
                                "read, rest ignored")
            self._done = True
        return self.points[start:]

    def finish(self) -> list[Point]:
        """The file is complete: parse a last line left without its newline."""
        start = len(self.points)
        if not self._done and (self._pending or self._pending_cut):
            self._end_line()
        self._done = True
        return self.points[start:]

    def _add(self, piece: bytes) -> None:
        room = self.max_line_bytes + 1 - len(self._pending)
        if len(piece) > room:
            self._pending_cut = True
            piece = piece[:max(room, 0)]
        self._pending += piece

    def _end_line(self) -> None:
        raw, cut = bytes(self._pending), self._pending_cut
        self._pending.clear()
        self._pending_cut = False
        self._line += 1
        number = self._line
        if number <= self._parsed:
            return  # parsed before the file was read again from its start
        self._parsed = number
        if number > self.max_lines:
            self.skipped.append(f"line {number}: over {self.max_lines} lines, rest ignored")
            self._done = True
            return
        if cut or len(raw) > self.max_line_bytes:
            self.skipped.append(f"line {number}: longer than {self.max_line_bytes} bytes")
            return
        point = parse_metric_line(raw.decode("utf-8", "replace"), number)
        if isinstance(point, str):
            if point:
                self.skipped.append(f"line {number}: {point}")
        else:
            self.points.append(point)


def parse_metric_line(raw: str, number: int) -> Point | str:
    """One metrics.jsonl line (number ``number``, from 1) as a point, or why it is skipped
    (``""`` for a blank line, which is ignored)."""
    if not raw.strip():
        return ""
    try:
        obj = json.loads(raw)
    except ValueError:
        return "not JSON"
    if not isinstance(obj, dict):
        return "not an object"
    metric, value, step = obj.get("name"), obj.get("value"), obj.get("step", number)
    if not isinstance(metric, str) or not 0 < len(metric) <= 128:
        return "'name' must be a short string"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "'value' must be a finite number"
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return "'step' must be an int >= 0"
    return step, metric, float(value)


def read_metrics(path: Path) -> tuple[list[Point], list[str]]:
    """Points ``(step, name, value)`` from a complete metrics.jsonl in order, and why lines
    were skipped (``"line N: reason"``), by :class:`MetricLines`. A missing file has no
    points."""
    parser = MetricLines()
    if not path.is_file():
        return parser.points, parser.skipped
    with open(path, "rb") as f:
        offset = 0
        while chunk := f.read(1 << 20):
            parser.feed(offset, chunk)
            offset += len(chunk)
    parser.finish()
    return parser.points, parser.skipped


def check_outputs(out: Path, mode: str, name: str) -> None:
    """Refuse pickle files anywhere in the output, then require what the mode needs:
    ``model.safetensors`` (a valid safetensors header) and ``config.json`` (a JSON object)
    for train, ``predictions.csv`` for predict. Raises ValidationFailed naming the file."""
    files = sorted(f for f in out.rglob("*") if f.is_file()) if out.is_dir() else []
    pickles = [f.relative_to(out).as_posix() for f in files
               if f.name.lower().endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise ValidationFailed(
            f"{name} wrote pickle weights ({', '.join(pickles[:5])}); they are refused "
            "because loading a pickle runs code.",
            "Save tensors with safetensors instead, e.g. safetensors.torch.save_file("
            "model.state_dict(), '/work/output/model.safetensors').")
    if mode == "predict":
        if not (out / PREDICTIONS_FILE).is_file():
            raise ValidationFailed(f"{name} wrote no {OUTPUT_DIR}/{PREDICTIONS_FILE}.",
                                   "Write the predictions to /work/output/predictions.csv.")
        return
    weights = out / "model.safetensors"
    if not weights.is_file():
        raise ValidationFailed(f"{name} wrote no {OUTPUT_DIR}/model.safetensors.",
                               "Write the model folder to /work/output/: model.safetensors "
                               "and config.json.")
    check_safetensors(weights)
    config = out / "config.json"
    try:
        ok = isinstance(json.loads(config.read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise ValidationFailed(f"{name} wrote no valid {OUTPUT_DIR}/config.json "
                               "(a JSON object).", "Write the model's config to "
                               "/work/output/config.json.")


def check_safetensors(path: Path) -> None:
    """Raise ValidationFailed unless ``path`` starts with a safetensors header."""
    with open(path, "rb") as f:
        ok = is_safetensors(f, path.stat().st_size)
    if not ok:
        raise ValidationFailed(f"{OUTPUT_DIR}/model.safetensors is not in safetensors format.",
                               "Save it with safetensors (save_file / save_model).")


TASKS = (
    TaskDef(name=TASK,
            summary="Run your own train.py (or predict.py) from the dataset in the sandbox; "
                    "its /work/output becomes a model version (or predictions)",
            params=CustomScriptParams, entry="clowder_ml.tasks.custom_script:run",
            min_datasets=1, max_datasets=1),
)
