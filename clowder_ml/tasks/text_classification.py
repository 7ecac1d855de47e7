"""``text-classification-finetune`` and ``text-classification-predict``: what they accept and
what the server does around them (checks at submission, publishing on success).

The params models are the single declaration of each task's parameters: they give the JSON
schema (``GET /api/v1/tasks``), the validation at submission, and the CLI's ``--param`` keys.
The code that trains and predicts runs on the Ray node (``text_finetune``, ``text_predict``)
and is imported only there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator
from sqlalchemy.orm import Session

from clowder_ml.db.models import Dataset, Job, JobOutput, Permission, User
from clowder_ml.engine.spec import InputRef
from clowder_ml.errors import PermissionDenied, ValidationFailed
from clowder_ml.ml import textdata
from clowder_ml.services import datasets, model_lineage, model_reproduce, models
from clowder_ml.storage.blobstore import BlobInfo
from clowder_ml.tasks.registry import TaskDef, TaskParams

if TYPE_CHECKING:
    from clowder_ml.api.platform import Platform

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
    epochs: int = Field(default=1, ge=1, le=100)
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many steps")
    learning_rate: float = Field(default=5e-5, gt=0, le=1.0)
    batch_size: int = Field(default=16, ge=1, le=4096)
    gradient_accumulation: int = Field(default=1, ge=1, le=1024)
    warmup_ratio: float = Field(default=0.0, ge=0.0, le=0.5)
    weight_decay: float = Field(default=0.01, ge=0.0, le=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    metric: Literal["accuracy", "macro_f1"] = "accuracy"
    early_stopping_patience: int | None = Field(default=None, ge=1, le=100)
    checkpoint_every_steps: int = Field(default=50, ge=1)
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
        if self.bf16 and not self.use_gpu:
            raise ValueError("bf16 needs use_gpu (CPU training runs in float32)")
        if self.workers > 1 and self.launcher == "local":  # refused before queueing
            raise ValueError("the local launcher trains in one process; more workers need "
                             "launcher=ray-train (or auto)")
        if self.workers == 1 and self.launcher == "ray-train" and self.use_gpu:
            raise ValueError("one GPU worker trains with launcher=auto (local): the job's "
                             "runner holds its GPU")
        return self


class PredictParams(TaskParams):
    # Mirrors the job's ``resources.workers`` (services.jobs.submit makes them equal): with
    # more than one, each model actor reserves ``cpus`` and the runner none.
    JOB_WORKERS_PARAM: ClassVar[str] = "workers"

    model: str = Field(min_length=1, max_length=300, description="NAME@latest, NAME/3 ...")
    text_column: str | None = Field(default=None, max_length=256,
                                    description="The model's training text column if unset")
    label_column: str | None = Field(default=None, max_length=256,
                                     description="True labels, for accuracy (optional)")
    id_column: str | None = Field(default=None, max_length=256)
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


PREDICTIONS_OUTPUT = "predictions.csv"
PREDICTIONS_DIR = "predictions/"  # where predictions land in a dataset (not training data)


def data_tables(root: Path, files: list[str] | None, exclude: tuple[str, ...] = ()
                ) -> list[Path]:
    """The tables a task reads: ``files`` if given, else every table except earlier
    predictions (which predict adds to the same dataset) and ``exclude``."""
    tables = textdata.find_tables(root, files, exclude=exclude)
    if files is None:
        tables = [t for t in tables
                  if not t.relative_to(root).as_posix().startswith(PREDICTIONS_DIR)]
    return tables


def _dataset_input(pinned: list[InputRef]) -> InputRef:
    return next(i for i in pinned if i.kind == "dataset")


def validate_predict(s: Session, user: User, params: TaskParams, pinned: list[InputRef]
                     ) -> None:
    """Predictions are added to the dataset as a new version: the user must be able to
    write to it."""
    ds = s.get(Dataset, _dataset_input(pinned).ref)
    if ds is None or datasets.permission_of(s, user, ds) != Permission.WRITE:
        raise PermissionDenied("Predictions are added to the dataset as a new version, and "
                               "you have read-only access to it.",
                               "Copy the data to a dataset of yours, or ask for write access.")


def publish_finetune(s: Session, platform: Platform, job: Job, result: dict[str, Any]
                     ) -> dict[str, Any]:
    """Register the job's model folder as the next version of ``model_name`` — or, for a
    reproduce run, compare it with the version it reproduces instead (no new version)."""
    reproduction = model_reproduce.of_job(s, job)
    if reproduction is not None:
        return model_reproduce.conclude(s, platform, job, reproduction, result)
    name = str(job.spec["params"]["model_name"])
    resolved = platform.tasks.get(job.task).parse_params(job.spec["params"])
    version = models.register_from_job(s, job, name, result,
                                       resolved.model_dump(mode="json"))
    return {**result, "model": {"name": name, "version": version.number,
                                "ref": models.ref_of(s, version), "digest": version.digest}}


def _summary_metadata(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("model", "rows", "label_counts", "accuracy", "confusion_matrix", "labels")
    return {k: result[k] for k in keys if k in result}


def publish_predict(s: Session, platform: Platform, job: Job, result: dict[str, Any]
                    ) -> dict[str, Any]:
    """Add ``predictions.csv`` to the input dataset as a new version, with summary metadata.

    Idempotent: committing the same file again makes no new version.
    """
    out = s.get(JobOutput, (job.id, PREDICTIONS_OUTPUT))
    if out is None:
        raise ValidationFailed("The job produced no predictions file.")
    item = next(i for i in job.spec["inputs"] if i["kind"] == "dataset")
    params = job.spec["params"]
    model_ref = str(result.get("model") or params["model"])
    safe = model_ref.replace(":", "_").replace("/", "-").replace("@", "-")
    path = params.get("output_path") or f"{PREDICTIONS_DIR}{safe}/{job.id}.csv"
    version = datasets.commit_changes(platform.db, item["ref"], job.owner_id,
                                      {path: BlobInfo(out.sha256, out.size)},
                                      message=f"predictions of {model_ref} (job {job.id})")
    ds = s.get(Dataset, item["ref"])
    assert ds is not None
    datasets.set_file_metadata(s, ds, path, _summary_metadata(result))
    model_lineage.link_output_dataset(s, job, ds.id, version.number)
    return {**result, "predictions": {"dataset": item["ref"], "version": version.number,
                                      "path": path, "sha256": out.sha256}}


TASKS = (
    TaskDef(name="text-classification-finetune",
            summary="Fine-tune a text classifier (built-in minilm-l6 or a registered model) "
                    "on a table of text and label columns; registers a model version",
            params=FinetuneParams, entry="clowder_ml.tasks.text_finetune:run",
            min_datasets=1, max_datasets=1, model_params=("base_model",),
            publish="clowder_ml.tasks.text_classification:publish_finetune"),
    TaskDef(name="text-classification-predict",
            summary="Predict labels for a table's text column with a registered model; adds "
                    "the predictions to the dataset as a new version",
            params=PredictParams, entry="clowder_ml.tasks.text_predict:run",
            min_datasets=1, max_datasets=1, model_params=("model",),
            validate="clowder_ml.tasks.text_classification:validate_predict",
            publish="clowder_ml.tasks.text_classification:publish_predict"),
)
