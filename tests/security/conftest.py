"""The ``host`` fixture of the attack suite: one real gVisor backend, planted secrets and
canaries, and listeners that must never hear from a sandbox (see ``security_helpers``)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from security_helpers import SECRET_ENV, Host, host_ips, listeners

from clowder_ml.errors import SandboxUnavailable
from clowder_ml.sandbox import get_sandbox
from clowder_ml.sandbox.gvisor import RunscSandbox
from clowder_ml.settings import Settings


@pytest.fixture(scope="session")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    root = tmp_path_factory.mktemp("security")
    os.chmod(root, 0o700)
    settings = Settings(sandbox_tmp_dir=root / "sandbox-tmp",
                        sandbox_state_dir=root / "sandbox-tmp" / "runsc-state",
                        data_dir=root / "platform-data")
    try:
        sb = get_sandbox(settings)
    except SandboxUnavailable as exc:  # pragma: no cover - a broken machine, not a result
        pytest.fail(f"gVisor sandbox is required for the attack suite: {exc}")
    assert isinstance(sb, RunscSandbox)

    token = secrets.token_hex(8)
    values = {
        "env": f"env-secret-{token}",
        "database": f"db-secret-{token}",
        "blob": f"blob-secret-{token}",
        "host file": f"host-file-secret-{token}",
        "ssh key": f"ssh-key-secret-{token}",
    }
    data_dir = settings.resolved_data_dir
    settings.ensure_dirs()
    with contextlib.closing(sqlite3.connect(data_dir / "clowder-ml.sqlite3")) as db:
        db.execute("CREATE TABLE secret (value TEXT)")
        db.execute("INSERT INTO secret VALUES (?)", (values["database"],))
        db.commit()
    blob = settings.blobs_dir / "ab" / ("ab" + "0" * 62)
    blob.parent.mkdir(parents=True)
    blob.write_text(values["blob"])
    # Readable by anyone on the host, so only the sandbox's view of the file system protects
    # them, not permissions.
    for dirpath, _dirs, files in os.walk(data_dir):
        os.chmod(dirpath, 0o755)
        for f in files:
            os.chmod(Path(dirpath) / f, 0o644)
    canary_dir = root / "host-canary"
    canary_dir.mkdir(mode=0o777)
    os.chmod(canary_dir, 0o777)  # world-writable: only the sandbox stops a write here
    (canary_dir / "host-canary.txt").write_text(values["host file"])
    input_dir = root / "input"
    input_dir.mkdir()
    (input_dir / "train.csv").write_text("a,b\n1,2\n")
    os.chmod(input_dir, 0o777)
    os.chmod(input_dir / "train.csv", 0o666)
    os.chmod(root, 0o755)

    ssh_dir = Path.home() / ".ssh"
    made_ssh = not ssh_dir.exists()
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    key = ssh_dir / f"id_clowder_canary_{token}"
    key.write_text(values["ssh key"])

    old_secret = os.environ.get(SECRET_ENV)
    os.environ[SECRET_ENV] = values["env"]
    tcp, udp, unix, unix_name = listeners()
    sentinel = subprocess.Popen(["sleep", "3600"])
    h = Host(sb=sb, root=root, data_dir=data_dir, canary_dir=canary_dir,
             input_dir=input_dir, ssh_dir=ssh_dir, marker=f"clowder-attack-{token}",
             secrets=values, tcp=tcp, udp=udp, unix=unix, unix_name=unix_name,
             sentinel=sentinel)
    h.env = {
        "HOST_PID": str(os.getpid()),
        "SENTINEL_PID": str(sentinel.pid),
        "MARKER": h.marker,
        "DATA_DIR": str(data_dir),
        "BLOB_PATH": str(blob),
        "CANARY_DIR": str(canary_dir),
        "SSH_DIR": str(ssh_dir),
        "TCP_PORT": str(tcp.sock.getsockname()[1]),
        "UDP_PORT": str(udp.sock.getsockname()[1]),
        "UNIX_NAME": unix_name,
        "HOST_IPS": ",".join(host_ips()),
        "SECRET_ENV_NAME": SECRET_ENV,
        "SITE_PACKAGES": sysconfig.get_paths()["purelib"],
        "PYTHON_EXE": str(Path(sys.executable).resolve()),
    }
    try:
        yield h
    finally:
        sentinel.kill()
        sentinel.wait()
        for listener in (tcp, udp, unix):
            listener.close()
        if old_secret is None:
            os.environ.pop(SECRET_ENV, None)
        else:
            os.environ[SECRET_ENV] = old_secret
        key.unlink(missing_ok=True)
        if made_ssh:
            shutil.rmtree(ssh_dir, ignore_errors=True)
