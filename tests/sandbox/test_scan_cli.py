"""``clowder-ml sandbox scan FILE``: findings as text or JSON, exit 1 when blocked."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from clowder_ml.cli import app


def test_scan_cli_text_and_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nos.system('ls')\n")
    result = CliRunner().invoke(app, ["sandbox", "scan", str(bad)])
    assert result.exit_code == 1
    assert "CML006" in result.output
    result = CliRunner().invoke(app, ["sandbox", "scan", str(bad), "--json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["blocked"] is True
    assert {f["rule_id"] for f in doc["findings"]} >= {"CML006"}
    good = tmp_path / "good.py"
    good.write_text("print(sum(range(10)))\n")
    result = CliRunner().invoke(app, ["sandbox", "scan", str(good), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["findings"] == []
