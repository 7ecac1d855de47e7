"""The web UI in a real browser (Debian's chromium driven by playwright-core) against a
real server whose job engine uses the session's Ray head.

One server, one browser: ``web/e2e/run.ts`` runs every scenario of
``web/e2e/scenarios.ts`` in order (log in, upload by tus with pause/reload/resume, unzip,
a real minilm-l6 fine-tune started from the form with its loss curve drawn, the model page,
the editor's scan markers, two contexts co-editing and a read-only reader, another user's
404 pages, the reproduce verdict) and writes one result each; every scenario is a test
here. Screenshots (1280x800 and narrow) go to build/web-screenshots/.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clowder_ml.api.web import STATIC_DIR
from clowder_ml.engine.ray_cluster import EmbeddedRayHead
from tests.conftest import ADMIN_PW
from tests.engine.conftest import engine_server

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
SHOTS = ROOT / "build" / "web-screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
USERS = {"admin": ADMIN_PW, "carol": "carol-password-1", "dave": "dave-password-1",
         "mallory": "mallory-password-1"}
# The scenario names, read from the file that defines them (one test each).
SCENARIOS = re.findall(r'^    name: "(.+)",$',
                       (WEB / "e2e" / "scenarios.ts").read_text(), re.MULTILINE)


def reviews_csv(n: int = 48) -> bytes:
    rng = random.Random(0)
    good, bad = ["great", "lovely", "superb", "moving"], ["awful", "boring", "dull", "slow"]
    lines = ["text,label"]
    for i in range(n):
        pos = i % 2 == 0
        lines.append(f"the {rng.choice(['film', 'show', 'book'])} was "
                     f"{rng.choice(good if pos else bad)} {i},{'pos' if pos else 'neg'}")
    return ("\n".join(lines) + "\n").encode()


def write_files(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.csv").write_bytes(reviews_csv())
    # Three tus chunks of 8 MiB: big enough to be caught between chunks.
    (folder / "big.bin").write_bytes(random.Random(1).randbytes(20 << 20))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("notes/a.txt", "first note\n")
        z.writestr("notes/b.txt", "second note\n")
    (folder / "notes.zip").write_bytes(buf.getvalue())
    return folder


def _prerequisites() -> None:
    missing = []
    if not (WEB / "node_modules" / ".bin" / "tsx").exists():
        missing.append("web/node_modules (npm --prefix web ci)")
    if not (STATIC_DIR / "index.html").exists():
        missing.append("the UI build (npm --prefix web run build)")
    if not shutil.which(CHROMIUM):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if missing:
        pytest.fail("The browser tests need " + ", ".join(missing)
                    + "; `bash scripts/setup.sh` makes them.")


@pytest.fixture(scope="module")
def results(ray_head: EmbeddedRayHead, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[dict[str, dict[str, Any]]]:
    _prerequisites()
    base = tmp_path_factory.mktemp("web")
    with engine_server(ray_head, base) as (srv, api):
        for name, password in USERS.items():
            if name != "admin":
                r = api.http.post("/api/v1/users", json={"username": name,
                                                         "password": password})
                assert r.status_code == 201, r.text
        SHOTS.mkdir(parents=True, exist_ok=True)
        out = base / "results.json"
        env = {**os.environ, "E2E_URL": srv.url, "E2E_USERS": json.dumps(USERS),
               "E2E_FILES": str(write_files(base / "files")), "E2E_SHOTS": str(SHOTS),
               "CHROMIUM": CHROMIUM}
        p = subprocess.run([str(WEB / "node_modules" / ".bin" / "tsx"), "e2e/run.ts", str(out)],
                           cwd=WEB, env=env, capture_output=True, text=True, timeout=840)
        if not out.exists():
            pytest.fail(f"the browser runner failed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
        yield {r["name"]: r for r in json.loads(out.read_text())}


def test_every_scenario_ran(results: dict[str, dict[str, Any]]) -> None:
    assert SCENARIOS and sorted(results) == sorted(SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(results: dict[str, dict[str, Any]], name: str) -> None:
    result = results.get(name)
    assert result is not None, f"{name!r} did not run"
    assert result["ok"], result["error"]
