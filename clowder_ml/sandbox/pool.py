"""A warm pool of single-use config sandboxes, so that validating a ``config.py`` does not
pay a sandbox start (and the agent's Python start) on the request path.

The pool only starts and hands out agents (:func:`~clowder_ml.sandbox.agent_client.start_agent`,
:class:`~clowder_ml.sandbox.agent_client.Agent`); what is sent to one and what its answer
means is the caller's (:func:`~clowder_ml.sandbox.usercode.evaluate_config`). It imports
:mod:`~clowder_ml.sandbox.agent_client`, never :mod:`~clowder_ml.sandbox.usercode`.

>>> with WarmPool(get_sandbox(), size=2) as pool:
...     evaluate_config(code, Schema, pool=pool)

Each pooled sandbox has already started the agent, which is blocked reading its request.
:meth:`WarmPool.take` hands one out (or starts a cold one when none is ready) and wakes the
background refiller. A sandbox serves exactly one request, then ends: no state from one
user's code can reach another's.

A pooled sandbox runs under ``limits``, whose ``wall_s`` is therefore its whole life, idle
time included: the refiller replaces sandboxes older than ``max_idle_s`` (below ``wall_s``)
so a taken one always has time left. The per-request deadline is the host's
(``evaluate_config(timeout_s=...)``). :meth:`close` (also at interpreter exit) stops every
pooled sandbox and waits until all are cleaned up.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
import weakref
from collections import deque
from dataclasses import replace

from clowder_ml.errors import ServiceUnavailable
from clowder_ml.sandbox.agent_client import CONFIG_LIMITS, Agent, start_agent
from clowder_ml.sandbox.base import Sandbox
from clowder_ml.sandbox.limits import Limits


class WarmPool:
    """``size`` pre-started agent sandboxes for
    :func:`~clowder_ml.sandbox.usercode.evaluate_config`. Thread-safe."""

    def __init__(self, sandbox: Sandbox, size: int = 2, *, limits: Limits | None = None,
                 max_idle_s: float = 240.0) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        self.sandbox = sandbox
        self.size = size
        self.max_idle_s = max_idle_s
        # The wall limit covers idle time plus the request.
        self.limits = limits or replace(CONFIG_LIMITS, wall_s=max_idle_s + 60.0)
        self._ready: deque[tuple[float, Agent]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.started = 0  # sandboxes started by the pool (for tests and the benchmark)
        self.cold_takes = 0
        self._thread = threading.Thread(target=self._refill, daemon=True, name="warm-pool")
        self._thread.start()
        _POOLS.add(self)

    def take(self) -> Agent:
        """A sandbox whose agent is up and waits for its request (``greeted``); the caller
        must send exactly one and close it. Never blocks on the refiller: starts a cold
        one when none is ready."""
        with self._cond:
            if self._closed:
                raise ServiceUnavailable("The warm pool is closed")
            while self._ready:
                born, proc = self._ready.popleft()
                if proc.proc.alive and time.monotonic() - born < self.max_idle_s:
                    self._cond.notify_all()
                    return proc
                self._discard(proc)
            self._cond.notify_all()
            self.cold_takes += 1
        return start_agent(self.sandbox, self.limits)

    def ready_count(self) -> int:
        with self._cond:
            return len(self._ready)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait until the pool is full (True) or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._ready) < self.size and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return not self._closed

    def close(self) -> None:
        """Stop the refiller and every pooled sandbox; wait until all are cleaned up."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            procs = [p for _, p in self._ready]
            self._ready.clear()
            self._cond.notify_all()
        self._thread.join(timeout=60)
        for proc in procs:
            self._discard(proc)
        for proc in procs:
            proc.proc.close()

    def __enter__(self) -> WarmPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # internals --------------------------------------------------------------------

    @staticmethod
    def _discard(agent: Agent) -> None:
        agent.proc.stop()
        for f in (agent.proc.stdin, agent.proc.stdout):
            with contextlib.suppress(OSError):
                f.close()

    def _refill(self) -> None:
        while True:
            with self._cond:
                while not self._closed and len(self._ready) >= self.size:
                    self._cond.wait(timeout=max(1.0, self.max_idle_s / 4))
                    self._expire()
                if self._closed:
                    return
            try:
                proc = start_agent(self.sandbox, self.limits)
            except Exception:
                time.sleep(1.0)
                continue
            # Only a booted agent is "warm"; one that never says hello is dropped.
            up = proc.await_hello(time.monotonic() + 60.0)
            with self._cond:
                self.started += 1
                if self._closed or not up:
                    self._discard(proc)
                    proc.proc.close()
                    if self._closed:
                        return
                    continue
                self._ready.append((time.monotonic(), proc))
                self._cond.notify_all()

    def _expire(self) -> None:
        """Drop pooled sandboxes too old to serve (called with the lock held)."""
        now = time.monotonic()
        while self._ready and (now - self._ready[0][0] >= self.max_idle_s
                               or not self._ready[0][1].proc.alive):
            self._discard(self._ready.popleft()[1])


_POOLS: weakref.WeakSet[WarmPool] = weakref.WeakSet()


@atexit.register
def _close_pools() -> None:
    # Registered after base's hook, so it runs first (atexit is LIFO): pools close cleanly,
    # then base stops whatever else is live.
    for pool in list(_POOLS):
        pool.close()
