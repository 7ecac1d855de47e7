"""``text-classification-finetune`` and ``text-classification-predict``: what they accept and
what their outputs become (a model version; predictions added to the dataset).

The params models are the single declaration of each task's parameters: they give the JSON
schema (``GET /api/v1/tasks``), the validation at submission, and the CLI's ``--param`` keys.
The code that trains and predicts runs on the Ray node (``text_finetune``, ``text_predict``)
and is imported only there.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from clowder_ml.ml import textdata
from clowder_ml.tasks.outputs import PREDICTIONS_DIR, Publish
from clowder_ml.tasks.params import TaskParams
from clowder_ml.tasks.registry import TaskDef
from clowder_ml.tasks.training_params import (
    CHECKPOINT_MINUTES_HELP,
    CHECKPOINT_STEPS_HELP,
    DEFAULT_CHECKPOINT_MINUTES,
    EPOCHS_HELP,
    NEEDS_HELD_OUT,
    PATIENCE_HELP,
    TextEpochs,
)

DEFAULT_ID_COLUMN = "id"  # keys predictions when a table has it and id_column is unset


class FinetuneParams(TaskParams):
    # The param that mirrors the job's ``resources.workers`` (services.jobs.submit makes
    # them equal): the task trains on that many Ray Train workers.
    JOB_WORKERS_PARAM: ClassVar[str] = "workers"

    model_name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                            description="Registry name the new version is registered under")
    base_model: str = Field(default="minilm-l6", max_length=300,
                            description="minilm-l6 (built in) or a model version, NAME@latest")
    text_column: str = Field(default="text", min_length=1, max_length=256)
    label_column: str = Field(default="label", min_length=1, max_length=256)
    id_column: str | None = Field(default=None, max_length=256)
    files: list[str] | None = Field(default=None, description="Training files; all tables "
                                                              "except validation_file if unset")
    validation_file: str | None = Field(default=None, max_length=1024)
    validation_split: float = Field(default=0.1, ge=0.0, le=0.9,
                                    description="Held-out fraction when no validation_file")
    max_length: int = Field(default=128, ge=8, le=512)
    padding: Literal["longest", "max_length"] = "longest"
    truncation: bool = True
    epochs: TextEpochs = Field(default="auto", description=EPOCHS_HELP)
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many steps")
    learning_rate: float = Field(default=5e-5, gt=0, le=1.0)
    batch_size: int = Field(default=16, ge=1, le=4096)
    gradient_accumulation: int = Field(default=1, ge=1, le=1024)
    warmup_ratio: float = Field(default=0.0, ge=0.0, le=0.5)
    weight_decay: float = Field(default=0.01, ge=0.0, le=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    metric: Literal["accuracy", "macro_f1"] = "accuracy"
    early_stopping_patience: int | None = Field(default=None, ge=1, le=100,
                                                description=PATIENCE_HELP)
    checkpoint_every_minutes: float | None = Field(
        default=DEFAULT_CHECKPOINT_MINUTES, gt=0, le=1440, description=CHECKPOINT_MINUTES_HELP)
    checkpoint_every_steps: int | None = Field(default=None, ge=1,
                                               description=CHECKPOINT_STEPS_HELP)
    workers: int = Field(default=1, ge=1, le=64, description="Training workers (data "
                         "parallel, ray-train launcher): the same as the job's "
                         "resources.workers, which it is set to at submission")
    launcher: Literal["auto", "local", "ray-train"] = Field(
        default="auto", description="local: a worker process next to the runner (restarted "
        "from its checkpoint if it dies); ray-train: Ray Train TorchTrainer; auto: local for "
        "one CPU worker")
    use_gpu: bool = False
    bf16: bool = Field(default=False, description="bfloat16 autocast (GPUs that support it)")
    max_failures: int = Field(default=2, ge=0, le=10,
                              description="Worker losses survived by resuming from a checkpoint")
    params_file: str | None = Field(
        default=None, max_length=1024, description="A .json, .yaml or config.py (evaluated in "
        "the sandbox) in the dataset whose values override these params")
    preprocess_file: str | None = Field(
        default=None, max_length=1024, description="A .py in the dataset defining "
        "preprocess(example) -> example or None, run in the sandbox before tokenization")

    @model_validator(mode="after")
    def _check(self) -> FinetuneParams:
        if self.validation_file and self.files and self.validation_file in self.files:
            raise ValueError("validation_file must not be one of the training files")
        if self.epochs == "auto" and not self.validation_file and self.validation_split == 0:
            raise ValueError(NEEDS_HELD_OUT)
        if self.bf16 and not self.use_gpu:
            raise ValueError("bf16 needs use_gpu (CPU training runs in float32)")
        if self.workers > 1 and self.launcher == "local":  # refused before queueing
            raise ValueError("the local launcher trains in one process; more workers need "
                             "launcher=ray-train (or auto)")
        if self.workers == 1 and self.launcher == "ray-train" and self.use_gpu:
            raise ValueError("one GPU worker trains with launcher=auto (local): the job's "
                             "runner holds its GPU")
        return self

    def publishes(self) -> Publish:
        return Publish.MODEL


class PredictParams(TaskParams):
    # Mirrors the job's ``resources.workers`` (services.jobs.submit makes them equal): with
    # more than one, each model actor reserves ``cpus`` and the runner none.
    JOB_WORKERS_PARAM: ClassVar[str] = "workers"

    model: str = Field(min_length=1, max_length=300, description="NAME@latest, NAME/3 ...")
    text_column: str | None = Field(default=None, max_length=256,
                                    description="The model's training text column if unset")
    label_column: str | None = Field(default=None, max_length=256,
                                     description="True labels, for accuracy (optional)")
    id_column: str | None = Field(
        default=None, max_length=256,
        description="Column whose values key the predictions. Unset: a column named `id` "
        "when the file has one, else FILE:ROW; empty (\"\"): always FILE:ROW")
    files: list[str] | None = None
    batch_size: int = Field(default=64, ge=1, le=4096)
    max_length: int | None = Field(default=None, ge=8, le=512)
    output_path: str | None = Field(default=None, max_length=1024,
                                    description="Where in the dataset the predictions go")
    workers: int = Field(
        default=1, ge=1, le=64, description="Model workers (the job's resources.workers). "
        "1: streamed in the job's own process (fastest on one machine); more: Ray Data "
        "map_batches over that many model actors, each reserving the job's cpus "
        "(see docs/jobs.md)")

    def publishes(self) -> Publish:
        return Publish.PREDICTIONS


def id_column_for(table: Path, id_column: str | None) -> str | None:
    """The column that keys ``table``'s predictions: ``id_column`` as given, ``None``
    (FILE:ROW) for ``""``, and when unset a column named ``id`` if the table has one."""
    if id_column is None:
        return DEFAULT_ID_COLUMN if DEFAULT_ID_COLUMN in textdata.table_columns(table) else None
    return id_column or None


def data_tables(root: Path, files: list[str] | None, exclude: tuple[str, ...] = ()
                ) -> list[Path]:
    """The tables a task reads: ``files`` if given, else every table except earlier
    predictions (which predict adds to the same dataset) and ``exclude``."""
    tables = textdata.find_tables(root, files, exclude=exclude)
    if files is None:
        tables = [t for t in tables
                  if not t.relative_to(root).as_posix().startswith(PREDICTIONS_DIR)]
    if not tables:
        raise textdata.no_tables(root, files)
    return tables


TASKS = (
    TaskDef(name="text-classification-finetune",
            summary="Fine-tune a text classifier (built-in minilm-l6 or a registered model) "
                    "on a table of text and label columns; registers a model version",
            params=FinetuneParams, entry="clowder_ml.tasks.text_finetune:run",
            min_datasets=1, max_datasets=1, model_params=("base_model",)),
    TaskDef(name="text-classification-predict",
            summary="Predict labels for a table's text column with a registered model; adds "
                    "the predictions to the dataset as a new version",
            params=PredictParams, entry="clowder_ml.tasks.text_predict:run",
            min_datasets=1, max_datasets=1, model_params=("model",)),
)
