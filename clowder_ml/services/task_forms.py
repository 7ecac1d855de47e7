"""Checking a task's params field by field, for forms that show each message by its field.

Submission (``services.jobs.submit``) validates the same way and refuses the whole job with
one message; this answers every problem separately, keyed by the field's path, so nothing
is submitted and no input is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from clowder_ml.tasks.registry import TaskRegistry

MAX_FIELD_ERRORS = 50


@dataclass(frozen=True)
class FieldError:
    """``field``: the path to the bad value ("epochs", "files.2"; "" for the params as a
    whole, e.g. a rule across fields); ``message``: pydantic's message for it."""

    field: str
    message: str


def validate_params(registry: TaskRegistry, task: str, params: dict[str, Any],
                    ) -> list[FieldError]:
    """Every problem with ``params`` for ``task`` (empty: valid); an unknown task
    raises ``ValidationFailed``, as submission does."""
    model = registry.get(task).params
    try:
        model.model_validate(params)
    except ValidationError as exc:
        return [FieldError(".".join(str(x) for x in e["loc"]), _message(e))
                for e in exc.errors()[:MAX_FIELD_ERRORS]]
    return []


def _message(error: Any) -> str:
    msg = str(error.get("msg", "invalid"))
    # Rules checked by model validators read "Value error, <text>": the prefix says nothing.
    return msg.removeprefix("Value error, ")
