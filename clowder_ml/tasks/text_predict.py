"""``text-classification-predict`` on the Ray node: label every row of the dataset's tables.

Streamed: rows are read a chunk at a time, sorted by length inside the chunk (so batches pad
little), run under ``torch.inference_mode``, and written to ``predictions.csv`` as they come,
in the input's order. Columns: ``id``, ``input`` (file:row), ``predicted``, ``score``, then
one ``score_<label>`` per class. With true labels present the result has accuracy and a
confusion matrix.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

from clowder_ml.errors import ValidationFailed
from clowder_ml.ml import textdata
from clowder_ml.ml.metrics import confusion_matrix
from clowder_ml.ml.models import load_classifier
from clowder_ml.tasks.context import TaskContext
from clowder_ml.tasks.text_classification import (
    PREDICTIONS_OUTPUT,
    PredictParams,
    data_tables,
)

CHUNK_ROWS = 4096


def _model_dir(ctx: TaskContext) -> tuple[Path, str]:
    model = next((i for i in ctx.inputs if i.kind == "model"), None)
    if model is None:
        raise ValidationFailed("The predict job has no model input.")
    return model.path, model.name


def run(ctx: TaskContext) -> dict[str, Any]:
    import torch

    p = ctx.params
    assert isinstance(p, PredictParams)
    model_dir, model_ref = _model_dir(ctx)
    trained = _training_info(model_dir)
    text_column = p.text_column or trained.get("text_column", "text")
    model, tokenizer, id2label = load_classifier(model_dir)
    labels = [id2label[i] for i in range(len(id2label))]
    max_length = p.max_length or int(trained.get("max_length", 128))
    data = ctx.dataset()
    tables = data_tables(data.path, p.files)
    ctx.report.event(f"predicting with {model_ref} on {len(tables)} file(s) of {data.name}")
    out = ctx.outputs_dir / PREDICTIONS_OUTPUT
    counts = dict.fromkeys(labels, 0)
    y_true: list[int] = []
    y_pred: list[int] = []
    unknown_true = 0
    rows = 0
    started = time.monotonic()
    fields = ["id", "input", "predicted", "score", *[f"score_{name}" for name in labels]]
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for table in tables:
            for batch in textdata.iter_text_rows(table, data.path, text_column, p.label_column,
                                                 p.id_column, batch_rows=CHUNK_ROWS):
                probs = _predict(model, tokenizer, batch.texts, p.batch_size, max_length, torch)
                for i, row_probs in enumerate(probs):
                    best = max(range(len(labels)), key=row_probs.__getitem__)
                    counts[labels[best]] += 1
                    writer.writerow({
                        "id": batch.ids[i], "input": f"{batch.source}:{batch.rows[i]}",
                        "predicted": labels[best], "score": f"{row_probs[best]:.6f}",
                        **{f"score_{name}": f"{row_probs[k]:.6f}"
                           for k, name in enumerate(labels)}})
                    if batch.labels is not None:
                        truth = batch.labels[i]
                        if truth in labels:
                            y_true.append(labels.index(truth))
                            y_pred.append(best)
                        else:
                            unknown_true += 1
                rows += len(batch.texts)
                ctx.report.progress(rows, None, f"{rows} rows")
    seconds = time.monotonic() - started
    result: dict[str, Any] = {
        "model": model_ref, "rows": rows, "labels": labels, "label_counts": counts,
        "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1) if seconds else None,
    }
    if p.label_column is not None:
        scored = len(y_true) + unknown_true
        correct = sum(t == q for t, q in zip(y_true, y_pred, strict=True))
        result["accuracy"] = correct / scored if scored else None
        result["confusion_matrix"] = confusion_matrix(y_true, y_pred, len(labels))
        result["unknown_true_labels"] = unknown_true
    if rows == 0:
        raise ValidationFailed(f"No rows to predict in {data.name}.",
                               "Check the files param and the dataset's contents.")
    return result


def _training_info(model_dir: Path) -> dict[str, Any]:
    """What the fine-tune recorded about its data (text column, max length), if present."""
    try:
        info: dict[str, Any] = json.loads((model_dir / "clowder_ml.json").read_text())
        return info
    except (OSError, ValueError):
        return {}


def _predict(model: Any, tokenizer: Any, texts: list[str], batch_size: int, max_length: int,
             torch: Any) -> list[list[float]]:
    """Class probabilities per text, in the given order (computed in length order)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    probs: list[list[float]] = [[] for _ in texts]
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in idx], truncation=True, max_length=max_length,
                            padding=True, return_tensors="pt")
            logits = model(**enc).logits.float()
            for i, row in zip(idx, torch.softmax(logits, dim=-1).tolist(), strict=True):
                probs[i] = row
    return probs
