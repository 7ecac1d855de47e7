"""The job state machine: terminal states are final; only the documented moves exist."""

from __future__ import annotations

import itertools

import pytest

from clowder_ml.engine.states import (
    ALLOWED,
    InvalidTransition,
    JobState,
    can_transition,
    check_transition,
)
from clowder_ml.errors import ERRORS_BY_CODE


def test_terminal_states() -> None:
    assert {s for s in JobState if s.is_terminal()} == {
        JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


@pytest.mark.parametrize("current,new", list(itertools.product(JobState, JobState)))
def test_terminal_jobs_never_change_and_others_follow_the_table(current: JobState,
                                                                new: JobState) -> None:
    if current.is_terminal() or new not in ALLOWED[current]:
        assert not can_transition(current, new)
        with pytest.raises(InvalidTransition) as info:
            check_transition(current, new)
        assert info.value.status == 409
    else:
        check_transition(current, new)


def test_the_happy_path_and_retry_exist() -> None:
    path = [JobState.PENDING, JobState.SUBMITTED, JobState.RUNNING, JobState.SUCCEEDED]
    for a, b in itertools.pairwise(path):
        assert can_transition(a, b)
    assert can_transition(JobState.RUNNING, JobState.PENDING)  # retry after a lost cluster
    assert not can_transition(JobState.PENDING, JobState.RUNNING)  # never skips submission
    assert not can_transition(JobState.RUNNING, JobState.RUNNING)


def test_error_code_is_registered_for_the_sdk() -> None:
    assert ERRORS_BY_CODE["invalid_job_transition"] is InvalidTransition
