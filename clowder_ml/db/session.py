"""Engine and session factory; SQLite gets WAL, a busy timeout and enforced foreign keys.

Writers that must not interleave (a dataset's next version is computed from the previous
one) use ``Database.serialized_session(key)``: on SQLite its transaction starts with
``BEGIN IMMEDIATE`` (the database's one write lock, taken up front instead of at the first
write, so two such transactions queue instead of failing), on PostgreSQL the row locks it
takes (``SELECT ... FOR UPDATE``) wait at most ``lock_wait_s`` (``lock_timeout``). Either
way a wait that runs out raises ``LockWaitTimeout`` and nothing is changed.

Within one process such writers first queue on a lock per key (per database on SQLite,
whose write lock is database-wide), so they wait without holding a connection and are
woken as soon as the one ahead finishes; SQLite's own busy wait polls with sleeps of up
to 100 ms, and a writer can lose the race to newcomers again and again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_MS = 30_000
# The API runs blocking handlers on a pool of 40 threads (anyio's default) and each holds a
# connection while it works: a smaller pool makes requests queue for connections rather
# than for the database, and connections beyond the kept ones are opened and closed per
# request (a PostgreSQL backend start each time). 40 kept, up to 60 at once.
POOL_SIZE = 40
POOL_OVERFLOW = 20
PG_LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of a lock_timeout


class LockWaitTimeout(Exception):
    """A serialized session waited ``lock_wait_s`` for its lock without getting it."""


def make_engine(url: str) -> Engine:
    """Create an engine for ``url``. SQLite connections are tuned for concurrent readers."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_MS / 1000}
    else:
        kwargs["pool_pre_ping"] = True  # a server restart must not fail requests (a file won't)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database not in (None, "", ":memory:"):
        kwargs.update(pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)  # not for in-memory
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
            cur.close()

    return engine


def is_lock_timeout(exc: DBAPIError) -> bool:
    """Whether ``exc`` is a lock wait that ran out (SQLite busy, PostgreSQL lock_timeout)."""
    if getattr(exc.orig, "sqlstate", None) == PG_LOCK_NOT_AVAILABLE:
        return True
    return "database is locked" in str(exc.orig)


class _KeyedLocks:
    """One lock per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str, timeout: float) -> Iterator[bool]:
        """Yields whether the lock was got within ``timeout`` seconds."""
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            got = lock.acquire(timeout=max(timeout, 0.0))
            try:
                yield got
            finally:
                if got:
                    lock.release()
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


class Database:
    """Holds the engine and hands out sessions that commit on success, roll back on error.

    ``lock_wait_s`` bounds how long a ``serialized_session`` waits for its lock.
    """

    def __init__(self, url: str, *, lock_wait_s: float = 30.0) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.lock_wait_s = lock_wait_s
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        self._queues = _KeyedLocks()

    @contextmanager
    def session(self) -> Iterator[Session]:
        s = self._factory()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    @contextmanager
    def serialized_session(self, key: str) -> Iterator[Session]:
        """A session for a change to ``key`` (e.g. a dataset id) that must see, and follow,
        every earlier one (see the module doc). Raises ``LockWaitTimeout`` (nothing changed)
        when ``lock_wait_s`` runs out: in this process's queue, at the start (SQLite) or at
        a ``FOR UPDATE`` inside (PostgreSQL)."""
        deadline = time.monotonic() + self.lock_wait_s
        sqlite = self.engine.dialect.name == "sqlite"
        with self._queues.hold("" if sqlite else key, self.lock_wait_s) as got:
            if not got:
                raise LockWaitTimeout(f"lock not granted in {self.lock_wait_s:g} s")
            with self._transaction(max(0.001, deadline - time.monotonic())) as s:
                yield s

    @contextmanager
    def _transaction(self, wait_s: float) -> Iterator[Session]:
        wait_ms = max(1, int(wait_s * 1000))
        s = self._factory()
        try:
            conn = s.connection()
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql(f"PRAGMA busy_timeout={wait_ms}")
                try:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                finally:
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
            else:
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{wait_ms}ms'")
            yield s
            s.commit()
        except DBAPIError as exc:
            s.rollback()
            if is_lock_timeout(exc):
                raise LockWaitTimeout(f"lock not granted in {wait_s:g} s") from exc
            raise
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def dispose(self) -> None:
        self.engine.dispose()
