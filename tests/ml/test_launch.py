"""The local launcher: an early-started worker waits for its config, is killed when the job
fails before training, and is restarted from its checkpoint when it dies."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from clowder_ml.errors import TrainingFailed
from clowder_ml.ml.launch import LocalWorker

# A worker with the real entry point (``worker_main``) and a fake training function.
FAKE_WORKER = '''
import json, os, sys, time
from pathlib import Path
from clowder_ml.ml.finetune_worker import RESULT_FILE, exit_now, worker_main

def warm(hint):
    Path(os.environ["FAKE_WARM_FILE"]).write_text(f"{os.getpid()} {hint}")

def train(config):
    out = Path(config["output_dir"]); out.mkdir(parents=True, exist_ok=True)
    deaths = out / "deaths"
    if config.get("die_times", 0) > len(deaths.read_text()) if deaths.exists() else \\
            config.get("die_times", 0) > 0:
        with deaths.open("a") as fh:
            fh.write("x")
        os._exit(9)  # as if killed: no error.json
    if config.get("fail"):
        raise ValueError("bad data in row 3")
    (out / RESULT_FILE).write_text(json.dumps({"global_step": 7, "pid": os.getpid()}))

if __name__ == "__main__":
    exit_now(worker_main(sys.argv, train, warm))
'''


@pytest.fixture()
def fake_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    pkg = tmp_path / "mods"
    pkg.mkdir()
    (pkg / "fake_worker.py").write_text(FAKE_WORKER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(pkg), *sys.path]))
    monkeypatch.setenv("FAKE_WARM_FILE", str(tmp_path / "warm.txt"))
    return "fake_worker"


def _wait_for(path: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_text()


def test_early_worker_warms_up_then_trains_with_the_config_written_later(
        tmp_path: Path, fake_module: str) -> None:
    events: list[str] = []
    with LocalWorker(tmp_path / "w" / "worker.json", fake_module, warm="/base") as worker:
        pid, hint = _wait_for(tmp_path / "warm.txt").split()
        assert hint == "/base"
        assert not (tmp_path / "w" / "worker.json").exists()  # config not known yet
        result = worker.run({"output_dir": str(tmp_path / "out")}, 2, events.append)
    assert result["global_step"] == 7
    assert result["pid"] == int(pid)  # the prewarmed process did the training
    assert events == []


def test_worker_closed_before_its_config_is_killed(tmp_path: Path, fake_module: str) -> None:
    worker = LocalWorker(tmp_path / "worker.json", fake_module)
    pid = int(_wait_for(tmp_path / "warm.txt").split()[0])
    worker.close()  # e.g. the data was refused: no training
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_worker_that_dies_is_restarted_up_to_max_failures(tmp_path: Path,
                                                          fake_module: str) -> None:
    events: list[str] = []
    with LocalWorker(tmp_path / "worker.json", fake_module) as worker:
        result = worker.run({"output_dir": str(tmp_path / "out"), "die_times": 2}, 2,
                            events.append)
    assert result["global_step"] == 7
    assert [e.split(";")[0] for e in events] == ["training worker died (exit code 9)"] * 2
    with LocalWorker(tmp_path / "w2.json", fake_module) as worker, \
            pytest.raises(TrainingFailed, match=r"died \(exit code 9\) 2 times"):
        worker.run({"output_dir": str(tmp_path / "out2"), "die_times": 5}, 1, events.append)


def test_training_failure_is_reported_not_retried(tmp_path: Path, fake_module: str) -> None:
    events: list[str] = []
    with LocalWorker(tmp_path / "worker.json", fake_module) as worker, \
            pytest.raises(TrainingFailed, match="ValueError: bad data in row 3"):
        worker.run({"output_dir": str(tmp_path / "out"), "fail": True}, 3, events.append)
    assert events == []
    assert json.loads((tmp_path / "out" / "error.json").read_text())["reason"]
