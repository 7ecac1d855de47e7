"""The web UI's typed client is generated from the server's OpenAPI: the checked-in
web/src/api/schema.d.ts must be exactly what the generator makes of the current API, so
the UI and the API cannot drift apart (regenerate with web/scripts/gen-api.sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "web"
GENERATOR = WEB / "node_modules" / ".bin" / "openapi-typescript"


def test_the_checked_in_client_matches_the_servers_openapi(tmp_path: Path) -> None:
    if not GENERATOR.exists():
        pytest.fail("web/node_modules is missing: run `bash scripts/setup.sh` "
                    "(or `npm --prefix web ci`).")
    out = tmp_path / "schema.d.ts"
    p = subprocess.run(["bash", str(WEB / "scripts" / "gen-api.sh"), str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    checked_in = (WEB / "src" / "api" / "schema.d.ts").read_text()
    assert out.read_text() == checked_in, (
        "web/src/api/schema.d.ts is out of date with the API: run `bash web/scripts/gen-api.sh`"
        " and rebuild the UI (`npm --prefix web run build`).")
