"""A private host cgroup (v1) per sandboxed run: the limits the kernel enforces, the usage
the platform reports, and a reliable list of every host process that belongs to the run.

The run's cgroup is created under this process's own cgroup in each hierarchy, so limits set
on the platform itself (e.g. by Kubernetes or a job scheduler) still apply to sandboxes.

Why v1 only: this platform's machines run cgroup v1 (memory, pids and cpuacct hierarchies).
On a v2-only host :meth:`HostCgroup.create` raises :class:`SandboxUnavailable`; nothing runs
without the cgroup, because it is what enforces memory and counts CPU.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from clowder_ml.errors import SandboxUnavailable

CONTROLLERS = ("memory", "pids", "cpuacct")


def _controller_paths() -> dict[str, Path]:
    """Where this process's cgroup is, for each controller we need (v1 hierarchies)."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        for name in names.split(","):
            own[name] = path
    mounts: dict[str, tuple[str, str]] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        fstype, _source, superopts = [*right.split(), "", "", ""][:3]
        if fstype != "cgroup":
            continue
        root, mountpoint = fields[3], fields[4]
        for opt in superopts.split(","):
            if opt in CONTROLLERS:
                mounts.setdefault(opt, (root, mountpoint))
    out: dict[str, Path] = {}
    for name in CONTROLLERS:
        if name not in mounts or name not in own:
            raise SandboxUnavailable(
                f"The host has no cgroup v1 '{name}' hierarchy",
                "The sandbox needs cgroup v1 memory, pids and cpuacct controllers "
                "(cgroup v2-only hosts are not supported yet).",
            )
        root, mountpoint = mounts[name]
        rel = own[name]
        # In a container the mount's root may be our own cgroup; paths are relative to it.
        if root != "/" and (rel == root or rel.startswith(root.rstrip("/") + "/")):
            rel = rel[len(root):]
        out[name] = Path(mountpoint) / rel.lstrip("/")
    return out


@dataclass
class HostCgroup:
    """One run's cgroup in the memory, pids and cpuacct hierarchies."""

    name: str
    paths: dict[str, Path]

    @classmethod
    def create(cls, name: str, *, memory_limit: int, pids_limit: int) -> HostCgroup:
        """Create the cgroups and set the hard limits. Raises SandboxUnavailable if we can't."""
        paths = {c: p / name for c, p in _controller_paths().items()}
        made: list[Path] = []
        try:
            for p in paths.values():
                p.mkdir()
                made.append(p)
            (paths["memory"] / "memory.limit_in_bytes").write_text(str(memory_limit))
            (paths["pids"] / "pids.max").write_text(str(pids_limit))
        except OSError as exc:
            for p in reversed(made):
                _rmdir_quiet(p)
            raise SandboxUnavailable(
                f"Cannot create the sandbox cgroup {name}: {exc}",
                "The platform must run as root with writable cgroup v1 hierarchies.",
            ) from exc
        return cls(name, paths)

    @classmethod
    def existing(cls, name: str) -> HostCgroup | None:
        """The run cgroup ``name`` if any of its folders still exists (after a crash)."""
        paths = {c: p / name for c, p in _controller_paths().items()}
        if not any(p.is_dir() for p in paths.values()):
            return None
        return cls(name, paths)

    def join_prefix(self) -> list[str]:
        """argv prefix that moves the new process into this cgroup, then execs the rest.

        A tiny ``sh`` does it instead of ``preexec_fn`` because preexec_fn is unsafe when
        several sandboxes are started from threads at once.
        """
        files = " ".join(_sh_quote(str(p / "cgroup.procs")) for p in self.paths.values())
        script = f'for f in {files}; do echo $$ > "$f" || exit 125; done; exec "$@"'
        return ["/bin/sh", "-c", script, "sh"]

    def _read(self, controller: str, file: str) -> str:
        return (self.paths[controller] / file).read_text()

    def cpu_seconds(self) -> float:
        return int(self._read("cpuacct", "cpuacct.usage")) / 1e9

    def memory_usage(self) -> int:
        return int(self._read("memory", "memory.usage_in_bytes"))

    def memory_in_use(self) -> int:
        """Charged memory minus the page cache of regular files (``*_file`` LRU lists),
        which the kernel reclaims before it would OOM-kill anything: reading a large input
        must not look like using memory. tmpfs and gVisor's memory file are shmem, on the
        anon lists, so they stay counted."""
        stat: dict[str, int] = {}
        for line in self._read("memory", "memory.stat").splitlines():
            key, _, value = line.partition(" ")
            if key in ("total_active_file", "total_inactive_file"):
                stat[key] = int(value)
        return max(0, self.memory_usage() - sum(stat.values()))

    def memory_peak(self) -> int:
        return int(self._read("memory", "memory.max_usage_in_bytes"))

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer ended in this cgroup."""
        for line in self._read("memory", "memory.oom_control").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def pids_refused(self) -> int:
        """How many forks the host pids limit refused (``max`` in pids.events)."""
        for line in self._read("pids", "pids.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "max":
                return int(value)
        return 0

    def pids(self) -> set[int]:
        found: set[int] = set()
        for p in self.paths.values():
            try:
                found.update(int(x) for x in (p / "cgroup.procs").read_text().split())
            except FileNotFoundError:
                continue
        return found

    def kill_all(self, timeout: float = 5.0) -> bool:
        """SIGKILL every process in the cgroup until none is left. True when empty."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                return True
            for pid in pids:
                self._kill_if_member(pid)
            if time.monotonic() > deadline:
                return not self.pids()
            time.sleep(0.01)

    def _kill_if_member(self, pid: int) -> None:
        # A pidfd pins the process, so a recycled pid can never make us kill a stranger.
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return
        try:
            if str(pid) in self._read("pids", "cgroup.procs").split():
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(fd)

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left and remove the cgroups (charges move to the parent)."""
        self.kill_all(timeout)
        deadline = time.monotonic() + timeout
        for p in self.paths.values():
            while True:
                try:
                    p.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    # EBUSY while the kernel finishes reaping the last task.
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    self.kill_all(0.5)
                    time.sleep(0.01)


def _rmdir_quiet(p: Path) -> None:
    with contextlib.suppress(OSError):
        p.rmdir()


def _sh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"
