"""The host's side of the agent: start a sandbox running the agent and speak its wire
protocol. The agent itself (the program that runs *inside* the sandbox) is
:mod:`clowder_ml.sandbox.agent`; its docstring defines the protocol.

>>> agent = start_agent(sandbox, CONFIG_LIMITS)
>>> send_frame(agent.proc, {"op": "config", ...})
>>> agent.await_hello(deadline) and read_json_frame(agent.proc, deadline)

Contract: this module only starts agent sandboxes (:func:`start_agent`, with the agent file
staged read-only at ``/code``) and moves bytes on their pipes: length-prefixed frames
(:data:`FRAME_LEN`, a 4-byte big-endian length, then the body) and raw writes. It never
interprets an answer and never raises the platform's user-code errors; that is the job of
its callers, :mod:`clowder_ml.sandbox.usercode` (one request per sandbox) and
:mod:`clowder_ml.sandbox.pool` (pre-started agents). Reads return ``None`` at EOF or when
the deadline passes, and the caller decides what that means.

Imports only the sandbox's lower layers (:mod:`~clowder_ml.sandbox.base`,
:mod:`~clowder_ml.sandbox.limits`), never the pool or ``usercode``.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from pathlib import Path
from typing import Any

from clowder_ml.sandbox.base import CODE, Sandbox, SandboxProcess
from clowder_ml.sandbox.limits import Limits, MiB

AGENT_FILE = Path(__file__).with_name("agent.py")
AGENT_NAME = "clowder_agent.py"
#: A frame's header: the body's length, 4 bytes big-endian.
FRAME_LEN = struct.Struct(">I")
#: A deadline for :func:`read_exact` that never passes (the sandbox's own limits bound it).
NO_DEADLINE = float("inf")

#: Limits for one config evaluation: a config is small and quick.
CONFIG_LIMITS = Limits(wall_s=30.0, cpu_s=10.0, memory_bytes=256 * MiB, processes=16,
                       output_bytes=64 * 1024, disk_bytes=16 * MiB)


def agent_command(sandbox: Sandbox) -> list[str]:
    """The agent's argv inside the sandbox (``-I``: no user site, no env-driven imports;
    ``-S``: no ``.pth`` hooks, see :func:`clowder_ml.sandbox.agent._add_site_packages`)."""
    return [sandbox.python, "-I", "-S", f"{CODE}/{AGENT_NAME}"]


class Agent:
    """A sandbox running the agent. ``greeted``: its hello frame was read (it is up and
    blocked reading its one request)."""

    def __init__(self, proc: SandboxProcess) -> None:
        self.proc = proc
        self.greeted = False

    def await_hello(self, deadline: float) -> bool:
        """Read the agent's hello frame unless already read; False on EOF or deadline."""
        if self.greeted:
            return True
        head = read_exact(self.proc, FRAME_LEN.size, deadline)
        if head is None:
            return False
        body = read_exact(self.proc, FRAME_LEN.unpack(head)[0], deadline) \
            if FRAME_LEN.unpack(head)[0] < 64 else None
        self.greeted = body is not None
        return self.greeted


def start_agent(sandbox: Sandbox, limits: Limits) -> Agent:
    """A fresh sandbox starting the agent (which then waits for its request)."""
    return Agent(sandbox.start(agent_command(sandbox), limits=limits,
                               files={AGENT_NAME: AGENT_FILE}))


def send_frame(proc: SandboxProcess, doc: dict[str, Any]) -> None:
    """Write ``doc`` as one length-prefixed JSON frame (``OSError`` if the sandbox ended)."""
    data = json.dumps(doc).encode()
    write_all(proc, FRAME_LEN.pack(len(data)) + data)


def write_all(proc: SandboxProcess, data: bytes) -> None:
    """Write all of ``data`` to the agent's stdin (blocks while the pipe is full)."""
    view = memoryview(data)
    while view:
        n = proc.stdin.write(view)
        view = view[n or 0:]


def read_exact(proc: SandboxProcess, size: int, deadline: float) -> bytes | None:
    """``size`` bytes from the agent, None at EOF or when ``deadline`` passes
    (:data:`NO_DEADLINE`: wait as long as the sandbox lives)."""
    fd = proc.stdout.fileno()
    buf = bytearray()
    while len(buf) < size:
        if deadline != NO_DEADLINE:  # the sandbox's own limits bound an endless wait
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
        chunk = os.read(fd, size - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_json_frame(proc: SandboxProcess, deadline: float) -> Any:
    """One length-prefixed JSON frame from the agent (at most 64 MiB), None at EOF."""
    head = read_exact(proc, FRAME_LEN.size, deadline)
    if head is None:
        return None
    size = FRAME_LEN.unpack(head)[0]
    body = read_exact(proc, size, deadline) if size <= 64 * MiB else None
    return None if body is None else json.loads(body)
