"""The ``custom-script`` task against the real gVisor sandbox: a script's model folder and
metrics collected, pickle weights refused, the script's exception line as the reason, limits,
the scan gate, and a hostile script contained.

Skipped when the gVisor sandbox is not usable here (tests/sandbox and tests/security fail
instead: they are where a broken sandbox is reported).
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from clowder_ml.errors import SandboxUnavailable, TrainingFailed, ValidationFailed
from clowder_ml.sandbox import get_sandbox
from clowder_ml.sandbox.base import wait_for_live_processes
from clowder_ml.sandbox.gvisor import RunscSandbox
from clowder_ml.sandbox.scan import ScanBlocked
from clowder_ml.settings import Settings
from clowder_ml.tasks import custom_script as cs
from clowder_ml.tasks.context import InputData, TaskContext
from clowder_ml.tasks.registry import TaskRegistry

# Writes a safetensors file by hand (8-byte header length, JSON header, raw bytes), so the
# test does not depend on which packages the sandbox's Python has.
SAFETENSORS_HELPER = '''
import json, struct
from pathlib import Path

def save_safetensors(path, name, values):
    raw = struct.pack(f"<{len(values)}f", *values)
    header = json.dumps({name: {"dtype": "F32", "shape": [len(values)],
                                "data_offsets": [0, len(raw)]}}).encode()
    header += b" " * (-len(header) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(header)) + header + raw)
'''

GOOD = SAFETENSORS_HELPER + '''
args = json.loads(Path("/work/args.json").read_text())
rows = Path("/data/train.csv").read_text().splitlines()[1:]
out = Path("/work/output")
with open("/work/metrics.jsonl", "a") as m:
    for step in range(1, 4):
        m.write(json.dumps({"step": step, "name": "loss", "value": 1.0 / step}) + "\\n")
    m.write(json.dumps({"step": 3, "name": "accuracy", "value": 0.75}) + "\\n")
    m.write("not json\\n")
save_safetensors(out / "model.safetensors", "w", [float(len(rows)), args["lr"]])
(out / "config.json").write_text(json.dumps({"rows": len(rows)}))
(out / "sub").mkdir()
(out / "sub" / "notes.txt").write_text("hello")
print("trained on", len(rows), "rows")
'''


@dataclass
class Recorder:
    events: list[str] = field(default_factory=list)
    metrics: list[tuple[int, str, float]] = field(default_factory=list)

    def event(self, message: str) -> None:
        self.events.append(message)

    def metric(self, step: int, name: str, value: float) -> None:
        self.metrics.append((step, name, value))

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        pass


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("custom-script-sandbox")
    os.chmod(root, 0o700)
    s = Settings(sandbox_tmp_dir=root / "tmp", sandbox_state_dir=root / "runsc-state")
    try:
        sb = get_sandbox(s)
    except SandboxUnavailable as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"gVisor sandbox unavailable: {exc}")
    yield s
    wait_for_live_processes()
    assert isinstance(sb, RunscSandbox)
    assert list(sb.state_dir.iterdir()) == []
    assert [p.name for p in sb.tmp_root.iterdir() if p.name.startswith("cml-")] == []


def make_ctx(tmp_path: Path, script: str, *, name: str = "train.py",
             **params: Any) -> tuple[TaskContext, Recorder]:
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o755)
    (data / "train.csv").write_text("text,label\na,1\nb,0\n")
    (data / name).write_text(textwrap.dedent(script).lstrip("\n"))
    for f in data.iterdir():
        os.chmod(f, 0o444)
    outputs, work = tmp_path / "outputs", tmp_path / "work"
    outputs.mkdir()
    work.mkdir()
    p = cs.CustomScriptParams.model_validate(
        {"model_name": "mine", "script": name, "args": {"lr": 0.5}, "timeout_s": 60,
         "memory": "512M", **params})
    rec = Recorder()
    inp = InputData(kind="dataset", ref="ds_1", version=1, path=data, name="ds",
                    files=sorted(f.name for f in data.iterdir()),
                    digests={"train.csv": "0" * 64})
    ctx = TaskContext(job_id="job_test", params=p, inputs=[inp], outputs_dir=outputs,
                      work_dir=work, cpus=1.0, gpus=0.0, report=rec)
    return ctx, rec


def test_a_script_model_folder_and_metrics_are_collected(
        settings: Settings, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    ctx, rec = make_ctx(tmp_path, GOOD)
    result = cs.run(ctx, settings)
    model = ctx.outputs_dir / "model"
    assert sorted(result["files"]) == ["config.json", "manifest.json", "metrics.json",
                                       "model.safetensors", "sub/notes.txt"]
    cs.check_safetensors(model / "model.safetensors")
    assert json.loads((model / "config.json").read_text()) == {"rows": 2}
    assert rec.metrics == [(1, "loss", 1.0), (2, "loss", 0.5), (3, "loss", 1 / 3),
                           (3, "accuracy", 0.75)]
    assert result["metrics"] == {"loss": 1 / 3, "accuracy": 0.75}
    assert any("1 bad line" in e and "line 5: not JSON" in e for e in rec.events)
    man = json.loads((model / "manifest.json").read_text())
    assert man["task"] == "custom-script"
    assert man["code"] == {"train.py": result["code_digest"]}
    assert man["inputs"][0]["files"] == {"train.csv": "0" * 64}
    assert man["params"]["args"] == {"lr": 0.5} and man["weights_sha256"] == result["digest"]
    assert json.loads((model / "metrics.json").read_text())["metrics"] == result["metrics"]
    assert result["isolation"] == "gvisor"
    assert "trained on 2 rows" in capfd.readouterr().out  # the script's stdout: the job log


def test_predict_mode_collects_predictions(settings: Settings, tmp_path: Path) -> None:
    ctx, _ = make_ctx(tmp_path, '''
        import csv, os
        from pathlib import Path
        assert os.environ["CLOWDER_ML_MODE"] == "predict"
        rows = list(csv.DictReader(open("/data/train.csv")))
        with open("/work/output/predictions.csv", "w") as f:
            f.write("id,predicted\\n" + "".join(f"{i},1\\n" for i in range(len(rows))))
    ''', name="predict.py", mode="predict", model_name=None)
    result = cs.run(ctx, settings)
    assert (ctx.outputs_dir / "predictions.csv").read_text() == "id,predicted\n0,1\n1,1\n"
    assert result["model"] == "script:predict.py" and result["files"] == ["predictions.csv"]
    assert not (ctx.outputs_dir / "model").exists()


def test_pickle_weights_are_refused(settings: Settings, tmp_path: Path) -> None:
    ctx, _ = make_ctx(tmp_path, '''
        from pathlib import Path
        Path("/work/output/pytorch_model.bin").write_bytes(b"\\x80\\x04K\\x01.")
        Path("/work/output/config.json").write_text("{}")
    ''')
    with pytest.raises(ValidationFailed, match=r"pickle weights \(pytorch_model.bin\)"):
        cs.run(ctx, settings)
    assert not (ctx.outputs_dir / "model").exists()


def test_missing_or_fake_safetensors_is_refused(settings: Settings, tmp_path: Path) -> None:
    ctx, _ = make_ctx(tmp_path, '''
        from pathlib import Path
        Path("/work/output/model.safetensors").write_bytes(b"not safetensors at all")
        Path("/work/output/config.json").write_text("{}")
    ''')
    with pytest.raises(ValidationFailed, match="not in safetensors format"):
        cs.run(ctx, settings)


def test_an_exception_fails_with_the_script_line(settings: Settings, tmp_path: Path) -> None:
    ctx, _ = make_ctx(tmp_path, '''
        import json

        def train():
            raise ValueError("labels must be 0 or 1")

        train()
    ''', name="my_train.py")
    with pytest.raises(TrainingFailed) as err:
        cs.run(ctx, settings)
    assert err.value.message == "my_train.py, line 4: ValueError: labels must be 0 or 1"


def test_limits_end_the_script_with_a_one_line_reason(settings: Settings,
                                                      tmp_path: Path) -> None:
    ctx, _ = make_ctx(tmp_path, "import time\ntime.sleep(60)\n", timeout_s=2)
    with pytest.raises(TrainingFailed, match=r"^train.py: Stopped: the wall-time limit .*"
                                             r"\(timeout\)$"):
        cs.run(ctx, settings)


def test_the_scan_gate_refuses_before_running(settings: Settings, tmp_path: Path) -> None:
    ctx, rec = make_ctx(tmp_path, "import subprocess\nsubprocess.run(['ls'])\n")
    with pytest.raises(ScanBlocked, match=r"^train.py: The code scan blocked this run: line 1"):
        cs.run(ctx, settings)
    assert not any("running" in e for e in rec.events)


HOSTILE = SAFETENSORS_HELPER + '''
import socket
from pathlib import Path

report = {}
def attempt(name, fn):
    try:
        fn()
        report[name] = "succeeded"
    except Exception as exc:
        report[name] = type(exc).__name__

def connect():
    s = socket.create_connection(("1.1.1.1", 53), timeout=2)
    s.close()

def resolve():
    socket.getaddrinfo("example.com", 80)

attempt("network", connect)
attempt("dns", resolve)
attempt("shadow", lambda: Path("/etc/shadow").read_text())
attempt("write_data", lambda: Path("/data/evil.txt").write_text("x"))
attempt("write_code", lambda: Path("/code/evil.py").write_text("x"))
attempt("write_root", lambda: Path("/evil.txt").write_text("x"))
attempt("write_etc", lambda: Path("/etc/passwd").write_text("x"))
attempt("tamper_script", lambda: Path("/data/train.py").write_text("x"))
Path("/work/output/report.json").write_text(json.dumps(report))
save_safetensors("/work/output/model.safetensors", "w", [1.0])
Path("/work/output/config.json").write_text("{}")
Path("/work/output/escape").symlink_to("/etc/hostname")
'''


def test_a_hostile_script_is_contained(settings: Settings, tmp_path: Path) -> None:
    unscanned = settings.model_copy(update={"scan_block_at": "off"})
    ctx, rec = make_ctx(tmp_path, HOSTILE)
    before = {f.name: f.read_bytes() for f in (tmp_path / "data").iterdir()}
    result = cs.run(ctx, unscanned)
    report = json.loads((ctx.outputs_dir / "model" / "report.json").read_text())
    assert {k: v for k, v in report.items() if v == "succeeded"} == {}, report
    assert {f.name: f.read_bytes() for f in (tmp_path / "data").iterdir()} == before
    # The symlink was not followed out of the sandbox: refused and reported.
    assert "escape" not in result["files"]
    assert any("output/escape not collected" in e for e in rec.events)


# --------------------------------------------------------------------------- no sandbox


def test_params_and_registration() -> None:
    assert "custom-script" in TaskRegistry().names()
    ok = cs.CustomScriptParams.model_validate({"model_name": "m", "script": "src/train.py"})
    assert ok.mode == "train" and ok.memory == "2G"
    assert cs.CustomScriptParams.model_validate({"mode": "predict"}).model_name is None
    for bad in ({"script": "train.py"}, {"model_name": "m", "script": "../x.py"},
                {"model_name": "m", "script": "/abs.py"},
                {"model_name": "m", "script": "notes.txt"},
                {"model_name": "m", "memory": "lots"},
                {"model_name": "m", "args": {"x": float("nan")}},
                {"model_name": "m", "surprise": 1}):
        with pytest.raises(ValueError):
            cs.CustomScriptParams.model_validate(bad)


def test_read_metrics_skips_bad_lines(tmp_path: Path) -> None:
    f = tmp_path / "m.jsonl"
    f.write_text('{"name": "a", "value": 1}\n\n[1]\n{"name": "a", "value": "x"}\n'
                 '{"name": "b", "value": 2, "step": -1}\n{"name": "b", "value": 2.5, '
                 '"step": 7}\n{"name": "c", "value": Infinity}\n')
    points, skipped = cs.read_metrics(f)
    assert points == [(1, "a", 1.0), (7, "b", 2.5)]
    assert [s.split(":")[0] for s in skipped] == ["line 3", "line 4", "line 5", "line 7"]
    assert cs.read_metrics(tmp_path / "missing") == ([], [])
