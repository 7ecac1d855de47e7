"""The gVisor backend: ``runsc run`` on an OCI bundle written for each run.

Why each setting (all found by experiment on runsc 0.0~20221219, platform ptrace):

- ``runsc run`` (never ``runsc do``, which passes the host environment and root file system).
  The root is an empty read-only folder; /usr, the Python environment and a private /etc are
  read-only binds; /work is the run's tmpfs; /data is the read-only input.
- ``--network=none``: only loopback inside. ``hostname`` "sandbox" in its own UTS namespace.
- uid/gid 65534, no capabilities (all five sets empty), ``noNewPrivileges``. gVisor ignores
  the ``nosuid``/``nodev`` mount options (it logs that), so no-new-privileges is what makes
  set-uid files powerless; we still pass the options for runtimes that honour them.
- ``--ignore-cgroups``: runsc would otherwise create its own cgroup at the hierarchy root,
  outside ours. Instead ``runsc run`` starts inside the run's private cgroup (see
  :mod:`~clowder_ml.sandbox.cgroups`), so the sentry, gofer and every stub process are in
  it: the memory cap, CPU count and kill-everything all cover the whole sandbox.
- Memory: the cgroup's hard cap is memory + disk (the tmpfs work folder is RAM and is charged
  to the sentry that writes it); the supervisor stops the run when the charge, less the
  work folder's bytes and less reclaimable file cache (reading a big input is not memory),
  passes the memory limit. When the kernel's OOM killer fires first, the sandbox dies
  without a word: ``oom_kill`` in ``memory.oom_control`` tells us why.
- Disk: /work is a host tmpfs of exactly ``disk_bytes`` (and one inode per 4 KiB); writes
  past it fail with ENOSPC inside. The supervisor samples statvfs: no free block or inode
  means ``disk_limit``.
- Processes: ``RLIMIT_NPROC`` in ``process.rlimits``. gVisor enforces it itself, exactly,
  with EAGAIN to the program (threads count, as in Linux). The host pids cgroup counts
  gVisor's own threads and stubs too (~7 host tasks per sandbox process plus ~50), and a
  host cap that is hit kills the whole sandbox silently, so it is only a generous backstop
  (512 + 16 per allowed process). To *see* a refused fork, runsc's strace is enabled for
  clone/fork/vfork only, logging to a FIFO we read: a clone that returns errno 11 is a
  ``process_limit``. A FIFO, not a file, so a program that retries fork in a loop cannot fill
  the disk with log lines.
- CPU: gVisor does not enforce ``RLIMIT_CPU`` (a spin loop ran past it). The supervisor
  polls the cgroup's ``cpuacct.usage`` and stops the run at the limit.
- Open files: ``RLIMIT_NOFILE`` (enforced by gVisor; EMFILE inside).
- Wall time and output: host clock and capped pipe readers. To stop a run, ``runsc kill``
  first (then ``runsc run`` removes its own state; ``runsc delete --force`` after a hard
  kill waits ~1.2 s for a sandbox already gone), then SIGKILL to every process in the cgroup.
- ``setpriv --pdeathsig KILL`` in front of ``runsc run``: if the platform dies, so does
  ``runsc run``, and with it the sandbox it started ``--attached``.
- Exit status: the boot log's ``Exiting with status: N`` is the raw wait status, which tells
  a signal (``os.kill(pid, 9)``) from ``exit(137)``; runsc's own exit code cannot.
- Start failures: the boot log says ``Process should have started`` once the program runs;
  without it, either exec failed (``EXEC:`` seen: the program's fault, verdict ``error``) or
  the sandbox never booted (:class:`SandboxUnavailable`).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from clowder_ml.errors import SandboxUnavailable
from clowder_ml.sandbox.base import SANDBOX_TMP, WORK, ExitInfo, Prepared, Sandbox
from clowder_ml.sandbox.cgroups import HostCgroup
from clowder_ml.sandbox.host import NOBODY, Observation, StreamIO, supervise
from clowder_ml.sandbox.limits import Limits
from clowder_ml.sandbox.result import GVISOR
from clowder_ml.settings import Settings

_HOST_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
_GLOG = r"^[IWEF]\d{4} [\d:.]+\s+\d+ "
_EXIT_RE = re.compile(_GLOG + r"main\.go:\d+\] Exiting with status: (\d+)$")
_STARTED_RE = re.compile(_GLOG + r"loader\.go:\d+\] Process should have started")
_EXEC_RE = re.compile(_GLOG + r"kernel\.go:\d+\] EXEC: ")
# The tail after the syscall is written by gVisor, so a program cannot fake it through its
# process name (at most 15 bytes, printed before " X clone(").
_CLONE_EAGAIN_RE = re.compile(
    r"strace\.go:\d+\] .* X (?:clone|fork|vfork)\([^()]*\) = \S+ \(\S+\) errno=11 "
    r"\(try again\) \([^()]*\)$")


def find_binary(name_or_path: str, what: str, setting: str, install: str) -> str:
    """Absolute path of an executable, or SandboxUnavailable saying how to get it."""
    found = shutil.which(name_or_path)
    if found is None:
        raise SandboxUnavailable(
            f"{what} not found: {name_or_path!r}",
            f"Install it ({install}) or point {setting} at it. User code is never run "
            "without a sandbox.",
        )
    return found


class BootLog(threading.Thread):
    """Reads runsc's boot log from a FIFO and keeps only what the verdict needs plus a short
    tail for error messages. Lines are capped so the sentry cannot make us hold much."""

    def __init__(self, fifo: Path) -> None:
        super().__init__(daemon=True)
        # Opened read-write so that reads block (instead of seeing EOF) until runsc opens
        # its end; ``finish`` closes our write end so the thread ends after the last byte.
        self.fd = os.open(fifo, os.O_RDWR | os.O_CLOEXEC)
        self.started = False
        self.exec_seen = False
        self.raw_status: int | None = None
        self.clone_refused = 0
        self.tail: collections.deque[str] = collections.deque(maxlen=25)
        self._done = threading.Event()

    def run(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()[-8192:]
            for raw in lines:
                self._line(raw[:8192].decode("utf-8", "replace"))
            if self._done.is_set():
                with contextlib.suppress(BlockingIOError):
                    os.set_blocking(self.fd, False)
        if pending:
            self._line(pending.decode("utf-8", "replace"))

    def _line(self, line: str) -> None:
        if _CLONE_EAGAIN_RE.search(line):
            self.clone_refused += 1
            return
        if "strace.go" in line:
            return  # other traced clones: not interesting, not kept
        self.tail.append(line)
        if _STARTED_RE.match(line):
            self.started = True
        elif _EXEC_RE.match(line):
            self.exec_seen = True
        else:
            m = _EXIT_RE.match(line)
            if m:
                self.raw_status = int(m.group(1))

    def finish(self) -> None:
        """Called once every process of the run is gone: drain what is left and stop."""
        self._done.set()
        # Wake a blocked read; the reader then drains without blocking and stops.
        with contextlib.suppress(OSError):
            os.write(self.fd, b"\n")
        self.join(timeout=5)
        with contextlib.suppress(OSError):
            os.close(self.fd)


class RunscSandbox(Sandbox):
    """gVisor isolation (see the module docstring for why each setting)."""

    isolation = GVISOR

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self.runsc = find_binary(self.settings.sandbox_runsc_path, "gVisor runsc",
                                 "CLOWDER_ML_SANDBOX_RUNSC_PATH", "apt-get install runsc")
        self.setpriv = find_binary("setpriv", "setpriv", "PATH", "apt-get install util-linux")
        if os.geteuid() != 0:
            raise SandboxUnavailable(
                "The gVisor sandbox needs root (runsc, cgroups and the work-folder mount)",
                "Run the platform's workers as root, or in a privileged container.",
            )
        state = self.settings.sandbox_state_dir or self.tmp_root / "runsc-state"
        self.state_dir = Path(state).expanduser().resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.state_dir, 0o700)
        self.reap_stale()

    def _flags(self) -> list[str]:
        return ["--root", str(self.state_dir), "--network=none", "--ignore-cgroups",
                f"--platform={self.settings.sandbox_runsc_platform}"]

    def spec(self, prepared: Prepared, limits: Limits) -> dict[str, Any]:
        """The OCI config.json for one run."""
        ro = ["rbind", "ro", "nosuid", "nodev"]
        mounts: list[dict[str, Any]] = [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "noexec", "mode=755"]},
            # In-sandbox tmpfs: lives in the sentry's memory, so it counts as memory.
            {"destination": SANDBOX_TMP, "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]},
        ]
        for m in prepared.mounts:
            mounts.append({"destination": m.target, "type": "bind", "source": str(m.source),
                           "options": ["rbind", "rw", "nosuid", "nodev"] if m.writable
                           else ro})
        rlimits = [
            {"type": "RLIMIT_NPROC", "soft": limits.processes, "hard": limits.processes},
            {"type": "RLIMIT_NOFILE", "soft": limits.open_files, "hard": limits.open_files},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
        ]
        return {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": False,
                "user": {"uid": NOBODY, "gid": NOBODY, "additionalGids": []},
                "args": prepared.command,
                "env": [f"{k}={v}" for k, v in prepared.env.items()],
                "cwd": WORK,
                "capabilities": {"bounding": [], "effective": [], "inheritable": [],
                                 "permitted": [], "ambient": []},
                "rlimits": rlimits,
                "noNewPrivileges": True,
            },
            "root": {"path": "rootfs", "readonly": True},
            "hostname": "sandbox",
            "mounts": mounts,
            "linux": {
                "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
                "maskedPaths": [],
                "readonlyPaths": [],
            },
        }

    def _write_bundle(self, prepared: Prepared, limits: Limits) -> None:
        rootfs = prepared.bundle / "rootfs"
        rootfs.mkdir(mode=0o755)
        for target in ["/proc", "/dev", SANDBOX_TMP, *(m.target for m in prepared.mounts)]:
            (rootfs / target.lstrip("/")).mkdir(parents=True, exist_ok=True)
        for link, dest in prepared.symlinks.items():
            (rootfs / link.lstrip("/")).symlink_to(dest)
        # Every folder on the way to a mount point must be traversable by nobody.
        for dirpath, _dirs, _files in os.walk(rootfs):
            os.chmod(dirpath, 0o755)  # noqa: S103 - empty mount-point folders
        config = prepared.bundle / "config.json"
        config.write_text(json.dumps(self.spec(prepared, limits), indent=1))
        os.chmod(config, 0o600)

    def _execute(self, prepared: Prepared, limits: Limits,
                 stream: StreamIO | None = None) -> tuple[Observation, ExitInfo]:
        self._write_bundle(prepared, limits)
        fifo = prepared.bundle / "boot.log.fifo"
        os.mkfifo(fifo, 0o600)
        log = BootLog(fifo)
        log.start()
        cgroup: HostCgroup | None = None
        try:
            cgroup = HostCgroup.create(
                prepared.run_id, memory_limit=limits.memory_bytes + limits.disk_bytes,
                pids_limit=512 + 16 * limits.processes)
            # If the platform dies, the kernel kills ``runsc run`` (parent-death signal), and
            # runsc's attached sandbox dies with it: no user code outlives its supervisor.
            argv = [*cgroup.join_prefix(), self.setpriv, "--pdeathsig", "KILL", "--",
                    self.runsc, *self._flags(),
                    "--strace", "--strace-syscalls=clone,fork,vfork",
                    f"--debug-log={fifo}", "--debug-command=boot",
                    "run", "--bundle", str(prepared.bundle), prepared.run_id]
            obs = supervise(argv, cgroup, prepared.work, limits,
                            lambda: self._kill(prepared.run_id), env=_HOST_ENV,
                            stream=stream)
        finally:
            try:
                if cgroup is not None:
                    cgroup.remove()
            finally:
                log.finish()
        return obs, self._exit_info(obs, log)

    def _kill(self, run_id: str) -> None:
        """Polite stop: ``runsc kill`` ends the program, then ``runsc run`` exits and deletes
        the container state itself (``runsc delete --force`` after a hard kill takes ~1.2 s,
        waiting for a sandbox that is already gone). The supervisor SIGKILLs the whole cgroup
        if this does not end the run within a few seconds, or at once if ``runsc kill``
        fails (e.g. the sandbox is still booting): hence ``check=True``."""
        subprocess.run(  # noqa: S603 - fixed argv
            [self.runsc, *self._flags(), "kill", run_id, "KILL"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=_HOST_ENV, timeout=5, check=True)

    def _exit_info(self, obs: Observation, log: BootLog) -> ExitInfo:
        if log.raw_status is not None:
            status = log.raw_status
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                return ExitInfo(True, 128 + sig, sig, log.clone_refused)
            return ExitInfo(True, os.WEXITSTATUS(status), None, log.clone_refused)
        rc = obs.returncode
        if log.started or obs.stopped_for is not None or obs.oom_kills or obs.pids_refused:
            # The sandbox was ended from outside (our stop, the OOM killer, a signal).
            sig = rc - 128 if rc is not None and rc > 128 else (-rc if rc and rc < 0 else 9)
            return ExitInfo(log.started, 128 + sig, sig, log.clone_refused)
        if log.exec_seen:
            return ExitInfo(False, None, None, exec_failed=True)
        detail = obs.stderr.decode("utf-8", "replace").strip()[-2000:]
        tail = "\n".join(log.tail)[-2000:]
        raise SandboxUnavailable(
            f"gVisor could not start the sandbox (runsc exit {rc}): {detail or tail or '?'}",
            "Check that runsc works on this host: runsc --version; see the runsc log above.",
        )

    def _cleanup(self, run_id: str) -> None:
        # runsc deletes its state when it ends normally; when we killed it, it could not.
        if not any(p.name.startswith(run_id) for p in self.state_dir.iterdir()):
            return
        subprocess.run(  # noqa: S603 - fixed argv
            [self.runsc, *self._flags(), "delete", "--force", run_id],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=_HOST_ENV, timeout=30, check=False)
        for p in self.state_dir.iterdir():
            if p.name.startswith(run_id):
                with contextlib.suppress(OSError):
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
