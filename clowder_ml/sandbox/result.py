"""What a sandboxed run returns: a verdict, bounded output, usage, and the isolation used."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from clowder_ml.sandbox.limits import Limits


class Verdict(StrEnum):
    """How a run ended. Each limit has its own verdict; ``error`` is only a non-zero exit."""

    OK = "ok"  # exited 0, no limit reached
    ERROR = "error"  # exited non-zero (or could not be executed), no limit reached
    TIMEOUT = "timeout"  # wall time ran out; the platform stopped it
    CPU_LIMIT = "cpu_limit"  # CPU time ran out; the platform stopped it
    MEMORY_LIMIT = "memory_limit"  # memory limit reached (stopped by the host or OOM-killed)
    PROCESS_LIMIT = "process_limit"  # a fork/clone was refused because of the process limit
    OUTPUT_LIMIT = "output_limit"  # stdout or stderr went over its cap; the platform stopped it
    DISK_LIMIT = "disk_limit"  # the work folder filled up
    KILLED = "killed"  # ended by a signal not caused by any limit (e.g. SIGKILL, SIGSEGV)


GVISOR = "gvisor"
BUBBLEWRAP_WEAKER = "bubblewrap (weaker)"


@dataclass(frozen=True)
class Usage:
    """Resources used, measured on the host for the whole sandbox.

    ``cpu_s`` and ``peak_memory_bytes`` include the sandbox runtime itself (for gVisor: the
    sentry and gofer). ``peak_memory_bytes`` excludes the work folder's bytes, which are
    counted in ``disk_bytes`` (the largest the work folder ever was, sampled).
    """

    cpu_s: float
    wall_s: float
    peak_memory_bytes: int
    disk_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"cpu_s": round(self.cpu_s, 3), "wall_s": round(self.wall_s, 3),
                "peak_memory_bytes": self.peak_memory_bytes, "disk_bytes": self.disk_bytes}


@dataclass(frozen=True)
class SandboxResult:
    """The outcome of :meth:`Sandbox.run`.

    ``exit_code`` follows the shell convention (128 + N when signal N ended the program) and is
    ``None`` when the program never started. ``signal`` is set when a signal ended it.
    ``stdout``/``stderr`` hold at most ``limits.output_bytes`` each; ``*_truncated`` says more
    was written. ``detail`` explains the verdict in words. ``files`` lists what was collected
    from the work folder (relative POSIX paths) and ``refused`` what was not, with why.
    """

    verdict: Verdict
    exit_code: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    usage: Usage
    isolation: str
    limits: Limits
    detail: str = ""
    files: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    @property
    def weaker_isolation(self) -> bool:
        return self.isolation != GVISOR

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; output is decoded as UTF-8 with replacement characters."""
        return {
            "verdict": self.verdict.value,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "stdout": self.stdout.decode("utf-8", "replace"),
            "stderr": self.stderr.decode("utf-8", "replace"),
            "stdout_truncated": self.stdout_truncated,
            "stderr_truncated": self.stderr_truncated,
            "usage": self.usage.to_dict(),
            "isolation": self.isolation,
            "weaker_isolation": self.weaker_isolation,
            "limits": self.limits.to_dict(),
            "detail": self.detail,
            "files": list(self.files),
            "refused": dict(self.refused),
        }
