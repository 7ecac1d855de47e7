"""``image-classification-predict`` on the Ray node: classify every image of the dataset.

Images come from ``csv_file`` (its path column, with true labels from ``label_column`` when
given) or from the folders (every image outside ``predictions/``; labels are the class
folders' names when every image is in one). They are decoded a batch at a time (never all in
memory), preprocessed as the model was trained (``clowder_ml.json`` / its
preprocessor_config.json), run under ``torch.inference_mode``, and written to
``predictions.csv`` as they come. Columns: ``id`` (the image path), ``input`` (the image
path, or "file:row" for a CSV), ``predicted``, ``score``, then one ``score_<label>`` per
class (written by :mod:`clowder_ml.ml.predict_output`). With true labels the result has
accuracy and a confusion matrix. Published like text predictions (a new version of the
dataset with the file, summary metadata on it).

``workers`` > 1: the images go through Ray Data ``map_batches`` over that many model actors
(:mod:`clowder_ml.ml.predict_ray`, which also states how CPUs are booked); the actors decode
them the same way, and the rows are written back in the input's order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clowder_ml.errors import ValidationFailed
from clowder_ml.ml import image_models, imagedata, predict_ray
from clowder_ml.ml.predict_output import PredictionWriter
from clowder_ml.tasks.context import TaskContext
from clowder_ml.tasks.image_classification import ImagePredictParams
from clowder_ml.tasks.outputs import PREDICTIONS_FILE

CHUNK = 256  # images decoded at a time


def _model_dir(ctx: TaskContext) -> tuple[Path, str]:
    model = next((i for i in ctx.inputs if i.kind == "model"), None)
    if model is None:
        raise ValidationFailed("The predict job has no model input.")
    return model.path, model.name


def _inputs(root: Path, p: ImagePredictParams) -> tuple[imagedata.ImageExamples, list[str]]:
    """The images to classify and the "input" column of each."""
    if p.csv_file is not None:
        ex = imagedata.csv_examples(root, p.csv_file, p.path_column, p.label_column)
        shown = [f"{p.csv_file}:{i + 1}" for i in range(len(ex))]
    else:
        train, val = imagedata.folder_examples(root, labelled=False)
        ex = train
        if val is not None:
            ex = imagedata.ImageExamples(
                paths=train.paths + val.paths, where=train.where + val.where,
                labels=(train.labels + val.labels
                        if train.labels is not None and val.labels is not None else None))
        shown = list(ex.paths)
    imagedata.check_not_empty(ex)
    return ex, shown


def _preprocessing(model_dir: Path) -> image_models.Preprocessing:
    try:
        info: dict[str, Any] = json.loads((model_dir / "clowder_ml.json").read_text())
        return image_models.Preprocessing(size=int(info["image_size"]),
                                          mean=tuple(info["image_mean"]),
                                          std=tuple(info["image_std"]))
    except (OSError, ValueError, KeyError, TypeError):
        return image_models.read_preprocessing(model_dir, None, "model")


def run(ctx: TaskContext) -> dict[str, Any]:
    p = ctx.params
    assert isinstance(p, ImagePredictParams)
    model_dir, model_ref = _model_dir(ctx)
    prep = _preprocessing(model_dir)
    data = ctx.dataset()
    ex, shown = _inputs(data.path, p)
    ctx.report.event(f"predicting with {model_ref} on {len(ex)} image(s) of {data.name}")
    out_path = ctx.outputs_dir / PREDICTIONS_FILE
    started = time.monotonic()
    if p.workers > 1:
        image_models.check_image_model(model_dir, "model")
        labels = _labels_of(model_dir)
        with PredictionWriter(out_path, labels, scored=ex.labels is not None) as out:
            _predict_across_workers(ctx, p, data.path, ex, shown, prep, model_dir, out)
    else:
        import torch

        model, id2label = image_models.load_classifier(model_dir)
        labels = [id2label[i] for i in range(len(id2label))]
        with PredictionWriter(out_path, labels, scored=ex.labels is not None) as out, \
                torch.inference_mode():
            for start, pixels in imagedata.iter_decoded(data.path, ex, prep.size, batch=CHUNK):
                probs = predict_ray.image_probs(model, list(pixels), prep.mean, prep.std,
                                                p.batch_size, torch)
                for k, row_probs in enumerate(probs):
                    i = start + k
                    out.add(ex.paths[i], shown[i], row_probs,
                            ex.labels[i] if ex.labels is not None else None)
                done = start + len(pixels)
                ctx.report.progress(done, len(ex), f"{done} images")
    seconds = time.monotonic() - started
    rows = out.rows
    return {"model": model_ref, **out.summary(), "workers": p.workers,
            "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds, 1) if seconds else None}


def _labels_of(model_dir: Path) -> list[str]:
    """The model's labels in class-index order, from its config (no weights loaded)."""
    config = json.loads((model_dir / "config.json").read_text())
    id2label = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    return [id2label[i] for i in range(len(id2label))]


def _blocks(root: Path, ex: imagedata.ImageExamples, shown: list[str], rows: int
            ) -> Iterator[dict[str, list[Any]]]:
    """The images as Ray Data blocks: ``index``, ``data`` (the file's bytes: actors may run
    on nodes without this dataset), ``id``, ``input`` and, with true labels, ``label``."""
    for start in range(0, len(ex), rows):
        end = min(len(ex), start + rows)
        block: dict[str, list[Any]] = {
            predict_ray.INDEX: list(range(start, end)),
            "data": [(root / ex.paths[i]).read_bytes() for i in range(start, end)],
            "id": ex.paths[start:end], "input": shown[start:end]}
        if ex.labels is not None:
            block["label"] = ex.labels[start:end]
        yield block


def _predict_across_workers(ctx: TaskContext, p: ImagePredictParams, root: Path,
                            ex: imagedata.ImageExamples, shown: list[str],
                            prep: image_models.Preprocessing, model_dir: Path,
                            out: PredictionWriter) -> None:
    def started(cpus: float, threads: int) -> None:
        ctx.report.event(f"predicting with Ray Data map_batches on {p.workers} workers "
                         f"({cpus:g} CPU booked, {threads} thread(s) each)")

    rows = predict_ray.block_rows(p.batch_size, CHUNK)
    for row in predict_ray.predict_across_workers(
            _blocks(root, ex, shown, rows), predict_ray.ImagePredictor,
            {"size": prep.size, "mean": list(prep.mean), "std": list(prep.std),
             "batch_size": p.batch_size}, model_dir,
            workers=p.workers, cpus=ctx.cpus,
            runner_holds=ctx.workers == 1, batch_rows=rows, on_start=started):
        if row["error"]:  # the first image that does not decode, as one worker reports it
            raise ValidationFailed(row["error"], row["hint"] or None)
        out.add(row["id"], row["input"], row[predict_ray.PROBS], row.get("label"))
        if out.rows % CHUNK == 0:
            ctx.report.progress(out.rows, len(ex), f"{out.rows} images")
    ctx.report.progress(out.rows, len(ex), f"{out.rows} images")
