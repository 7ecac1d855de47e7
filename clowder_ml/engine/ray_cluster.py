"""Where the job engine's Ray cluster lives: an embedded local head, or a remote address.

``connect(settings)`` is the one entry point. With ``CLOWDER_ML_RAY_ADDRESS`` set it returns
that cluster and starts nothing; otherwise it starts an :class:`EmbeddedRayHead` (``ray start
--head``) that the caller must ``stop()`` on shutdown.

Token auth: Ray 2.60 has token authentication (``RAY_AUTH_MODE=token``). The embedded head
is started with it on and a fresh random token passed through ``RAY_AUTH_TOKEN``; every
client (our :class:`~clowder_ml.engine.ray_backend.RayJobsBackend`) sends that token as a
Bearer header. A remote cluster's token is taken from ``CLOWDER_ML_RAY_AUTH_TOKEN`` when set.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from clowder_ml.errors import EngineUnavailable
from clowder_ml.settings import Settings

# Unix socket paths are limited to 107 bytes and Ray puts its sockets at
# <temp>/session_<date>_<pid>/sockets/plasma_store (about 70 bytes after <temp>), so a temp dir
# longer than this makes Ray fail at start with an obscure error.
_MAX_TEMP_DIR_LEN = 36
# Address and token of a running embedded head, for the next server process to adopt.
STATE_FILE = "head.json"


@dataclass(frozen=True)
class RayCluster:
    """A reachable Ray cluster: its Jobs API address and the token to use (None: no auth)."""

    address: str
    auth_token: str | None = None
    embedded: EmbeddedRayHead | None = None

    def stop(self) -> None:
        """Stop the embedded head if we started one; a remote cluster is left alone."""
        if self.embedded is not None:
            self.embedded.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_temp_dir(data_dir: Path) -> Path:
    """Ray's temp folder for a data folder: ``<data>/ray``, or a short ``/tmp`` one.

    Ray's unix sockets live in the temp folder, and socket paths are short (see
    ``_MAX_TEMP_DIR_LEN``); when ``<data>/ray`` is too long we use ``/tmp/cml-ray-<hash>``, the
    hash of the data folder so each data folder still gets its own head folder.
    """
    preferred = data_dir / "ray"
    if len(str(preferred)) <= _MAX_TEMP_DIR_LEN:
        return preferred
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:10]
    return Path("/tmp") / f"cml-ray-{digest}"  # noqa: S108 - short path is required, see above


def _session_of(pid_dir: Path) -> int | None:
    try:
        # Field 6 of /proc/PID/stat is the session id; the command (field 2) may hold spaces.
        stat = (pid_dir / "stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[3])
    except (OSError, ValueError, IndexError):
        return None


def _pids_using(marker: str, session: int | None = None) -> list[int]:
    """Pids of processes whose command line mentions ``marker`` (our head's temp folder), or
    that belong to ``session`` (the head's: some Ray processes rename themselves, e.g.
    ``ray::DashboardAgent``, and no longer name the folder)."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if session is not None and _session_of(entry) == session:
            pids.append(int(entry.name))
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


class EmbeddedRayHead:
    """A local Ray head started with ``ray start --head --block`` as our child process.

    Contract: after ``start()`` returns, ``address`` (``http://127.0.0.1:PORT``) answers the Jobs
    API and ``auth_token`` is the token it requires. ``stop()`` ends this head only (never other
    Ray heads on the machine) and is idempotent. All of Ray's ports are picked free, so several
    heads (e.g. parallel test sessions) can run on one machine.
    """

    def __init__(
        self,
        temp_dir: Path,
        *,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        object_store_bytes: int = 256 << 20,
        dashboard_port: int | None = None,
        spill_dir: Path | None = None,
        start_timeout_s: float = 90.0,
    ) -> None:
        self.temp_dir = temp_dir
        # Spill files are not sockets, so they may live under the (long) data folder.
        self.spill_dir = spill_dir or temp_dir / "spill"
        self.num_cpus = num_cpus if num_cpus is not None else (os.cpu_count() or 1)
        self.num_gpus = num_gpus
        self.object_store_bytes = object_store_bytes
        self.dashboard_port = dashboard_port or _free_port()
        self.gcs_port = _free_port()  # the GCS (``ray start --port``): where nodes join
        self.start_timeout_s = start_timeout_s
        self.auth_token = secrets.token_hex(32)
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self.session: int | None = None  # the session id of the head's processes

    def _command(self) -> list[str]:
        ray_bin = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
        cmd = [
            ray_bin, "start", "--head", "--block",
            f"--num-cpus={self.num_cpus}",
            f"--object-store-memory={self.object_store_bytes}",
            f"--temp-dir={self.temp_dir}",
            f"--object-spilling-directory={self.spill_dir}",
            # Loopback only: the dashboard runs arbitrary jobs for whoever reaches it.
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            "--include-dashboard=true",
            "--disable-usage-stats",
            # Fixed default ports (6379, 52365, ...) would clash with any other head here.
            f"--port={self.gcs_port}",
            f"--ray-client-server-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
        ]
        if self.num_gpus is not None:
            cmd.append(f"--num-gpus={self.num_gpus}")
        return cmd

    def _environment(self) -> dict[str, str]:
        """The environment ``ray start`` runs with: ours, token auth on, no usage stats."""
        return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": self.auth_token}

    def start(self) -> EmbeddedRayHead:
        """Start the head and wait until its Jobs API answers; raise EngineUnavailable if not."""
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        log = (self.temp_dir / "ray-start.log").open("ab")
        # Own session: a Ctrl-C to the server is not delivered to Ray; we stop it in order.
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            self._command(), env=self._environment(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.session = self._proc.pid  # the leader of its new session
        log.close()
        deadline = time.monotonic() + self.start_timeout_s
        headers = {"Authorization": f"Bearer {self.auth_token}"}
        while time.monotonic() < deadline:
            rc = self._proc.poll()
            if rc is not None:
                tail = (self.temp_dir / "ray-start.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise EngineUnavailable(
                    f"ray start exited with {rc}",
                    hint=f"see {self.temp_dir / 'ray-start.log'}: {tail[-300:]}",
                )
            # Ready means the Jobs API answers and the head node is registered (ALIVE) so a
            # job can be scheduled and resources are reported; the dashboard comes up first.
            try:
                r = httpx.get(
                    f"{self.address}/api/v0/nodes",
                    params={"detail": "true", "limit": "10"},
                    headers=headers,
                    timeout=2.0,
                )
                if r.status_code == 200 and any(
                    n.get("state") == "ALIVE" for n in r.json()["data"]["result"]["result"]
                ):
                    self._save_state()
                    return self
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                pass
            time.sleep(0.5)
        self.stop()
        raise EngineUnavailable(
            f"Ray head did not answer at {self.address} within {self.start_timeout_s:.0f} s",
            hint=f"see {self.temp_dir / 'ray-start.log'}",
        )

    @property
    def state_file(self) -> Path:
        return self.temp_dir / STATE_FILE

    def _save_state(self) -> None:
        # Owner-only: the token in it runs arbitrary code on the cluster.
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"address": self.address, "auth_token": self.auth_token,
                       "dashboard_port": self.dashboard_port, "session": self.session}, f)
        tmp.replace(self.state_file)

    @classmethod
    def adopt(cls, temp_dir: Path, spill_dir: Path | None = None) -> EmbeddedRayHead | None:
        """The head a previous server process started on this data folder, if it still
        answers (a server killed without shutdown leaves its head and jobs running)."""
        try:
            state = json.loads((temp_dir / STATE_FILE).read_text())
            head = cls(temp_dir, dashboard_port=int(state["dashboard_port"]), spill_dir=spill_dir)
            head.auth_token = str(state["auth_token"])
            head.session = int(state["session"]) if state.get("session") else None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not head.pids():
            return None
        try:
            r = httpx.get(f"{head.address}/api/version", timeout=3.0,
                          headers={"Authorization": f"Bearer {head.auth_token}"})
        except httpx.HTTPError:
            return None
        return head if r.status_code == 200 else None

    def alive(self) -> bool:
        """Whether the head's processes still run (ours, or an adopted head's)."""
        if self._proc is not None:
            return self._proc.poll() is None
        if self.session is not None:  # an adopted head: its `ray start` leads the session
            try:
                return Path(f"/proc/{self.session}/stat").read_text().split(") ")[1][0] != "Z"
            except (OSError, IndexError):
                return False
        return bool(self.pids())

    def pids(self) -> list[int]:
        """Pids of this head's processes (they name our temp folder or are in its session:
        ``ray start`` runs as the leader of a session of its own)."""
        return _pids_using(str(self.temp_dir), self.session)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop this head only; after it returns none of its processes remain.

        ``ray stop`` would stop every Ray on the machine, so instead: SIGTERM the blocking
        ``ray start`` (it shuts down the processes it started), then SIGKILL whatever still
        names our temp folder.
        """
        self.state_file.unlink(missing_ok=True)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        deadline = time.monotonic() + 5.0
        while True:
            left = self.pids()
            if not left:
                return
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM if time.monotonic() < deadline else signal.SIGKILL)
            if time.monotonic() > deadline + 5.0:
                return
            time.sleep(0.2)

    def __enter__(self) -> EmbeddedRayHead:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def connect(settings: Settings) -> RayCluster:
    """The configured Ray cluster: remote when ``ray_address`` is set, else a started local head.

    A remote address is used as is (nothing is started or checked here). For the embedded
    head the caller owns it: call ``RayCluster.stop()`` on shutdown. A head left running by
    a server that was killed is adopted, not duplicated, so its jobs keep their cluster.
    """
    if settings.ray_address:
        token = settings.ray_auth_token.get_secret_value() if settings.ray_auth_token else None
        return RayCluster(address=settings.ray_address.rstrip("/"), auth_token=token)
    temp_dir = ray_temp_dir(settings.resolved_data_dir)
    spill_dir = settings.resolved_data_dir / "ray-spill"
    adopted = EmbeddedRayHead.adopt(temp_dir, spill_dir)
    if adopted is not None:
        return RayCluster(address=adopted.address, auth_token=adopted.auth_token,
                          embedded=adopted)
    head = EmbeddedRayHead(
        temp_dir,
        num_cpus=settings.ray_num_cpus,
        num_gpus=settings.ray_num_gpus,
        object_store_bytes=settings.ray_object_store_bytes,
        dashboard_port=settings.ray_dashboard_port,
        spill_dir=spill_dir,
    ).start()
    return RayCluster(address=head.address, auth_token=head.auth_token, embedded=head)
