"""``image-classification-predict`` on the Ray node: classify every image of the dataset.

Images come from ``csv_file`` (its path column, with true labels from ``label_column`` when
given) or from the folders (every image outside ``predictions/``; labels are the class
folders' names when every image is in one). They are decoded a batch at a time (never all in
memory), preprocessed as the model was trained (``clowder_ml.json`` / its
preprocessor_config.json), run under ``torch.inference_mode``, and written to
``predictions.csv`` as they come. Columns: ``id`` (the image path), ``input`` (the image
path, or "file:row" for a CSV), ``predicted``, ``score``, then one ``score_<label>`` per
class. With true labels the result has accuracy and a confusion matrix. Published like text
predictions (a new version of the dataset with the file, summary metadata on it).
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

from clowder_ml.errors import ValidationFailed
from clowder_ml.ml import image_models, imagedata
from clowder_ml.ml.metrics import confusion_matrix
from clowder_ml.tasks.context import TaskContext
from clowder_ml.tasks.image_classification import ImagePredictParams
from clowder_ml.tasks.text_classification import PREDICTIONS_OUTPUT

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
    import torch

    p = ctx.params
    assert isinstance(p, ImagePredictParams)
    model_dir, model_ref = _model_dir(ctx)
    model, id2label = image_models.load_classifier(model_dir)
    prep = _preprocessing(model_dir)
    labels = [id2label[i] for i in range(len(id2label))]
    data = ctx.dataset()
    ex, shown = _inputs(data.path, p)
    ctx.report.event(f"predicting with {model_ref} on {len(ex)} image(s) of {data.name}")
    out = ctx.outputs_dir / PREDICTIONS_OUTPUT
    counts = dict.fromkeys(labels, 0)
    y_true: list[int] = []
    y_pred: list[int] = []
    unknown_true = 0
    started = time.monotonic()
    device = torch.device("cpu")
    fields = ["id", "input", "predicted", "score", *[f"score_{name}" for name in labels]]
    with open(out, "w", newline="", encoding="utf-8") as fh, torch.inference_mode():
        writer = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for start, pixels in imagedata.iter_decoded(data.path, ex, prep.size, batch=CHUNK):
            for b in range(0, len(pixels), p.batch_size):
                x = imagedata.to_tensor(list(pixels[b:b + p.batch_size]), prep.mean, prep.std,
                                        device)
                probs = torch.softmax(model(pixel_values=x).logits.float(), dim=-1).tolist()
                for k, row_probs in enumerate(probs):
                    i = start + b + k
                    best = max(range(len(labels)), key=row_probs.__getitem__)
                    counts[labels[best]] += 1
                    writer.writerow({
                        "id": ex.paths[i], "input": shown[i], "predicted": labels[best],
                        "score": f"{row_probs[best]:.6f}",
                        **{f"score_{name}": f"{row_probs[j]:.6f}"
                           for j, name in enumerate(labels)}})
                    if ex.labels is not None:
                        truth = ex.labels[i]
                        if truth in labels:
                            y_true.append(labels.index(truth))
                            y_pred.append(best)
                        else:
                            unknown_true += 1
            done = start + len(pixels)
            ctx.report.progress(done, len(ex), f"{done} images")
    seconds = time.monotonic() - started
    rows = len(ex)
    result: dict[str, Any] = {
        "model": model_ref, "rows": rows, "labels": labels, "label_counts": counts,
        "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1) if seconds else None,
    }
    if ex.labels is not None:
        scored = len(y_true) + unknown_true
        correct = sum(t == q for t, q in zip(y_true, y_pred, strict=True))
        result["accuracy"] = correct / scored if scored else None
        result["confusion_matrix"] = confusion_matrix(y_true, y_pred, len(labels))
        result["unknown_true_labels"] = unknown_true
    return result
