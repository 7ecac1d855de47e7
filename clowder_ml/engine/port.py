"""The engine's port: all the dispatcher knows of where jobs are kept.

The dispatcher is handed a :class:`JobStore` (``services.job_store.DbJobStore`` in the server)
and sees jobs only as :class:`JobRecord` snapshots, so the engine imports no database code.
The store owns the rules: state changes go through the job state machine (compare-and-set,
terminal jobs never change again) and every change is recorded as an event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from clowder_ml.engine.spec import JobSpec
from clowder_ml.engine.states import JobState


@dataclass(frozen=True)
class JobRecord:
    """A job as the store had it when asked (a snapshot: it does not follow later changes)."""

    id: str
    owner_id: int
    state: JobState
    spec: JobSpec
    attempt: int
    ray_submission_id: str | None
    cancel_requested: bool
    started_at: datetime | None
    waiting_for: str | None
    log_size: int


class JobStore(Protocol):
    """What the dispatcher reads and writes about jobs. Calls are blocking and thread-safe;
    each is its own transaction."""

    def pending(self) -> list[JobRecord]:
        """PENDING jobs in submission order (the queue)."""
        ...

    def active(self) -> list[JobRecord]:
        """Jobs handed to Ray (SUBMITTED or RUNNING), oldest first."""
        ...

    def state(self, job_id: str) -> JobState | None:
        """The job's state now; None for an unknown job."""
        ...

    def transition(self, job_id: str, new: JobState, message: str, *,
                   reason: str | None = None) -> None:
        """Move the job to ``new`` with an event; raises ``InvalidJobTransition`` when its
        state does not allow it (including when a concurrent change got there first)."""
        ...

    def add_event(self, job_id: str, message: str) -> None:
        """A notable moment that is not a state change."""
        ...

    def set_waiting(self, job_id: str, message: str | None) -> None:
        """What the job waits for (None: nothing); ignored once the job is terminal."""
        ...

    def set_waiting_all_pending(self, message: str) -> None:
        """The same ``waiting_for`` on every PENDING job (the engine itself is not ready)."""
        ...

    def claim_submission(self, job_id: str, submission_id: str, token_ttl_s: float
                         ) -> str | None:
        """Prepare a still-PENDING job for Ray: record ``submission_id`` and issue the
        runner's job token (valid ``token_ttl_s``), returned; None when the job is no longer
        PENDING (cancelled meanwhile)."""
        ...

    def append_log(self, job_id: str, text: str) -> None:
        """Add ``text`` at the end of the job's log (e.g. Ray's log of a runner that died
        before it could send its own)."""
        ...
