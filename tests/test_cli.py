"""The CLI in a real terminal-less run against a real server: the contract commands."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ADMIN_PW, ServerProcess

pytestmark = pytest.mark.slow


def cli(env: dict[str, str], *args: str, ok: bool = True,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "clowder_ml", *args], env=env, text=True,
                       capture_output=True, timeout=120, input=stdin)
    if ok:
        assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p


@pytest.fixture
def env(server: ServerProcess, tmp_path: Path) -> dict[str, str]:
    e = {**os.environ, "CLOWDER_ML_URL": server.url, "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
         "CLOWDER_ML_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "120"}
    e.pop("CLOWDER_ML_TOKEN", None)
    return e


def test_login_upload_browse_download(env: dict[str, str], tmp_path: Path) -> None:
    p = cli(env, "login", "--username", "admin", stdin=f"{ADMIN_PW}\n")
    assert "Logged in" in p.stdout
    cfg = tmp_path / "cfg" / "clowder-ml" / "config.json"
    assert oct(cfg.stat().st_mode & 0o777) == "0o600"
    src = tmp_path / "reviews.csv"
    src.write_text("text,label\ngood,pos\nbad,neg\n")
    folder = tmp_path / "imgs"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "1.bin").write_bytes(os.urandom(1000))
    cli(env, "upload", str(src), "--dataset", "reviews", "--path", "train/reviews.csv")
    cli(env, "upload", str(folder), "--dataset", "reviews", "--path", "images")
    ls = json.loads(cli(env, "datasets", "ls", "--json").stdout)
    assert [(d["name"], d["latest_version"]) for d in ls] == [("reviews", 2)]
    show = cli(env, "datasets", "show", "reviews").stdout
    assert "images/" in show and "train/" in show
    pv = json.loads(cli(env, "datasets", "preview", "reviews", "train/reviews.csv",
                        "--json").stdout)
    assert pv["row_count"] == 2
    out = tmp_path / "out.csv"
    cli(env, "datasets", "download", "reviews", "--path", "train/reviews.csv", "--output",
        str(out))
    assert out.read_bytes() == src.read_bytes()
    z = tmp_path / "all.zip"
    cli(env, "datasets", "download", "reviews", "--output", str(z))
    with zipfile.ZipFile(z) as zf:
        assert sorted(zf.namelist()) == ["images/cat/1.bin", "train/reviews.csv"]


def test_env_token_and_token_commands(env: dict[str, str], server: ServerProcess) -> None:
    env = {**env, "CLOWDER_ML_TOKEN": server.token()}
    made = cli(env, "tokens", "create", "ci-bot").stdout
    token = made.strip().splitlines()[-1]
    assert token.startswith("cml_")
    rows = json.loads(cli(env, "tokens", "ls", "--json").stdout)
    bot = next(t for t in rows if t["name"] == "ci-bot")
    bot_env = {**env, "CLOWDER_ML_TOKEN": token}
    cli(bot_env, "datasets", "ls")
    cli(env, "tokens", "revoke", bot["id"])
    p = cli(bot_env, "datasets", "ls", ok=False)
    assert p.returncode == 1
    assert "authentication_required" in p.stderr and "Traceback" not in p.stderr


def test_errors_are_messages_not_tracebacks(env: dict[str, str], server: ServerProcess,
                                            tmp_path: Path) -> None:
    env = {**env, "CLOWDER_ML_TOKEN": server.token()}
    p = cli(env, "datasets", "show", "nope", ok=False)
    assert p.returncode == 1 and "not found" in p.stderr and "Traceback" not in p.stderr
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    p = cli(env, "upload", str(bad), "--dataset", "x", "--unzip", ok=False)
    assert p.returncode == 1 and "not a valid zip" in p.stderr and "Traceback" not in p.stderr
    down = {**env, "CLOWDER_ML_URL": "http://127.0.0.1:9"}
    p = cli(down, "datasets", "ls", ok=False)
    assert p.returncode == 1 and "Cannot reach the server" in p.stderr


def test_upload_of_unchanged_file_is_idempotent(env: dict[str, str], server: ServerProcess,
                                                tmp_path: Path) -> None:
    env = {**env, "CLOWDER_ML_TOKEN": server.token()}
    f = tmp_path / "a.bin"
    f.write_bytes(os.urandom(5000))
    cli(env, "upload", str(f), "--dataset", "d")
    p = cli(env, "upload", str(f), "--dataset", "d")
    assert "version 1" in p.stderr
    out = tmp_path / "got.bin"
    cli(env, "datasets", "download", "d", "--path", "a.bin", "--output", str(out))
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(f.read_bytes()).digest()
