"""The bubblewrap backend: WEAKER isolation, only when an operator configures it explicitly
(``CLOWDER_ML_SANDBOX_BACKEND=bubblewrap``). Every result says ``isolation: "bubblewrap
(weaker)"``.

Why weaker: the program talks to the host kernel directly (namespaces, no gVisor sentry), so
a kernel bug is a way out. What it still gets: the same file-system view as gVisor (read-only
/usr, Python environment and private /etc; /data read-only; /work a private tmpfs), no
network (own network namespace), own PID/IPC/UTS namespaces, uid/gid 65534 with every
capability dropped and no-new-privileges (``setpriv``), an environment built from scratch
(``--clearenv``), and the same host cgroup limits as gVisor. Here the pids cgroup counts only
the program's own tasks (plus bwrap's two), so it enforces the process limit exactly.

Known gap: bwrap reports a signal N as exit status 128 + N, so ``exit(137)`` cannot be told
from SIGKILL; such a run gets the verdict ``killed``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

from clowder_ml.errors import SandboxUnavailable
from clowder_ml.sandbox.base import SANDBOX_TMP, WORK, ExitInfo, Prepared, Sandbox
from clowder_ml.sandbox.cgroups import HostCgroup
from clowder_ml.sandbox.gvisor import find_binary
from clowder_ml.sandbox.host import NOBODY, Observation, StreamIO, supervise
from clowder_ml.sandbox.limits import Limits
from clowder_ml.sandbox.result import BUBBLEWRAP_WEAKER
from clowder_ml.settings import Settings

_HOST_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
# bwrap's own tasks in the run's pids cgroup: the monitor and the PID-1 reaper.
_BWRAP_TASKS = 2


class BwrapSandbox(Sandbox):
    """bubblewrap isolation (weaker than gVisor; see the module docstring)."""

    isolation = BUBBLEWRAP_WEAKER

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self.bwrap = find_binary(self.settings.sandbox_bwrap_path, "bubblewrap (bwrap)",
                                 "CLOWDER_ML_SANDBOX_BWRAP_PATH", "apt-get install bubblewrap")
        self.setpriv = find_binary("setpriv", "setpriv", "PATH", "apt-get install util-linux")
        self.prlimit = find_binary("prlimit", "prlimit", "PATH", "apt-get install util-linux")
        if os.geteuid() != 0:
            raise SandboxUnavailable(
                "The bubblewrap sandbox needs root here (cgroups and the work-folder mount)")
        self.reap_stale()

    def argv(self, prepared: Prepared, limits: Limits, status_fd: int) -> list[str]:
        """bwrap's command line for one run (without the cgroup prefix)."""
        args = [self.bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv",
                "--hostname", "sandbox", "--json-status-fd", str(status_fd)]
        for key, value in prepared.env.items():
            args += ["--setenv", key, value]
        for link, dest in prepared.symlinks.items():
            args += ["--symlink", dest, link]
        # The private /tmp comes first: a bind below it (a venv under the host's /tmp) must
        # land on top of the tmpfs, not be hidden by it.
        args += ["--perms", "1777", "--size", str(limits.disk_bytes), "--tmpfs", SANDBOX_TMP]
        made: set[str] = {SANDBOX_TMP}
        for m in prepared.mounts:
            # bwrap would create missing parents with the host's modes (e.g. /root 0700,
            # so nobody could reach a Python under /root); create them 0755 ourselves.
            for parent in reversed(PurePosixPath(m.target).parents[:-1]):
                if str(parent) not in made:
                    made.add(str(parent))
                    args += ["--perms", "0755", "--dir", str(parent)]
            args += ["--bind" if m.writable else "--ro-bind", str(m.source), m.target]
        args += ["--proc", "/proc", "--dev", "/dev", "--chdir", WORK]
        # Inside, still root in the new namespaces: drop to nobody, drop every capability,
        # forbid gaining privileges, then set the per-process limits and exec the program.
        args += [self.setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
                 self.prlimit, f"--nofile={limits.open_files}", "--core=0", "--",
                 *prepared.command]
        return args

    def _execute(self, prepared: Prepared, limits: Limits,
                 stream: StreamIO | None = None) -> tuple[Observation, ExitInfo]:
        status_r, status_w = os.pipe()
        cgroup: HostCgroup | None = None
        try:
            cgroup = HostCgroup.create(
                prepared.run_id, memory_limit=limits.memory_bytes + limits.disk_bytes,
                pids_limit=limits.processes + _BWRAP_TASKS)
            argv = [*cgroup.join_prefix(), *self.argv(prepared, limits, status_w)]
            obs = _supervise_passing(argv, cgroup, prepared.work, limits, status_w, stream)
        finally:
            os.close(status_w)
            try:
                if cgroup is not None:
                    cgroup.remove()
            finally:
                status = _read_all(status_r)
        return obs, self._exit_info(obs, status)

    def _cleanup(self, run_id: str) -> None:
        """Nothing to remove: bwrap keeps no state, and the run's processes died with its
        cgroup."""

    def _exit_info(self, obs: Observation, status: bytes) -> ExitInfo:
        docs: dict[str, int] = {}
        for line in status.decode("utf-8", "replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                docs.update({k: v for k, v in doc.items() if isinstance(v, int)})
        if "child-pid" not in docs:
            if obs.stopped_for is not None:
                return ExitInfo(False, None, None)
            detail = obs.stderr.decode("utf-8", "replace").strip()[-2000:]
            raise SandboxUnavailable(f"bubblewrap could not start the sandbox: {detail or '?'}")
        code = docs.get("exit-code")
        if code is None:  # ended from outside before bwrap could report
            rc = obs.returncode
            sig = -rc if rc is not None and rc < 0 else 9
            return ExitInfo(True, 128 + sig, sig)
        if code > 128:
            return ExitInfo(True, code, code - 128)
        return ExitInfo(True, code, None)


def _supervise_passing(argv: list[str], cgroup: HostCgroup, work: Path, limits: Limits,
                       fd: int, stream: StreamIO | None) -> Observation:
    # supervise() closes every other descriptor in the child; bwrap needs its status pipe.
    # No polite stop: killing the cgroup ends bwrap and the program, and leaves no state.
    return supervise(argv, cgroup, work, limits, None, env=_HOST_ENV, pass_fds=(fd,),
                     stream=stream)


def _read_all(fd: int) -> bytes:
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)
