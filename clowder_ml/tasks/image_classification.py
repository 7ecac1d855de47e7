"""``image-classification-finetune`` and ``image-classification-predict``: what they accept
and what their outputs become.

Mirrors text classification: the params models declare each task's parameters (JSON schema,
validation at submission, CLI ``--param`` keys) and publish like the text tasks (the
``model/`` folder becomes a model version; ``predictions.csv`` is added to the dataset as a
new version). The code that trains and predicts (``image_finetune``, ``image_predict``)
runs on the Ray node and is imported only there.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from clowder_ml.tasks.outputs import Publish
from clowder_ml.tasks.params import TaskParams
from clowder_ml.tasks.registry import TaskDef
from clowder_ml.tasks.training_params import (
    CHECKPOINT_MINUTES_HELP,
    CHECKPOINT_STEPS_HELP,
    DEFAULT_CHECKPOINT_MINUTES,
    EPOCHS_HELP,
    PATIENCE_HELP,
    ImageEpochs,
)

SMALL_CNN = "small-cnn"  # built in: a small CNN trained from scratch (no registry entry)
EFFICIENTNET_LITE0 = "efficientnet-lite0"  # built in: ImageNet-pretrained (no registry entry)
# The default (image_finetune.choose_base): the pretrained efficientnet-lite0 at any image
# size, tiny images enlarged to PRETRAINED_MIN_SIZE. bench/quality.py, 32-px images with
# epochs=auto: shapes 1.0 held-out accuracy with efficientnet-lite0 at 64 px vs 0.97 with
# small-cnn at 32 px; digits 0.9875 vs 0.9917.
AUTO_BASE = "auto"
DEFAULT_BASE_MODEL = AUTO_BASE
# Learning rates when none is given (AdamW), per base: measured by bench/quality.py.
DEFAULT_LEARNING_RATES = {SMALL_CNN: 1e-3, EFFICIENTNET_LITE0: 1e-3}
REGISTERED_LEARNING_RATE = 5e-5
# Training images move by up to 1/16 of their size (2 px at 32 px): on bench/quality.py's
# 32-px digits, small-cnn with epochs=auto reached 0.982 held-out accuracy with these shifts
# and 0.942 without (fewer mistakes than the scikit-learn baselines only with them).
DEFAULT_RANDOM_SHIFT = 0.0625


class ImageFinetuneParams(TaskParams):
    model_name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                            description="Registry name the new version is registered under")
    base_model: str = Field(default=DEFAULT_BASE_MODEL, min_length=1, max_length=300,
                            description="auto (default): efficientnet-lite0; "
                                        "efficientnet-lite0 (built in, ImageNet-pretrained: "
                                        "transfer learning), small-cnn (built in, trained "
                                        "from scratch: small and fast, for tiny images) or a "
                                        "registered image model version, NAME@latest")
    csv_file: str | None = Field(default=None, max_length=1024,
                                 description="A CSV of image paths and labels; class folders "
                                             "(root/<class>/<file>) if unset")
    path_column: str = Field(default="path", min_length=1, max_length=256)
    label_column: str = Field(default="label", min_length=1, max_length=256)
    image_size: int | None = Field(default=None, ge=8, le=1024,
                                   description="Square input size. Unset: the images' own "
                                               "size (the median longer side), within "
                                               "16-128 for small-cnn and within 64 to the "
                                               "base model's own size (224 for "
                                               "efficientnet-lite0) otherwise")
    validation_split: float = Field(default=0.1, ge=0.0, le=0.9,
                                    description="Held-out fraction when there is no val/ "
                                                "folder")
    epochs: ImageEpochs = Field(default="auto", description=EPOCHS_HELP)
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many steps")
    learning_rate: float | None = Field(
        default=None, gt=0, le=1.0,
        description="Unset: 1e-3 for the built-in bases, 5e-5 for a registered model")
    batch_size: int = Field(default=32, ge=1, le=4096)
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
    augment: bool = Field(default=False, description="Seeded random left-right flips of "
                                                     "training images")
    random_shift: float = Field(default=DEFAULT_RANDOM_SHIFT, ge=0.0, le=0.25,
                                description="Seeded random shifts of training images: each "
                                            "is moved by up to this fraction of its size in x "
                                            "and y (edges repeated); 0: none")
    use_gpu: bool = False
    max_failures: int = Field(default=2, ge=0, le=10,
                              description="Worker losses survived by resuming from a checkpoint")

    @model_validator(mode="after")
    def _check(self) -> ImageFinetuneParams:
        if self.csv_file is not None and self.path_column == self.label_column:
            raise ValueError("path_column and label_column must differ")
        return self

    def publishes(self) -> Publish:
        return Publish.MODEL

    def learning_rate_for(self, base: str) -> float:
        """The learning rate to train ``base`` (the resolved base model) with: the param, or
        that base's default."""
        if self.learning_rate is not None:
            return self.learning_rate
        return DEFAULT_LEARNING_RATES.get(base, REGISTERED_LEARNING_RATE)


class ImagePredictParams(TaskParams):
    # Mirrors the job's ``resources.workers`` (services.jobs.submit makes them equal): with
    # more than one, each model actor reserves ``cpus`` and the runner none.
    JOB_WORKERS_PARAM: ClassVar[str] = "workers"

    model: str = Field(min_length=1, max_length=300, description="NAME@latest, NAME/3 ...")
    csv_file: str | None = Field(default=None, max_length=1024,
                                 description="A CSV of image paths (and optional labels); all "
                                             "images of the dataset if unset")
    path_column: str = Field(default="path", min_length=1, max_length=256)
    label_column: str | None = Field(default=None, max_length=256,
                                     description="True labels in the CSV, for accuracy "
                                                 "(folders give them by their names)")
    batch_size: int = Field(default=64, ge=1, le=4096)
    output_path: str | None = Field(default=None, max_length=1024,
                                    description="Where in the dataset the predictions go")
    workers: int = Field(
        default=1, ge=1, le=64, description="Model workers (the job's resources.workers). "
        "1: streamed in the job's own process (fastest on one machine); more: Ray Data "
        "map_batches over that many model actors, each reserving the job's cpus "
        "(see docs/jobs.md)")

    def publishes(self) -> Publish:
        return Publish.PREDICTIONS


TASKS = (
    TaskDef(name="image-classification-finetune",
            summary="Train an image classifier (fine-tune the built-in ImageNet-pretrained "
                    "efficientnet-lite0 or a registered image model, or train the built-in "
                    "small-cnn from scratch; by default the one that suits the images' size) "
                    "on class folders or a CSV of path,label; registers a model version",
            params=ImageFinetuneParams, entry="clowder_ml.tasks.image_finetune:run",
            min_datasets=1, max_datasets=1, model_params=("base_model",)),
    TaskDef(name="image-classification-predict",
            summary="Predict the class of a dataset's images with a registered image model; "
                    "adds the predictions to the dataset as a new version",
            params=ImagePredictParams, entry="clowder_ml.tasks.image_predict:run",
            min_datasets=1, max_datasets=1, model_params=("model",)),
)
