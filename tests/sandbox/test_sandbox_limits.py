"""Limits: size parsing and validation; the CLI's sandbox command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clowder_ml.cli import app
from clowder_ml.errors import ValidationFailed
from clowder_ml.sandbox import Limits, format_size, parse_size
from clowder_ml.sandbox.gvisor import RunscSandbox


@pytest.mark.parametrize(("text", "value"), [
    ("512M", 512 << 20), ("1G", 1 << 30), ("1.5GiB", 3 << 29), ("64k", 64 << 10),
    ("1000", 1000), (" 2 MB ", 2 << 20), (4096, 4096),
])
def test_parse_size(text: str | int, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["", "M", "12X", "-1", "1e9", True, -5])
def test_parse_size_refuses(bad: str | int) -> None:
    with pytest.raises(ValidationFailed):
        parse_size(bad)


def test_limits_defaults_and_validation() -> None:
    lim = Limits()
    assert format_size(lim.memory_bytes) == "512M"
    assert lim.with_(memory_bytes="1G", wall_s=None).memory_bytes == 1 << 30
    with pytest.raises(ValidationFailed):
        Limits(memory_bytes=1 << 20)
    with pytest.raises(ValidationFailed):
        Limits(wall_s=0)


def test_cli_sandbox_run_json(gvisor: RunscSandbox, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOWDER_ML_SANDBOX_TMP_DIR", str(gvisor.tmp_root))
    monkeypatch.setenv("CLOWDER_ML_SANDBOX_STATE_DIR", str(gvisor.state_dir))
    prog = tmp_path / "p.py"
    prog.write_text("import os, sys; print(sorted(os.listdir('/data')), sys.argv[1:])")
    data = tmp_path / "in"
    data.mkdir()
    (data / "a.txt").write_text("a")
    result = CliRunner().invoke(app, ["sandbox", "run", str(prog), "arg1", "--input", str(data),
                                      "--timeout", "20", "--memory", "256M", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["verdict"] == "ok" and out["exit_code"] == 0
    assert out["stdout"] == "['a.txt'] ['arg1']\n" and out["isolation"] == "gvisor"
    assert out["usage"]["wall_s"] > 0 and out["limits"]["memory_bytes"] == 256 << 20

    prog.write_text("import time; time.sleep(60)")
    result = CliRunner().invoke(app, ["sandbox", "run", str(prog), "--timeout", "1", "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["verdict"] == "timeout"
