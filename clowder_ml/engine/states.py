"""Job states and the only transitions between them.

PENDING -> SUBMITTED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED. A job may also fail or be
cancelled before it runs (PENDING/SUBMITTED -> FAILED | CANCELLED), and a retry policy may
send a lost job back to PENDING. A terminal job never changes state again: every change goes
through :func:`check_transition`, which raises otherwise.
"""

from __future__ import annotations

import enum

from clowder_ml.errors import InvalidJobTransition as InvalidTransition


class JobState(enum.StrEnum):
    PENDING = "pending"
    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def is_terminal(self) -> bool:
        return self in _TERMINAL


__all__ = ["ALLOWED", "InvalidTransition", "JobState", "can_transition", "check_transition"]

_TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.SUBMITTED, JobState.FAILED, JobState.CANCELLED}),
    # SUBMITTED -> PENDING: the cluster was lost before the job started and it is retried.
    JobState.SUBMITTED: frozenset({JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED,
                                   JobState.CANCELLED, JobState.PENDING}),
    # RUNNING -> PENDING: a retry after a lost worker or cluster.
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED,
                                 JobState.PENDING}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def can_transition(current: JobState, new: JobState) -> bool:
    """Whether ``current -> new`` is allowed (staying in the same state is not a change)."""
    return new in ALLOWED[current]


def check_transition(current: JobState, new: JobState) -> None:
    """Raise :class:`InvalidTransition` unless ``current -> new`` is allowed."""
    if not can_transition(current, new):
        if current.is_terminal():
            raise InvalidTransition(f"The job already ended ({current.value}); it cannot "
                                    f"become {new.value}.", "Submit a new job instead.")
        raise InvalidTransition(f"A {current.value} job cannot become {new.value}.")
