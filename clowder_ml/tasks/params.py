"""The base of every task's params model (the one declaration of a task's parameters)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from clowder_ml.tasks.outputs import Publish


class TaskParams(BaseModel):
    """Base of every task's params: unknown params are refused, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    def publishes(self) -> Publish | None:
        """What the server makes of the job's outputs on success (see
        :mod:`clowder_ml.tasks.outputs`); None: the job's result is all there is."""
        return None
