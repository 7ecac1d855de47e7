"""Resource limits for one sandboxed run, and parsing of human sizes ("512M", "1.5G").

Every limit is enforced by the host or by gVisor, never by code running inside the sandbox,
and every breach ends in its own verdict (see :mod:`clowder_ml.sandbox.result`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from clowder_ml.errors import ValidationFailed

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

_UNITS = {"": 1, "B": 1, "K": KiB, "M": MiB, "G": GiB, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(value: str | int) -> int:
    """Bytes from an int or a string like ``"512M"``, ``"1.5GiB"``, ``"64k"``, ``"1000"``.

    Units are binary (K = 1024). Raises :class:`ValidationFailed` on anything else.
    """
    if isinstance(value, bool):  # bool is an int subclass; True is not a size
        raise ValidationFailed(f"Not a size: {value!r}", "Use bytes or a unit: 512M, 2G")
    if isinstance(value, int):
        if value < 0:
            raise ValidationFailed(f"Size must not be negative: {value}")
        return value
    m = _SIZE_RE.match(value)
    if not m:
        raise ValidationFailed(f"Not a size: {value!r}", "Use bytes or a unit: 512M, 2G, 64K")
    number, unit = m.groups()
    return int(float(number) * _UNITS[unit.upper()])


def format_size(n: int) -> str:
    """The shortest exact binary form of ``n`` (``536870912`` -> ``"512M"``)."""
    for unit in ("T", "G", "M", "K"):
        if n and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


@dataclass(frozen=True)
class Limits:
    """What one run may use. Defaults suit a preprocessing step or a short script.

    - ``wall_s``: seconds from start to end, measured on the host (verdict ``timeout``).
    - ``cpu_s``: CPU seconds of the whole sandbox, including gVisor's own work on the
      program's behalf (verdict ``cpu_limit``).
    - ``memory_bytes``: memory of the sandbox, including gVisor's own (~25 MiB) and the
      in-sandbox ``/tmp`` (verdict ``memory_limit``).
    - ``processes``: tasks that may exist at once inside, threads included, as Linux's
      RLIMIT_NPROC counts them (verdict ``process_limit``).
    - ``output_bytes``: bytes captured from stdout and from stderr, each (verdict
      ``output_limit``; the run is stopped at the first byte over).
    - ``disk_bytes``: size of the writable work folder ``/work`` (verdict ``disk_limit``).
    - ``open_files``: open file descriptors per process (RLIMIT_NOFILE); going over fails the
      ``open`` call with EMFILE inside the program, which is not a verdict of its own.
    """

    wall_s: float = 60.0
    cpu_s: float = 60.0
    memory_bytes: int = 512 * MiB
    processes: int = 64
    output_bytes: int = 1 * MiB
    disk_bytes: int = 256 * MiB
    open_files: int = 256

    def __post_init__(self) -> None:
        problems = []
        if not self.wall_s > 0:
            problems.append("wall_s must be > 0")
        if not self.cpu_s > 0:
            problems.append("cpu_s must be > 0")
        # gVisor itself needs ~25 MiB; below this nothing useful can start.
        if self.memory_bytes < 64 * MiB:
            problems.append("memory_bytes must be at least 64M")
        if self.processes < 1:
            problems.append("processes must be >= 1")
        if self.output_bytes < 0:
            problems.append("output_bytes must be >= 0")
        if self.disk_bytes < 64 * KiB:
            problems.append("disk_bytes must be at least 64K")
        if self.open_files < 16:
            problems.append("open_files must be >= 16")
        if problems:
            raise ValidationFailed("Invalid sandbox limits: " + "; ".join(problems))

    def with_(self, **changes: Any) -> Limits:
        """A copy with some limits changed; ``None`` values are ignored and sizes may be
        strings (``memory_bytes="1G"``)."""
        for key in ("memory_bytes", "output_bytes", "disk_bytes"):
            if key in changes and changes[key] is not None:
                changes[key] = parse_size(changes[key])
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
