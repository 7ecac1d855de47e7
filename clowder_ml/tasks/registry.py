"""Which tasks exist, what params each accepts, what inputs it needs, and where its code is.

The server validates a submission against a :class:`TaskDef` (params model, input rule) without
importing the task's code; the runner imports ``TaskDef.entry`` ("module:function") only inside
the job, so heavy imports (PyTorch) never load in the API server.

More tasks can be added by modules named in ``CLOWDER_ML_EXTRA_TASKS``; each exports ``TASKS``,
a list of :class:`TaskDef`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError

from clowder_ml.errors import NotFound, ValidationFailed
from clowder_ml.tasks.params import TaskParams

if TYPE_CHECKING:
    from clowder_ml.tasks.context import TaskContext


# Base models that ship with the platform (no registry entry; resolved on the node). "auto":
# the image fine-tune picks one of its built-ins by the images' size.
BUILTIN_MODELS = frozenset({"minilm-l6", "small-cnn", "efficientnet-lite0", "auto"})


@dataclass(frozen=True)
class TaskDef:
    """A task: its name, params model, how many dataset inputs it takes, and its code.

    ``entry`` is "module:function"; the function takes a ``TaskContext`` and returns the
    task's JSON-serializable result. What the server does with the job's outputs on success
    is declared by the params (``TaskParams.publishes``), so a task holds no server code.
    """

    name: str
    summary: str
    params: type[TaskParams]
    entry: str
    min_datasets: int = 0
    max_datasets: int | None = None
    # Params whose value names a model version ("sentiment@latest"): pinned at submission as
    # model inputs mounted under the param's name (built-in base models excepted).
    model_params: tuple[str, ...] = ()

    def load(self) -> Callable[[TaskContext], dict[str, Any]]:
        fn: Callable[[TaskContext], dict[str, Any]] = _import(self.entry)
        return fn

    def parse_params(self, params: dict[str, Any]) -> TaskParams:
        """Validated params; ``ValidationFailed`` naming every bad field otherwise."""
        try:
            return self.params.model_validate(params)
        except ValidationError as exc:
            bad = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'params'}: {e['msg']}"
                            for e in exc.errors()[:5])
            raise ValidationFailed(f"Invalid params for task {self.name!r}: {bad}.",
                                   f"Accepted params: {', '.join(self.params.model_fields)}"
                                   if self.params.model_fields else "This task takes no params."
                                   ) from None


def _import(entry: str) -> Any:
    module, _, name = entry.partition(":")
    return getattr(importlib.import_module(module), name)


class DatasetProfileParams(TaskParams):
    label: str | None = Field(default=None, max_length=256,
                              description="Label column; auto-detected when unset")
    max_rows: int | None = Field(default=None, ge=1, description="Stop each table after this")


BUILTIN: tuple[TaskDef, ...] = (
    TaskDef(
        name="dataset-profile",
        summary="Row counts, column types, missing values, label distribution, duplicate rows "
                "of tabular files; counts and sizes of images",
        params=DatasetProfileParams,
        entry="clowder_ml.tasks.profile_task:run",
        min_datasets=1,
        max_datasets=1,
    ),
)


# Modules of built-in tasks that declare themselves (each exports TASKS).
BUILTIN_MODULES = ("clowder_ml.tasks.text_classification", "clowder_ml.tasks.custom_script",
                   "clowder_ml.tasks.image_classification")


class TaskRegistry:
    """The tasks a server (or runner) knows: the built-ins plus extra modules."""

    def __init__(self, extra_modules: Iterable[str] = ()) -> None:
        self._tasks: dict[str, TaskDef] = {t.name: t for t in BUILTIN}
        for name in (*BUILTIN_MODULES, *extra_modules):
            try:
                module = importlib.import_module(name)
            except ImportError as exc:
                raise ValidationFailed(f"Cannot import task module {name!r}: {exc}",
                                       "Check CLOWDER_ML_EXTRA_TASKS and PYTHONPATH.") from exc
            for task in getattr(module, "TASKS", ()):
                self._tasks[task.name] = task

    def get(self, name: str) -> TaskDef:
        """The task called ``name``; ``NotFound`` (the API's 404, like any other name that
        names nothing) when there is none."""
        task = self._tasks.get(name)
        if task is None:
            raise NotFound(f"Unknown task {name!r}.",
                           f"Known tasks: {', '.join(sorted(self._tasks))}.")
        return task

    def names(self) -> list[str]:
        return sorted(self._tasks)
