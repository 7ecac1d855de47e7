"""Engine and session factory; SQLite gets WAL, a busy timeout and enforced foreign keys.

Writers that must not interleave (a dataset's next version is computed from the previous
one) use ``Database.serialized_session``: on SQLite its transaction starts with
``BEGIN IMMEDIATE`` (the database's one write lock, taken up front instead of at the first
write, so two such transactions queue instead of failing), on PostgreSQL the row locks it
takes (``SELECT ... FOR UPDATE``) wait at most ``lock_wait_s`` (``lock_timeout``). Either
way a wait that runs out raises ``LockWaitTimeout`` and nothing is changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_MS = 30_000
# The API runs blocking handlers on a pool of 40 threads (anyio's default) and each holds a
# connection while it works: a smaller pool makes requests queue for connections rather
# than for the database. 10 kept, up to 50 at once.
POOL_SIZE = 10
POOL_OVERFLOW = 40
PG_LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of a lock_timeout


class LockWaitTimeout(Exception):
    """A serialized session waited ``lock_wait_s`` for its lock without getting it."""


def make_engine(url: str) -> Engine:
    """Create an engine for ``url``. SQLite connections are tuned for concurrent readers."""
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_MS / 1000}
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


class Database:
    """Holds the engine and hands out sessions that commit on success, roll back on error.

    ``lock_wait_s`` bounds how long a ``serialized_session`` waits for its lock.
    """

    def __init__(self, url: str, *, lock_wait_s: float = 30.0) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.lock_wait_s = lock_wait_s
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

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
    def serialized_session(self) -> Iterator[Session]:
        """A session for a change that must see, and follow, every earlier one (see the
        module doc). Raises ``LockWaitTimeout`` (nothing changed) when the lock wait runs out,
        whether at the start (SQLite) or at a ``FOR UPDATE`` inside (PostgreSQL)."""
        wait_ms = max(1, int(self.lock_wait_s * 1000))
        s = self._factory()
        try:
            conn = s.connection()
            if self.engine.dialect.name == "sqlite":
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
                raise LockWaitTimeout(f"lock not granted in {self.lock_wait_s:g} s") from exc
            raise
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def dispose(self) -> None:
        self.engine.dispose()
