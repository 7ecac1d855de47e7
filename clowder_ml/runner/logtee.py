"""Capture everything the job writes to stdout and stderr, child processes included.

File descriptors 1 and 2 are pointed at a pipe; a thread copies what arrives to the original
stdout (so Ray's own log keeps it) and hands it to a callback (the reporter, which sends it
to the server). Working at the descriptor level catches output of subprocesses and C code
that never goes through ``sys.stdout``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable


class LogTee:
    def __init__(self, on_data: Callable[[bytes], None]) -> None:
        self._on_data = on_data
        self._thread: threading.Thread | None = None
        self._saved: tuple[int, int] | None = None

    def start(self) -> LogTee:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
            # Line by line, so the server sees lines as they are printed, not per 8 KiB.
            with contextlib.suppress(AttributeError, ValueError):
                stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        read_fd, write_fd = os.pipe()
        self._saved = (os.dup(1), os.dup(2))
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._thread = threading.Thread(target=self._pump, args=(read_fd, self._saved[0]),
                                        name="log-tee", daemon=True)
        self._thread.start()
        return self

    def _pump(self, read_fd: int, out_fd: int) -> None:
        while data := os.read(read_fd, 65536):
            with contextlib.suppress(OSError):
                os.write(out_fd, data)
            self._on_data(data)
        os.close(read_fd)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Restore stdout/stderr and wait for the copier to drain the pipe.

        Child processes still holding the pipe keep the copier alive past ``timeout_s``;
        it is a daemon thread, so it never blocks the runner's exit.
        """
        if self._saved is None:
            return
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        out, err = self._saved
        self._saved = None
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(err)
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                return  # still copying for a child process: it keeps using ``out``
        os.close(out)
