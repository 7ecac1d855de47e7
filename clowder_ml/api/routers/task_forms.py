"""Field-by-field checks of a task's params, for the web form (before anything is submitted)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from clowder_ml.api.bounded import bounded_route
from clowder_ml.api.deps import PlatformDep, UserDep
from clowder_ml.api.fields import TaskPath
from clowder_ml.api.responses import NAMES_RESOURCE, errors
from clowder_ml.api.schemas import Strict
from clowder_ml.errors import PayloadTooLarge
from clowder_ml.services.task_forms import validate_params

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"], route_class=bounded_route(1 << 20),
                   responses=errors(PayloadTooLarge))


class ParamsCheck(Strict):
    params: dict[str, Any] = Field(default_factory=dict)


class FieldErrorOut(BaseModel):
    field: str = Field(description="Path of the bad value, e.g. 'epochs'; '' for the whole")
    message: str


class ParamsCheckOut(BaseModel):
    valid: bool
    errors: list[FieldErrorOut]


@router.post("/{task}/validate", response_model=ParamsCheckOut,
             responses=errors(*NAMES_RESOURCE))
def validate(task: TaskPath, body: ParamsCheck, user: UserDep, platform: PlatformDep,
             ) -> ParamsCheckOut:
    """Check ``params`` as submission would; each problem names its field."""
    errors = validate_params(platform.tasks, task, body.params)
    return ParamsCheckOut(valid=not errors,
                          errors=[FieldErrorOut(field=e.field, message=e.message)
                                  for e in errors])
