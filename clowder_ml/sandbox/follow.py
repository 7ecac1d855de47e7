"""Follow files of a live sandbox's work folder from the host, while the program runs.

The work folder is a host tmpfs bind-mounted at ``/work`` (see :mod:`clowder_ml.sandbox.base`);
what the program writes there is visible on the host at once, with gVisor (the gofer writes
through to the host file) as with bubblewrap (a plain bind). So following a file needs no new
mount and no new writable path: the sandbox's limits (the tmpfs size caps the file) hold as
before.

The program owns that folder and may be hostile, so a followed file is read like
:mod:`clowder_ml.sandbox.collect` reads outputs: opened relative to the work folder's
descriptor with ``O_NOFOLLOW | O_NONBLOCK`` (a symlink is never followed, a FIFO never
blocks us), only a regular file is read, and at most ``max_bytes`` in all are delivered (a
program truncating and rewriting a file in a loop cannot make the host read without end).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from clowder_ml.errors import ValidationFailed
from clowder_ml.sandbox.collect import safe_relpath

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Follow:
    """Follow one file of ``/work`` while the program runs.

    ``on_data(offset, data)`` gets the file's bytes in order, as they appear: ``data`` was
    read at byte ``offset``. Normally each call continues where the last ended; a call at
    offset 0 after earlier data means the file was truncated or replaced, and is being read
    again from its start. Calls come from a helper thread while the program runs, then once
    more (on the thread that called :meth:`~clowder_ml.sandbox.base.Sandbox.run`) after every
    process of the run has ended, so the last call sees the file complete; all calls are over
    before ``run`` returns. At most ``max_bytes`` are delivered in all, then following stops.
    ``interval_s``: how often the file is checked. If ``on_data`` raises, following stops and
    ``run`` raises that error after the run was cleaned up.
    """

    on_data: Callable[[int, bytes], None]
    max_bytes: int = 64 << 20
    interval_s: float = 0.25


class Follower:
    """Follows the files of one run (``name -> Follow``) in a background thread."""

    def __init__(self, follows: Mapping[str, Follow]) -> None:
        """Raises ValidationFailed for a name that is not a plain file name in /work."""
        self._files: list[_File] = []
        for name, spec in follows.items():
            rel = safe_relpath(name)
            if len(rel.parts) != 1:
                raise ValidationFailed(f"Only files directly in /work can be followed: {name!r}")
            if spec.max_bytes < 0 or spec.interval_s <= 0:
                raise ValidationFailed(f"Bad follow settings for {name!r}")
            self._files.append(_File(rel.name, spec))
        self._work: Path | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one poll at a time: offsets stay in order
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._interval = min((f.spec.interval_s for f in self._files), default=1.0)

    def start(self, work: Path) -> None:
        """Start polling the host folder ``work`` (mounted at /work) in a helper thread."""
        self._work = work
        if self._files:
            self._thread = threading.Thread(target=self._loop, daemon=True,
                                            name="sandbox-follow")
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread (no more deliveries once this returns)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def finish(self) -> None:
        """Stop the thread, then read what is left (call once the program has ended)."""
        self.stop()
        if self.error is None:
            self._poll()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._poll()
            if self.error is not None:
                return

    def _poll(self) -> None:
        if self._work is None:
            return
        with self._lock:
            try:
                dir_fd = os.open(self._work, _DIR_FLAGS)
            except OSError:
                return  # not mounted yet, or already gone
            try:
                for f in self._files:
                    if self.error is None:
                        f.poll(dir_fd, self)
            finally:
                os.close(dir_fd)


class _File:
    def __init__(self, name: str, spec: Follow) -> None:
        self.name = name
        self.spec = spec
        self.ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the file being read
        self.offset = 0
        self.delivered = 0

    def poll(self, dir_fd: int, owner: Follower) -> None:
        if self.delivered >= self.spec.max_bytes:
            return
        try:
            fd = os.open(self.name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError:
            return  # missing (not written yet), a symlink (ELOOP), ...: nothing to read
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return  # FIFOs, sockets, devices, folders: never read
            ident = (st.st_dev, st.st_ino)
            if ident != self.ident or st.st_size < self.offset:
                # Replaced or truncated: read it again from its start (Follow's contract).
                self.ident, self.offset = ident, 0
            while self.offset < st.st_size and self.delivered < self.spec.max_bytes:
                want = min(_CHUNK, st.st_size - self.offset,
                           self.spec.max_bytes - self.delivered)
                data = os.pread(fd, want, self.offset)
                if not data:
                    break
                at = self.offset
                self.offset += len(data)
                self.delivered += len(data)
                try:
                    self.spec.on_data(at, data)
                except BaseException as exc:  # handed to Sandbox.run, which re-raises it
                    owner.error = exc
                    return
        except OSError:
            return  # vanished between open and read: the next poll sees what is there
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
