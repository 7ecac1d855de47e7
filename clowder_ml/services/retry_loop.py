"""A background retry with backoff for work that failed for a passing reason.

Used by uploads: a complete upload whose commit failed (the dataset stayed busy, the database
went away) stays ``finalizing`` and is retried here until it lands or fails for good.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("clowder_ml.retry")


class RetryLoop:
    """Runs ``attempt()`` in one daemon thread while it reports work left.

    ``attempt()`` does what it can and returns how many items still wait. After ``poke()``
    an attempt comes within ``first_s``; while items remain the pause doubles up to
    ``max_s``; when none remain the thread sleeps until the next ``poke()``. A poke during
    an attempt schedules another one, so no failure is left unretried. The thread starts on
    the first poke; ``close()`` stops and joins it.
    """

    def __init__(self, attempt: Callable[[], int], *, name: str, first_s: float = 1.0,
                 max_s: float = 300.0) -> None:
        self._attempt = attempt
        self._name = name
        self.first_s = first_s
        self.max_s = max_s
        self._cond = threading.Condition()
        self._due: float | None = None  # monotonic time of the next attempt; None: idle
        self._backoff = first_s
        self._closed = False
        self._thread: threading.Thread | None = None

    def poke(self) -> None:
        """Something failed and waits: make sure an attempt comes within ``first_s``."""
        with self._cond:
            if self._closed:
                return
            soon = time.monotonic() + self.first_s
            self._due = soon if self._due is None else min(self._due, soon)
            self._backoff = self.first_s
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def close(self) -> None:
        """Stop the thread (an attempt in progress finishes first)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._due is None
                                            or time.monotonic() < self._due):
                    self._cond.wait(None if self._due is None
                                    else self._due - time.monotonic())
                if self._closed:
                    return
                self._due = None
            try:
                left = self._attempt()
            except Exception:
                log.exception("retry attempt failed", extra={"loop": self._name})
                left = 1
            with self._cond:
                if self._due is None and left:  # (a poke meanwhile has set _due already)
                    self._backoff = min(self.max_s, self._backoff * 2)
                    self._due = time.monotonic() + self._backoff
                elif not left:
                    self._backoff = self.first_s
