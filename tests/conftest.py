"""Shared fixtures: apps on SQLite and PostgreSQL, users and tokens, real server processes.

PostgreSQL is required (the machine and CI start it at 127.0.0.1:5432, database ``test``);
each app gets a schema of its own that is dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from clowder_ml.api.app import create_app
from clowder_ml.engine.ray_cluster import EmbeddedRayHead
from clowder_ml.settings import Settings

PG_BASE = os.environ.get("CLOWDER_ML_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ADMIN_PW = "admin-password-1"


@pytest.fixture(scope="session")
def pg_admin_engine() -> Iterator[Any]:
    engine = create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as exc:  # pragma: no cover - a broken machine, not a test result
        pytest.fail(f"PostgreSQL is required at {PG_BASE}: {exc}")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin_engine: Any) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, private schema."""
    schema = f"t_{secrets.token_hex(6)}"
    with pg_admin_engine.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    with pg_admin_engine.connect() as c:
        c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@dataclass
class Api:
    """A TestClient on a fresh app, logged in as admin, with helpers for more users."""

    client: TestClient
    settings: Settings
    admin_token: str
    app: Any
    tokens: dict[str, str] = field(default_factory=dict)

    def h(self, user: str = "admin") -> dict[str, str]:
        token = self.admin_token if user == "admin" else self.tokens[user]
        return {"Authorization": f"Bearer {token}"}

    def user(self, name: str) -> dict[str, str]:
        """Create user ``name`` (once) and return its auth headers."""
        if name not in self.tokens:
            r = self.client.post("/api/v1/users", json={"username": name,
                                                        "password": f"{name}-password"},
                                 headers=self.h())
            assert r.status_code == 201, r.text
            r = self.client.post("/api/v1/auth/token", json={"username": name,
                                                             "password": f"{name}-password"})
            self.tokens[name] = r.json()["token"]
        return self.h(name)

    def dataset(self, name: str, user: str = "admin", files: dict[str, bytes] | None = None,
                ) -> dict[str, Any]:
        r = self.client.post("/api/v1/datasets", json={"name": name}, headers=self.h(user))
        assert r.status_code == 201, r.text
        for path, data in (files or {}).items():
            r = self.client.post(f"/api/v1/datasets/{name}/files",
                                 files={"file": ("x", data)}, data={"path": path},
                                 headers=self.h(user))
            assert r.status_code == 201, r.text
        return dict(self.client.get(f"/api/v1/datasets/{name}", headers=self.h(user)).json())


def _make_api(tmp_path: Path, db_url: str | None, **overrides: Any) -> Iterator[Api]:
    overrides.setdefault("data_dir", tmp_path / "data")
    overrides.setdefault("engine_enabled", False)  # no Ray head per test; tests/engine has one
    settings = Settings(database_url=db_url, admin_password=ADMIN_PW, log_json=False,
                        **overrides)
    app = create_app(settings, announce=False)
    with TestClient(app) as client:
        r = client.post("/api/v1/auth/token", json={"username": "admin", "password": ADMIN_PW})
        assert r.status_code == 201, r.text
        yield Api(client, settings, r.json()["token"], app)


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    """The API on each supported database."""
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    yield from _make_api(tmp_path, url)


@pytest.fixture
def sqlite_api(tmp_path: Path) -> Iterator[Api]:
    yield from _make_api(tmp_path, None)


@pytest.fixture
def make_api(tmp_path: Path) -> Any:
    """Factory for an API with settings overrides (SQLite)."""
    made: list[Iterator[Api]] = []

    def factory(**overrides: Any) -> Api:
        gen = _make_api(tmp_path, None, **overrides)
        made.append(gen)
        return next(gen)

    yield factory
    for gen in made:
        for _ in gen:
            pass


# real server processes ---------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``clowder-ml serve`` in a child process; can be killed and restarted on its data."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "CLOWDER_ML_ADMIN_PASSWORD": ADMIN_PW,
                    "CLOWDER_ML_ENGINE_ENABLED": "false", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 90.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "clowder_ml", "serve", "--host", "127.0.0.1",
                 "--port", str(self.port), "--data-dir", str(self.data_dir)],
                stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become ready: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def token(self, username: str = "admin", password: str = ADMIN_PW) -> str:
        r = httpx.post(self.url + "/api/v1/auth/token",
                       json={"username": username, "password": password})
        r.raise_for_status()
        return str(r.json()["token"])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def ray_head() -> Iterator[EmbeddedRayHead]:
    """One real Ray head shared by the whole test session (starting one costs seconds)."""
    # A short /tmp folder, not pytest's tmp_path: Ray's socket paths must stay short.
    temp_dir = Path(tempfile.mkdtemp(prefix="cml-ray-", dir="/tmp"))
    head = EmbeddedRayHead(temp_dir, num_cpus=2)
    try:
        head.start()
        yield head
    finally:
        # Runs on failures and interrupts too: no Ray processes outlive the session.
        head.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
