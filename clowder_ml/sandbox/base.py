"""The :class:`Sandbox` interface and the run flow every backend shares.

A run, whatever the backend:

1. a private bundle folder (mode 0700) under the sandbox temp root, holding a minimal
   ``/etc``, the staged code (read-only at ``/code``) and the work folder;
2. the work folder is a tmpfs of ``limits.disk_bytes`` owned by nobody, mounted at ``/work``
   (writable, the working directory); ``input_dir`` is mounted read-only at ``/data``;
3. the program runs as uid/gid 65534 with only the environment given here (nothing from the
   host), in a private cgroup that caps memory and processes and counts CPU;
4. the host enforces wall time, CPU time, memory and output, then decides one verdict;
   files the caller follows are read from the host while it runs (see
   :mod:`clowder_ml.sandbox.follow`), and once more after it ended;
5. requested files are collected safely (see :mod:`clowder_ml.sandbox.collect`);
6. in ``finally``: every process of the run is killed, runtime state deleted, the work folder
   unmounted and the bundle removed, whatever happened.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from clowder_ml.errors import ValidationFailed
from clowder_ml.sandbox.cgroups import HostCgroup
from clowder_ml.sandbox.collect import Collected, collect, safe_relpath
from clowder_ml.sandbox.follow import Follow, Follower
from clowder_ml.sandbox.host import (
    NOBODY,
    Observation,
    StreamIO,
    mount_work_tmpfs,
    unmount,
)
from clowder_ml.sandbox.limits import Limits
from clowder_ml.sandbox.result import SandboxResult, Usage, Verdict
from clowder_ml.settings import Settings

WORK = "/work"
DATA = "/data"
CODE = "/code"
SANDBOX_TMP = "/tmp"  # noqa: S108 - the path inside the sandbox, a private tmpfs there
# Top-level host paths that may be symlinks into /usr (merged /usr) or real folders.
_SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_ETC_FILES = {
    "passwd": "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
              f"nobody:x:{NOBODY}:{NOBODY}:nobody:{WORK}:/usr/sbin/nologin\n",
    "group": f"root:x:0:\nnogroup:x:{NOBODY}:\n",
    "hosts": "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost\n",
    "hostname": "sandbox\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
}


@dataclass(frozen=True)
class Mount:
    """A bind mount into the sandbox. Only the work folder is ever writable."""

    source: Path
    target: str
    writable: bool = False


@dataclass(frozen=True)
class ExitInfo:
    """What the backend learnt about how the program ended (beyond the host observation).

    ``started``: the program was executed. ``exec_failed``: the sandbox started but could not
    execute the command (e.g. no such file); its message is in stderr. ``signal``: a signal
    ended the program. ``process_refused``: forks/clones refused by the process limit.
    """

    started: bool
    exit_code: int | None
    signal: int | None
    process_refused: int = 0
    exec_failed: bool = False


@dataclass
class Prepared:
    """One run's private layout, handed to the backend."""

    run_id: str
    bundle: Path
    work: Path
    etc: Path
    command: list[str]
    env: dict[str, str]
    mounts: list[Mount] = field(default_factory=list)
    symlinks: dict[str, str] = field(default_factory=dict)  # "/lib" -> "usr/lib"


def decide(obs: Observation, info: ExitInfo) -> tuple[Verdict, str]:
    """The verdict for a run: the platform's own stop reason first, then kernel-reported
    limit breaches, then how the program itself ended."""
    lim = "limit"
    if obs.stopped_for is Verdict.TIMEOUT:
        return Verdict.TIMEOUT, "Stopped: the wall-time limit was reached."
    if obs.stopped_for is Verdict.CPU_LIMIT:
        return Verdict.CPU_LIMIT, "Stopped: the CPU-time limit was reached."
    if obs.stopped_for is Verdict.OUTPUT_LIMIT:
        which = " and ".join(n for n, t in (("stdout", obs.stdout_truncated),
                                            ("stderr", obs.stderr_truncated)) if t)
        return Verdict.OUTPUT_LIMIT, f"Stopped: {which or 'output'} went over the output {lim}."
    if obs.stopped_for is Verdict.MEMORY_LIMIT or obs.oom_kills:
        return Verdict.MEMORY_LIMIT, "Ended: the memory limit was reached."
    if obs.stopped_for is Verdict.KILLED:  # SandboxProcess.stop(): the host's own choice
        return Verdict.KILLED, "Stopped by the platform."
    if obs.pids_refused or info.process_refused:
        return Verdict.PROCESS_LIMIT, (
            "A new process or thread was refused: the process limit was reached.")
    if obs.disk_full:
        return Verdict.DISK_LIMIT, "The work folder filled up: the disk limit was reached."
    if info.exec_failed:
        return Verdict.ERROR, "The command could not be executed in the sandbox."
    if info.signal is not None:
        return Verdict.KILLED, f"Ended by signal {info.signal}."
    if info.exit_code == 0:
        return Verdict.OK, "Exited with status 0."
    return Verdict.ERROR, f"Exited with status {info.exit_code}."


class Sandbox(ABC):
    """Runs untrusted commands under isolation with limits. Thread-safe: many runs may be in
    flight at once, each fully private."""

    isolation: ClassVar[str]

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        root = self.settings.sandbox_tmp_dir or Path(tempfile.gettempdir()) / "clowder-ml-sandbox"
        self.tmp_root = root.expanduser().resolve()
        self.tmp_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.tmp_root, 0o700)
        # Every run id starts with this instance's tag, so one instance's runs (cgroups,
        # runsc containers, bundles) can be told from another's on a shared host.
        self.run_prefix = f"cml-{secrets.token_hex(3)}"

    # public API ----------------------------------------------------------------------

    @property
    def python(self) -> str:
        """The interpreter used for Python files, the same path inside as on the host."""
        return str(self.settings.sandbox_python or sys.executable)

    def run(self, command: Sequence[str], *, input_dir: Path | None = None,
            env: Mapping[str, str] | None = None, limits: Limits | None = None,
            files: Mapping[str, bytes | Path] | None = None,
            collect_into: Path | None = None,
            collect_names: Sequence[str] | None = None,
            follow: Mapping[str, Follow] | None = None) -> SandboxResult:
        """Run ``command`` in a fresh sandbox and return how it ended.

        - ``input_dir``: a host folder mounted read-only at ``/data`` (its files must be
          readable by uid 65534).
        - ``env``: the program's environment on top of a minimal one (PATH, HOME=/work,
          LANG, TMPDIR, PYTHONDONTWRITEBYTECODE, PYTHONNOUSERSITE, PYTHONUNBUFFERED);
          nothing is inherited from the host.
        - ``files``: name -> content (bytes or a host file) staged read-only at ``/code``.
        - ``collect_into``: after the run, copy files from ``/work`` here (all, or only
          ``collect_names``), never following symlinks, at most ``limits.disk_bytes`` in
          all. The result lists them, and what was refused with why.
        - ``follow``: file name in ``/work`` -> :class:`~clowder_ml.sandbox.follow.Follow`:
          its bytes are handed to the callback while the program runs (read-only, from the
          host; no new mount), the last of them before this returns.

        Raises :class:`~clowder_ml.errors.SandboxUnavailable` if the backend is missing or
        cannot start, and :class:`~clowder_ml.errors.ValidationFailed` on bad arguments.
        Never runs anything outside the sandbox.
        """
        limits = limits or Limits()
        cmd = _check_command(command)
        full_env = self._env(env)
        _check_input_dir(input_dir)
        follower = Follower(follow or {})
        return self._run_flow(cmd, full_env, input_dir, limits, files, collect_into,
                              collect_names, None, follower)

    def start(self, command: Sequence[str], *, input_dir: Path | None = None,
              env: Mapping[str, str] | None = None, limits: Limits | None = None,
              files: Mapping[str, bytes | Path] | None = None) -> SandboxProcess:
        """Start ``command`` in a fresh sandbox and return at once, with the program's stdin
        and stdout connected to the host (:class:`SandboxProcess`).

        The same flow, limits, verdicts and cleanup as :meth:`run` (it runs in a background
        thread), except that stdout is the caller's to read (not captured, not capped by
        ``output_bytes``; stderr still is). The caller must end it: read stdout to EOF and
        :meth:`SandboxProcess.wait`, or :meth:`SandboxProcess.close` (stops it if still
        running). Live processes are also stopped at interpreter exit.
        """
        limits = limits or Limits()
        cmd = _check_command(command)
        full_env = self._env(env)
        _check_input_dir(input_dir)
        return SandboxProcess(self, cmd, full_env, input_dir, limits, files)

    def _run_flow(self, cmd: list[str], full_env: dict[str, str], input_dir: Path | None,
                  limits: Limits, files: Mapping[str, bytes | Path] | None,
                  collect_into: Path | None, collect_names: Sequence[str] | None,
                  stream: StreamIO | None, follower: Follower | None = None
                  ) -> SandboxResult:
        """The one run flow (module docstring), for :meth:`run` and :meth:`start` alike."""
        run_id = f"{self.run_prefix}{secrets.token_hex(6)}"
        bundle = Path(tempfile.mkdtemp(prefix=f"{run_id}-", dir=self.tmp_root))
        work = bundle / "work"
        # Held for the whole run: tells reap_stale (in this or another process) it is live.
        lock_fd = os.open(bundle / ".lock", os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                          0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            prepared = self._prepare(run_id, bundle, cmd, full_env, input_dir, files)
            mount_work_tmpfs(work, limits.disk_bytes)
            try:
                if follower is not None:
                    follower.start(work)
                try:
                    obs, info = self._execute(prepared, limits, stream)
                finally:
                    if follower is not None:
                        follower.stop()
                if follower is not None:
                    follower.finish()  # every process has ended: the files are complete
                verdict, detail = decide(obs, info)
                gathered = Collected()
                if collect_into is not None:
                    # Never more than the work folder can hold: sparse files and hard
                    # links would otherwise let a 16 MiB folder put gigabytes on the host.
                    gathered = collect(work, Path(collect_into), collect_names,
                                       max_bytes=limits.disk_bytes)
            finally:
                unmount(work)
        finally:
            try:
                self._cleanup(run_id)
            finally:
                shutil.rmtree(bundle, ignore_errors=True)
                os.close(lock_fd)
        if follower is not None and follower.error is not None:
            raise follower.error
        return SandboxResult(
            verdict=verdict, exit_code=info.exit_code, signal=info.signal,
            stdout=obs.stdout, stderr=obs.stderr, stdout_truncated=obs.stdout_truncated,
            stderr_truncated=obs.stderr_truncated,
            usage=Usage(cpu_s=obs.cpu_s, wall_s=obs.wall_s, peak_memory_bytes=obs.peak_memory,
                        disk_bytes=obs.max_disk),
            isolation=self.isolation, limits=limits, detail=detail,
            files=gathered.files, refused=gathered.refused,
        )

    def run_python(self, file: Path, args: Sequence[str] = (), *,
                   input_dir: Path | None = None, env: Mapping[str, str] | None = None,
                   limits: Limits | None = None,
                   files: Mapping[str, bytes | Path] | None = None,
                   collect_into: Path | None = None,
                   collect_names: Sequence[str] | None = None,
                   follow: Mapping[str, Follow] | None = None) -> SandboxResult:
        """Run a Python file, staged read-only at ``/code/<name>``, with the platform's
        Python environment (mounted read-only). Other arguments are those of :meth:`run`."""
        file = Path(file)
        if not file.is_file():
            raise ValidationFailed(f"Python file not found: {file}")
        staged: dict[str, bytes | Path] = dict(files or {})
        staged[file.name] = file
        return self.run([self.python, f"{CODE}/{file.name}", *args], input_dir=input_dir,
                        env=env, limits=limits, files=staged, collect_into=collect_into,
                        collect_names=collect_names, follow=follow)

    def reap_stale(self, min_age_s: float = 60.0) -> list[str]:
        """Clean up after runs whose platform process died (SIGKILL, power loss): their
        processes, cgroups, runtime state, work-folder mounts and bundles. A run is stale when
        its bundle is older than ``min_age_s`` and nobody holds its lock. Backends call this
        when they are created. Returns the run ids reaped."""
        reaped: list[str] = []
        for bundle in sorted(self.tmp_root.glob("cml-*")):
            if bundle.is_symlink() or not bundle.is_dir():
                continue
            if time.time() - bundle.stat().st_mtime < min_age_s:
                continue  # may be a run between mkdtemp and taking its lock
            try:
                fd: int | None = os.open(bundle / ".lock", os.O_RDWR | os.O_NOFOLLOW
                                         | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = None
            try:
                if fd is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a live run
                run_id = "-".join(bundle.name.split("-")[:2])
                cgroup = HostCgroup.existing(run_id)
                if cgroup is not None:
                    cgroup.remove()
                self._cleanup(run_id)
                unmount(bundle / "work")
                shutil.rmtree(bundle, ignore_errors=True)
                reaped.append(run_id)
            finally:
                if fd is not None:
                    os.close(fd)
        return reaped

    # backend hooks --------------------------------------------------------------------

    @abstractmethod
    def _execute(self, prepared: Prepared, limits: Limits,
                 stream: StreamIO | None = None) -> tuple[Observation, ExitInfo]:
        """Run the prepared sandbox to its end (or stop it) and report what happened.
        With ``stream``, the program's stdin/stdout are its pipes (passed on to
        :func:`~clowder_ml.sandbox.host.supervise`). Must leave no process of the run alive
        when it returns or raises."""

    @abstractmethod
    def _cleanup(self, run_id: str) -> None:
        """Remove backend state for ``run_id`` (called after every run, in ``finally``)."""

    # shared preparation -------------------------------------------------------------

    def _env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        bindir = str(Path(self.python).parent)
        env = {
            "PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": WORK,
            "LANG": "C.UTF-8",
            "TMPDIR": SANDBOX_TMP,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONNOUSERSITE": "1",
            # Unbuffered, so output written before a kill or a limit is not lost.
            "PYTHONUNBUFFERED": "1",
        }
        for key, value in (extra or {}).items():
            if not _ENV_KEY.match(key) or "\x00" in value:
                raise ValidationFailed(f"Invalid environment variable {key!r}")
            env[key] = value
        return env

    def _python_roots(self) -> list[Path]:
        """Folders holding the Python environment: its prefixes, each mounted read-only at
        its own path. Only these folders, never their parents (e.g. not the rest of /root)."""
        if self.settings.sandbox_python is not None:
            candidates = [Path(self.settings.sandbox_python).resolve().parent.parent]
        else:
            candidates = [Path(p).resolve() for p in {sys.prefix, sys.base_prefix,
                                                      sys.exec_prefix, sys.base_exec_prefix}]
        roots: list[Path] = []
        for p in sorted(set(candidates), key=lambda x: len(x.parts)):
            if len(p.parts) < 2:
                raise ValidationFailed(f"Refusing to mount {p} as the Python environment")
            if p == Path("/usr") or Path("/usr") in p.parents:
                continue  # already visible through /usr
            if any(r == p or r in p.parents for r in roots):
                continue
            roots.append(p)
        return roots

    def _prepare(self, run_id: str, bundle: Path, command: list[str], env: dict[str, str],
                 input_dir: Path | None, files: Mapping[str, bytes | Path] | None) -> Prepared:
        etc = bundle / "etc"
        etc.mkdir()
        for name, text in _ETC_FILES.items():
            (etc / name).write_text(text)
            os.chmod(etc / name, 0o644)
        os.chmod(etc, 0o755)  # noqa: S103 - nobody must read it inside; holds no secret
        work = bundle / "work"
        work.mkdir(mode=0o700)
        prepared = Prepared(run_id=run_id, bundle=bundle, work=work, etc=etc,
                            command=command, env=env)
        mounts = prepared.mounts
        mounts.append(Mount(Path("/usr"), "/usr"))
        for name in _SYSTEM_DIRS:
            host = Path("/") / name
            if host.is_symlink():
                prepared.symlinks[f"/{name}"] = os.readlink(host)
            elif host.is_dir():
                mounts.append(Mount(host, f"/{name}"))
        for root in self._python_roots():
            mounts.append(Mount(root, str(root)))
        mounts.append(Mount(etc, "/etc"))
        if files:
            code = bundle / "code"
            code.mkdir()
            for name, content in files.items():
                rel = safe_relpath(name)
                if len(rel.parts) != 1:
                    raise ValidationFailed(f"Staged file names must be plain names: {name!r}")
                data = content if isinstance(content, bytes) else Path(content).read_bytes()
                (code / rel.name).write_bytes(data)
                os.chmod(code / rel.name, 0o644)
            os.chmod(code, 0o755)  # noqa: S103 - nobody must read the staged code
            mounts.append(Mount(code, CODE))
        if input_dir is not None:
            mounts.append(Mount(Path(input_dir).resolve(), DATA))
        mounts.append(Mount(work, WORK, writable=True))
        return prepared


def _check_input_dir(input_dir: Path | None) -> None:
    if input_dir is not None and not Path(input_dir).is_dir():
        raise ValidationFailed(f"Input folder not found: {input_dir}")


_F_SETPIPE_SZ = 1031
#: The pipe buffer size of a streaming run's stdin and stdout.
PIPE_BYTES = 1 << 20


class SandboxProcess:
    """A sandbox started by :meth:`Sandbox.start`, running while the host talks to it.

    ``stdin`` and ``stdout`` are unbuffered binary pipes to the program's fd 0 and fd 1.
    Closing ``stdin`` gives the program EOF. :meth:`wait` returns the same
    :class:`SandboxResult` as :meth:`Sandbox.run` (``stdout`` empty: it was the caller's),
    once the run ended and everything was cleaned up. :meth:`stop` asks for an early end with
    a verdict; :meth:`close` stops (if needed), waits and closes the pipes; a context manager
    does the same. Whatever happens, the run's flow ``finally`` cleans everything up, and a
    process still live at interpreter exit is stopped then.
    """

    def __init__(self, sandbox: Sandbox, cmd: list[str], env: dict[str, str],
                 input_dir: Path | None, limits: Limits,
                 files: Mapping[str, bytes | Path] | None) -> None:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        # Bigger pipes: fewer wakeups and syscalls per record stream, each costly under
        # gVisor; still a fixed bound on what is in flight (the backpressure window).
        for fd in (in_w, out_w):
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)
        self.stream = StreamIO(stdin=in_r, stdout=out_w)
        self.stdin = os.fdopen(in_w, "wb", buffering=0)
        self.stdout = os.fdopen(out_r, "rb", buffering=0)
        self.limits = limits
        self._result: SandboxResult | None = None
        self._error: BaseException | None = None

        def body() -> None:
            try:
                self._result = sandbox._run_flow(cmd, env, input_dir, limits, files, None,
                                                 None, self.stream)
            except BaseException as exc:  # handed to wait()
                self._error = exc
            finally:
                self.stream.release()  # a run that failed before starting: host sees EOF
                _LIVE.discard(self)

        # Daemon, so an idle sandbox never holds up interpreter exit; the atexit hook below
        # stops and joins live ones first, so the daemon flag never skips a cleanup.
        self._thread = threading.Thread(target=body, daemon=True, name="sandbox-run")
        _LIVE.add(self)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """The run has not finished (it may be starting, running, or cleaning up)."""
        return self._thread.is_alive()

    def stop(self, verdict: Verdict = Verdict.KILLED) -> None:
        """Ask the supervisor to stop the run now with ``verdict`` (within ~25 ms)."""
        self.stream.stop(verdict)

    def wait(self, timeout: float | None = None) -> SandboxResult:
        """Wait for the run to end and be cleaned up; its result. Raises what the run raised
        (e.g. SandboxUnavailable) or TimeoutError if still running after ``timeout``."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("The sandbox is still running")
        if self._error is not None:
            raise self._error
        assert self._result is not None  # set whenever no error was
        return self._result

    def close(self) -> SandboxResult | None:
        """Stop the run if it is still going, wait for cleanup and close the pipes. Returns
        the result, or None when the run failed to start."""
        for f in (self.stdin, self.stdout):
            with contextlib.suppress(OSError):
                f.close()
        if self.alive:
            self.stop()
        try:
            return self.wait()
        except Exception:
            return None

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_LIVE: weakref.WeakSet[SandboxProcess] = weakref.WeakSet()


def wait_for_live_processes(timeout: float = 30.0) -> None:
    """Wait until every run started by :meth:`Sandbox.start` in this interpreter has ended
    and been cleaned up (or ``timeout`` passed). For tests and orderly shutdown."""
    deadline = time.monotonic() + timeout
    for proc in list(_LIVE):
        proc._thread.join(max(0.0, deadline - time.monotonic()))


@atexit.register
def _stop_live_processes() -> None:
    live = list(_LIVE)
    for proc in live:
        proc.stop()
    for proc in live:
        proc._thread.join(timeout=30)


def _check_command(command: Sequence[str]) -> list[str]:
    if isinstance(command, str | bytes):
        raise ValidationFailed("The command must be a list of arguments, not one string")
    cmd = [str(c) for c in command]
    if not cmd or not cmd[0]:
        raise ValidationFailed("The command is empty")
    if any("\x00" in c for c in cmd):
        raise ValidationFailed("The command contains a NUL byte")
    return cmd
