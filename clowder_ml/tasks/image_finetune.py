"""``image-classification-finetune`` on the Ray node.

1. Check the data (layout, CSV rows, labels, that every image decodes) and the base model
   (built-in ``efficientnet-lite0`` or ``small-cnn``, or a registered image model) before any
   training, with messages naming the file, and for a CSV the row and column. The input size,
   unless given, follows the images' own size (see ``ImageFinetuneParams.image_size``).
2. Decode the images once into memory-mapped uint8 arrays, cached on the node under a key of
   everything that determines them (a re-run decodes nothing).
3. Train in a worker process that checkpoints to shared storage and is restarted from its
   last checkpoint if it dies (``clowder_ml.ml.image_worker``), seeded, with deterministic
   algorithms and a fixed thread count: the same inputs give bit-identical weights.
4. Write the Hugging Face folder to ``outputs/model/`` (model.safetensors, config.json with
   the label mapping, preprocessor_config.json) with metrics.json, manifest.json,
   clowder_ml.json and a model card; the server registers it as a model version.

Result: ``metrics``, ``digest`` (sha256 of model.safetensors), ``labels``,
``train_examples``, ``eval_examples``, ``base_model``, ``image_size``, ``learning_rate``,
``training`` (why training stopped: ``training_length.describe``), ``launcher``, ``seconds``,
``resumed_from_step``, ``checkpoints`` (how many were written and what they cost:
``TrainResult.checkpoints``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from clowder_ml.errors import ValidationFailed
from clowder_ml.ml import (
    builtin_images,
    efficientnet_lite,
    image_models,
    imagedata,
    launch,
    manifest,
    textdata,
    training_length,
)
from clowder_ml.runner.inputs import default_cache_dir
from clowder_ml.runner.threads import reserved_threads
from clowder_ml.tasks.context import TaskContext
from clowder_ml.tasks.image_classification import (
    AUTO_BASE,
    EFFICIENTNET_LITE0,
    SMALL_CNN,
    ImageFinetuneParams,
)
from clowder_ml.tasks.outputs import MODEL_DIR
from clowder_ml.tasks.training_params import NEEDS_HELD_OUT, card_lines, report_stop

TASK = "image-classification-finetune"
# epochs=auto: an epoch ceiling of about 3000 optimizer steps, 3 to 60 epochs (measured by
# bench/quality.py: a 1,000-image set of 32-image batches needs 20-40 epochs from scratch),
# and 10 epochs of learning-rate decay once the patience has run out (on bench/quality.py's
# shapes an early stop at a high learning rate left 0.85 held-out accuracy where 40 epochs
# decaying to 0 reached 0.97).
AUTO_BUDGET = training_length.AutoBudget(step_budget=3000, min_epochs=3, max_epochs=60,
                                         cooldown=10)
# The input size when none is given: the images' own, within these bounds (small-cnn) or
# within [PRETRAINED_MIN_SIZE, the base model's own size] (pretrained bases).
SMALL_CNN_SIZES = (16, 128)
# Tiny images are enlarged for a pretrained base: efficientnet-lite0 reduces its input 32
# times, so 64 px leave it a 2x2 map (bench/quality.py: shapes 1.0 at 64 px).
PRETRAINED_MIN_SIZE = 64


def examples(root: Path, p: ImageFinetuneParams
             ) -> tuple[imagedata.ImageExamples, imagedata.ImageExamples | None]:
    """(training, validation or None) images with labels, checked (not yet decoded)."""
    val: imagedata.ImageExamples | None
    if p.csv_file is not None:
        train = imagedata.csv_examples(root, p.csv_file, p.path_column, p.label_column)
        val = None
    else:
        train, val = imagedata.folder_examples(root, labelled=True)
    imagedata.check_not_empty(train, "the training data" if val is not None else "the dataset")
    if val is None and p.validation_split > 0:
        train, val = imagedata.split_examples(train, p.validation_split, p.seed)
    return train, val


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def choose_base(requested: str, own_size: int | None) -> str:
    """The base to train: ``auto`` is the pretrained efficientnet-lite0 whatever the images'
    size (``own_size``, kept for the rule's signature): on bench/quality.py's 32-px sets it
    beat small-cnn on shapes (1.0 vs 0.97) and came within 0.005 of it on digits."""
    del own_size
    if requested != AUTO_BASE:
        return requested
    return EFFICIENTNET_LITE0


def base_model(ctx: TaskContext, p: ImageFinetuneParams, own_size: int | None
               ) -> tuple[Path | None, str, image_models.Preprocessing]:
    """(folder of the base or None for small-cnn, its name, preprocessing). ``own_size`` is
    the images' typical size, which picks the ``auto`` base and sets the input size when
    ``image_size`` is unset."""
    chosen = choose_base(p.base_model, own_size)
    if chosen == SMALL_CNN:
        size = p.image_size or _clamp(own_size or image_models.DEFAULT_SMALL_CNN_SIZE,
                                      *SMALL_CNN_SIZES)
        return None, SMALL_CNN, image_models.Preprocessing(size=size)
    if chosen == EFFICIENTNET_LITE0:
        folder = builtin_images.ensure_efficientnet_lite0(
            default_cache_dir().parent / "builtin-models")
        name = EFFICIENTNET_LITE0
        what = f"built-in {EFFICIENTNET_LITE0}"
    else:
        base = next((i for i in ctx.inputs if i.kind == "model"
                     and i.path.name == "base_model"), None)
        if base is None:
            raise ValidationFailed(f"Base model {p.base_model!r} was not provided to the job.")
        folder, name = base.path, base.name or p.base_model
        what = f"base model {name!r}"
        image_models.check_image_model(folder, what)
    native = image_models.read_preprocessing(folder, None, what)
    size = p.image_size or _clamp(own_size or native.size, min(PRETRAINED_MIN_SIZE, native.size),
                                  native.size)
    return folder, name, image_models.read_preprocessing(folder, size, what)


def prepare(ctx: TaskContext, p: ImageFinetuneParams, cache: Path
            ) -> tuple[Path, Path | None, list[str], int, int, Path | None, str,
                       image_models.Preprocessing]:
    """Every check, then the decoded caches: (train data, eval data or None, labels,
    n train, n eval, base folder or None, base name, preprocessing)."""
    data = ctx.dataset()
    train_ex, val_ex = examples(data.path, p)
    label_map = textdata.label_mapping(train_ex.labels or [])
    if val_ex is not None:
        imagedata.check_validation_labels(label_map, val_ex)
    base_dir, base_ref, prep = base_model(ctx, p, imagedata.typical_size(data.path, train_ex))
    labels = sorted(label_map, key=label_map.__getitem__)
    ctx.report.event(f"data: {len(train_ex)} training and "
                     f"{len(val_ex) if val_ex else 0} validation images, {len(labels)} labels")
    key = textdata.cache_key(imagedata.DECODE_VERSION,
                             json.dumps(sorted(data.digests.items())), str(p.csv_file),
                             p.path_column, p.label_column, str(prep.size),
                             str(p.validation_split), str(p.seed))
    train_data = imagedata.decode_to_cache(data.path, train_ex, label_map, prep.size, cache,
                                           key + "-train")
    eval_data = (imagedata.decode_to_cache(data.path, val_ex, label_map, prep.size, cache,
                                           key + "-eval")
                 if val_ex is not None and len(val_ex) else None)
    return (train_data, eval_data, labels, len(train_ex), len(val_ex) if val_ex else 0,
            base_dir, base_ref, prep)


def _model_card(name: str, base: str, labels: list[str], metrics: dict[str, Any],
                p: ImageFinetuneParams, size: int, data: str, stopped: str) -> str:
    shown = "\n".join(f"| {k} | {v} |" for k, v in metrics.items()
                      if isinstance(v, int | float))
    how = "trained from scratch" if base == SMALL_CNN else f"fine-tuned from `{base}`"
    return (f"# {name}\n\nAn image classifier {how} by clowder-ml on `{data}`.\n\n"
            f"Labels: {', '.join(labels)}\n\n| metric | value |\n|---|---|\n{shown}\n\n"
            f"{stopped}\n\nTraining: learning rate {p.learning_rate_for(base)}, batch "
            f"{p.batch_size}, images {size}x{size} RGB, flips {p.augment}, random shifts up "
            f"to {p.random_shift:g} of the size, seed {p.seed}. "
            "Inputs, parameters and environment are in manifest.json; the weights are "
            "model.safetensors (no pickle).\n")


def _builtin_inputs(base: str) -> list[dict[str, Any]]:
    """The manifest's record of a built-in base (the pretrained one by its source digest)."""
    if base == SMALL_CNN:
        return [{"kind": "builtin", "ref": base}]
    if base == EFFICIENTNET_LITE0:
        return [{"kind": "builtin", "ref": base, "source": efficientnet_lite.SOURCE_PACKAGE,
                 "sha256": efficientnet_lite.SOURCE_SHA256}]
    return []


def run(ctx: TaskContext) -> dict[str, Any]:
    p = ctx.params
    assert isinstance(p, ImageFinetuneParams)
    cache = default_cache_dir().parent / "decoded-images"
    shared = Path(os.environ.get("CLOWDER_ML_SHARED_DIR") or ctx.work_dir) / "jobs" / ctx.job_id
    out_dir = shared / "model-out"
    shutil.rmtree(out_dir, ignore_errors=True)
    threads = reserved_threads(ctx.cpus)
    # The worker imports PyTorch while the images are checked and decoded.
    with launch.LocalWorker(shared / "worker.json", "clowder_ml.ml.image_worker") as worker:
        (train_data, eval_data, labels, n_train, n_eval, base_dir, base_ref,
         prep) = prepare(ctx, p, cache)
        if p.epochs == training_length.AUTO and eval_data is None:
            raise ValidationFailed(f"There is no validation data: {NEEDS_HELD_OUT}.",
                                   "Add a val/ folder, or set validation_split (0.1) or "
                                   "epochs.")
        length = training_length.plan(p.epochs, p.early_stopping_patience, n_train,
                                      p.batch_size, p.gradient_accumulation, AUTO_BUDGET)
        total = launch.total_steps(p, n_train, length)
        config = {
            "base_dir": str(base_dir) if base_dir else None, "labels": labels, "seed": p.seed,
            "threads": threads, "use_gpu": p.use_gpu, "augment": p.augment,
            "random_shift": p.random_shift,
            "image_size": prep.size, "image_mean": list(prep.mean),
            "image_std": list(prep.std), "train_data": str(train_data),
            "eval_data": str(eval_data) if eval_data else None,
            "checkpoint_dir": str(shared / "checkpoints"), "output_dir": str(out_dir),
            "total_steps": total,
            "train_params": {**launch.loop_params(p, total, length),
                             "learning_rate": p.learning_rate_for(base_ref)},
        }
        ctx.report.event(f"training {base_ref} at {prep.size}x{prep.size} for "
                         + (f"{length.ceiling}, stopping when {p.metric} has not improved "
                            f"for {length.patience}, after {length.cooldown} epochs of "
                            "learning-rate decay" if length.auto else f"{total} steps")
                         + f" (local worker, {threads} thread(s))")
        trained = worker.run(config, p.max_failures, ctx.report.event)

    model_out = ctx.outputs_dir / MODEL_DIR
    launch.collect_model(out_dir, model_out)
    ev = trained.get("eval") or {}
    metrics = {f"eval_{k}": v for k, v in ev.items() if k != "confusion_matrix"}
    metrics.update(train_samples_per_s=trained.get("train_samples_per_s"),
                   global_step=trained.get("global_step"),
                   epochs_completed=trained.get("epochs_completed"))
    stopped = report_stop(ctx.report, trained, p.metric, length, p.max_steps)
    digest = manifest.sha256_file(model_out / "model.safetensors")
    data = ctx.dataset()
    man = manifest.build(
        task=TASK, job_id=ctx.job_id,
        inputs=[{"kind": i.kind, "ref": i.name, "version": i.version, "files": i.digests}
                for i in ctx.inputs] + _builtin_inputs(base_ref),
        params=p.model_dump(mode="json"), determinism=trained.get("determinism", {}),
        code={}, extra={"weights_sha256": digest, "metrics": metrics,
                        "preprocessing": prep.as_dict(),
                        "learning_rate": p.learning_rate_for(base_ref), "training": stopped})
    (model_out / "manifest.json").write_text(json.dumps(man, indent=2, default=str))
    (model_out / "metrics.json").write_text(json.dumps(
        {**metrics, "confusion_matrix": ev.get("confusion_matrix"), "labels": labels,
         "training": stopped, "history": trained.get("history")}, indent=2, default=str))
    (model_out / "clowder_ml.json").write_text(json.dumps(
        {"task": "image-classification", "path_column": p.path_column,
         "label_column": p.label_column, "labels": labels, "base_model": base_ref,
         **prep.as_dict()}, indent=2))
    (model_out / "README.md").write_text(_model_card(p.model_name, base_ref, labels, metrics,
                                                     p, prep.size, data.name,
                                                     card_lines(stopped, length)))
    shutil.rmtree(shared, ignore_errors=True)  # checkpoints are no longer needed
    return {"metrics": metrics, "digest": digest, "labels": labels,
            "train_examples": n_train, "eval_examples": n_eval, "base_model": base_ref,
            "image_size": prep.size, "learning_rate": p.learning_rate_for(base_ref),
            "training": stopped, "launcher": "local", "seconds": trained.get("seconds"),
            "resumed_from_step": trained.get("resumed_from_step"),
            "checkpoints": trained.get("checkpoints")}
