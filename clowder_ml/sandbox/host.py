"""Host-side mechanics shared by every backend: the size-limited work folder, capped output
capture, and the supervision loop that enforces wall time, CPU time, memory and output.

Nothing here trusts the sandboxed program: every number comes from the kernel (cgroup files,
statvfs) or from our own clock.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from clowder_ml.errors import SandboxUnavailable
from clowder_ml.sandbox.cgroups import HostCgroup
from clowder_ml.sandbox.limits import Limits
from clowder_ml.sandbox.result import Verdict

NOBODY = 65534
# How often the supervisor samples CPU, memory and the work folder. A breach is noticed at
# most this late; hard caps (cgroup memory, tmpfs size, RLIMIT_NPROC) need no sampling.
POLL_S = 0.025
# How long a backend's polite stop may take before every process of the run is SIGKILLed.
STOP_GRACE_S = 3.0

_MS_NOSUID = 2
_MS_NODEV = 4
_MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def mount_work_tmpfs(path: Path, size: int) -> None:
    """Mount a tmpfs of ``size`` bytes at ``path``, owned by nobody, mode 0700.

    The size cap is the disk limit: the kernel refuses writes past it (ENOSPC) whatever the
    program does, and the inode cap (one per 4 KiB of size, at least 1024) stops a flood of
    empty files from eating kernel memory.
    """
    inodes = max(1024, size // 4096)
    opts = f"size={size},nr_inodes={inodes},mode=0700,uid={NOBODY},gid={NOBODY}"
    rc = _libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", _MS_NOSUID | _MS_NODEV,
                     opts.encode())
    if rc != 0:
        err = ctypes.get_errno()
        raise SandboxUnavailable(
            f"Cannot mount the sandbox work folder: {os.strerror(err)}",
            "The platform must run as root to mount the size-limited work folder.",
        )


def unmount(path: Path) -> None:
    """Unmount ``path``; fall back to a lazy unmount if something still holds it."""
    target = os.fsencode(path)
    if _libc.umount2(target, 0) == 0:
        return
    err = ctypes.get_errno()
    if err == 22:  # EINVAL: not a mount point (never mounted, or already gone)
        return
    if _libc.umount2(target, _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err != 22:
            raise OSError(err, f"umount {path}: {os.strerror(err)}")


def is_mount_point(path: Path) -> bool:
    return os.path.ismount(path)


def folder_bytes(path: Path) -> tuple[int, bool]:
    """(bytes used, full?) for the work tmpfs. Full means no free block or no free inode."""
    st = os.statvfs(path)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    return used, st.f_bfree == 0 or st.f_ffree == 0


class CappedReader(threading.Thread):
    """Reads a pipe to EOF, keeping at most ``cap`` bytes; calls ``on_overflow`` once when
    the program writes more. Bytes past the cap are read and dropped so the writer never
    blocks on a full pipe before the supervisor stops it."""

    def __init__(self, fd: int, cap: int, on_overflow: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.cap = cap
        self.on_overflow = on_overflow
        self.buf = bytearray()
        self.truncated = False

    def run(self) -> None:
        try:
            while True:
                try:
                    chunk = os.read(self.fd, 1 << 16)
                except InterruptedError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                room = self.cap - len(self.buf)
                if room > 0:
                    self.buf += chunk[:room]
                if len(chunk) > room and not self.truncated:
                    self.truncated = True
                    self.on_overflow()
        finally:
            with contextlib.suppress(OSError):
                os.close(self.fd)


class StreamIO:
    """The child-side pipe ends of a streaming run (see :meth:`Sandbox.start`) and the
    host's request to stop it.

    ``stdin``/``stdout`` are the descriptors the sandboxed program gets as fd 0 and fd 1; the
    host keeps the other ends. They are closed by :meth:`release` as soon as the program has
    them (or the run failed before starting), so the host sees EOF when the program ends.
    ``stop(verdict)`` asks the supervisor to stop the run with that verdict (e.g. the host's
    own per-request deadline is a ``timeout``); it is safe from any thread, any time.
    """

    def __init__(self, stdin: int, stdout: int) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stop_for: Verdict | None = None
        self.stop_requested = threading.Event()
        self._lock = threading.Lock()
        self._released = False

    def stop(self, verdict: Verdict = Verdict.KILLED) -> None:
        if not self.stop_requested.is_set():
            self.stop_for = verdict
            self.stop_requested.set()

    def release(self) -> None:
        """Close the child-side ends (idempotent)."""
        with self._lock:
            if self._released:
                return
            self._released = True
        for fd in (self.stdin, self.stdout):
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass
class Observation:
    """Everything the host saw about one run, before a verdict is decided."""

    returncode: int | None
    stopped_for: Verdict | None
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    wall_s: float
    cpu_s: float
    peak_memory: int
    max_disk: int
    disk_full: bool
    oom_kills: int
    pids_refused: int


def supervise(argv: Sequence[str], cgroup: HostCgroup, work: Path, limits: Limits,
              stop: Callable[[], None] | None, *, env: dict[str, str],
              pass_fds: Sequence[int] = (), stream: StreamIO | None = None) -> Observation:
    """Start ``argv`` (already prefixed to join ``cgroup``) and watch it until it ends.

    Stops it (via ``stop`` if given, then by killing the whole cgroup) at the first of: wall time,
    CPU time, memory above ``limits.memory_bytes`` (the work folder's bytes, which are RAM,
    are not counted as memory), output over the cap, or ``stream.stop()``. Returns what was
    observed.

    With ``stream``, the program's stdin/stdout are the stream's pipes (the host talks to it
    while it runs; stdout is then the host's to read, not captured or capped here, and the
    observation's ``stdout`` is empty). stderr is always captured and capped.
    """
    err_r, err_w = os.pipe()
    overflow = threading.Event()
    readers = [CappedReader(err_r, limits.output_bytes, overflow.set)]
    if stream is None:
        out_r, out_w = os.pipe()
        readers.insert(0, CappedReader(out_r, limits.output_bytes, overflow.set))
        stdin_fd: int = subprocess.DEVNULL
    else:
        out_r, out_w = -1, stream.stdout
        stdin_fd = stream.stdin
    started = time.monotonic()
    try:
        proc = subprocess.Popen(  # noqa: S603 - argv is built by the platform, not the user
            list(argv), stdin=stdin_fd, stdout=out_w, stderr=err_w, env=env,
            close_fds=True, pass_fds=tuple(pass_fds), start_new_session=True,
        )
    except OSError as exc:
        for fd in (out_r, err_r, err_w) if stream else (out_r, out_w, err_r, err_w):
            os.close(fd)
        raise SandboxUnavailable(f"Cannot start the sandbox: {exc}") from exc
    finally:
        if stream is not None:
            stream.release()  # the child has its copies (or never will)
    if stream is None:
        os.close(out_w)
    os.close(err_w)
    for r in readers:
        r.start()

    stopped_for: Verdict | None = None
    peak_sample = samples = 0
    max_disk = 0
    disk_full = False
    deadline = started + limits.wall_s
    ended = started
    try:
        while True:
            try:
                proc.wait(timeout=POLL_S)
                ended = time.monotonic()
                break
            except subprocess.TimeoutExpired:
                pass
            used, full = folder_bytes(work)
            max_disk = max(max_disk, used)
            disk_full = disk_full or full
            memory = max(0, cgroup.memory_in_use() - used)
            peak_sample = max(peak_sample, memory)
            samples += 1
            if stream is not None and stream.stop_requested.is_set():
                stopped_for = stream.stop_for or Verdict.KILLED
            elif overflow.is_set():
                stopped_for = Verdict.OUTPUT_LIMIT
            elif time.monotonic() >= deadline:
                stopped_for = Verdict.TIMEOUT
            elif cgroup.cpu_seconds() >= limits.cpu_s:
                stopped_for = Verdict.CPU_LIMIT
            elif memory > limits.memory_bytes:
                stopped_for = Verdict.MEMORY_LIMIT
            if stopped_for is not None:
                ended = time.monotonic()
                _stop(proc, cgroup, stop)
                break
    finally:
        if proc.poll() is None:  # an exception above: never leave it running
            _stop(proc, cgroup, stop)
    wall_s = ended - started
    # Output that raced our stop is still welcome; an overflow that raced a normal exit is
    # still an overflow.
    cgroup.kill_all()
    for r in readers:
        r.join(timeout=5)
    if stopped_for is None and overflow.is_set():
        stopped_for = Verdict.OUTPUT_LIMIT
    used, full = folder_bytes(work)
    max_disk = max(max_disk, used)
    disk_full = disk_full or full
    # Peak memory is sampled, because the kernel's peak also counts the work folder and
    # reclaimable file cache. When the OOM killer fired, the cache had been reclaimed and the
    # kernel's peak (less the work folder) is the better number; a run too short for any
    # sample gets it too.
    oom_kills = cgroup.oom_kills()
    peak = peak_sample
    if oom_kills or not samples:
        peak = max(peak, cgroup.memory_peak() - max_disk)
    out = readers[0] if stream is None else None
    err = readers[-1]
    return Observation(
        returncode=proc.returncode, stopped_for=stopped_for,
        stdout=bytes(out.buf) if out else b"", stderr=bytes(err.buf),
        stdout_truncated=out.truncated if out else False, stderr_truncated=err.truncated,
        wall_s=wall_s, cpu_s=cgroup.cpu_seconds(), peak_memory=peak, max_disk=max_disk,
        disk_full=disk_full, oom_kills=oom_kills, pids_refused=cgroup.pids_refused(),
    )


def _stop(proc: subprocess.Popen[bytes], cgroup: HostCgroup,
          stop: Callable[[], None] | None) -> None:
    """Ask the backend to stop (so it can clean up after itself), give it a moment, then make
    sure: SIGKILL everything left in the cgroup."""
    try:
        if stop is not None:
            stop()
            proc.wait(timeout=STOP_GRACE_S)
    except Exception:  # noqa: S110 - a failed polite stop is what the hard kill is for
        pass
    finally:
        cgroup.kill_all()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
