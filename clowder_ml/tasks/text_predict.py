"""``text-classification-predict`` on the Ray node: label every row of the dataset's tables.

One worker (the default): streamed in this process. Rows are read a chunk at a time, sorted
by length inside the chunk (so batches pad little), run under ``torch.inference_mode``, and
written to ``predictions.csv`` as they come, in the input's order.

``workers`` > 1: the same reading and checks, then Ray Data ``map_batches`` over that many
model actors (:mod:`clowder_ml.ml.predict_ray`, which also states how CPUs are booked), the
rows written back in the input's order. Both paths run the same inference core and the same
writer, so they give the same predictions.

Columns (:mod:`clowder_ml.ml.predict_output`): ``id``, ``input`` (file:row), ``predicted``,
``score``, then one ``score_<label>`` per class. With true labels present the result has
accuracy and a confusion matrix.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clowder_ml.errors import ValidationFailed
from clowder_ml.ml import predict_ray, textdata
from clowder_ml.ml.models import load_classifier
from clowder_ml.ml.predict_output import PredictionWriter
from clowder_ml.tasks.context import TaskContext
from clowder_ml.tasks.outputs import PREDICTIONS_FILE
from clowder_ml.tasks.text_classification import PredictParams, data_tables, id_column_for

CHUNK_ROWS = 4096


def _model_dir(ctx: TaskContext) -> tuple[Path, str]:
    model = next((i for i in ctx.inputs if i.kind == "model"), None)
    if model is None:
        raise ValidationFailed("The predict job has no model input.")
    return model.path, model.name


def _labels_of(model_dir: Path) -> list[str]:
    """The model's labels in class-index order, read as ``load_classifier`` reads them but
    without loading the weights (the actors load those)."""
    from transformers import AutoConfig

    from clowder_ml.ml.models import check_text_model

    check_text_model(model_dir, "model")
    config = AutoConfig.from_pretrained(model_dir)
    id2label = {int(k): str(v) for k, v in config.id2label.items()}
    return [id2label[i] for i in range(len(id2label))]


def run(ctx: TaskContext) -> dict[str, Any]:
    p = ctx.params
    assert isinstance(p, PredictParams)
    model_dir, model_ref = _model_dir(ctx)
    trained = _training_info(model_dir)
    text_column = p.text_column or trained.get("text_column", "text")
    max_length = p.max_length or int(trained.get("max_length", 128))
    data = ctx.dataset()
    tables = data_tables(data.path, p.files)
    ctx.report.event(f"predicting with {model_ref} on {len(tables)} file(s) of {data.name}")
    started = time.monotonic()
    if p.workers > 1:
        labels = _labels_of(model_dir)
        with PredictionWriter(ctx.outputs_dir / PREDICTIONS_FILE, labels,
                              scored=p.label_column is not None) as out:
            _predict_across_workers(ctx, p, tables, data.path, text_column, max_length,
                                    model_dir, out)
    else:
        import torch

        model, tokenizer, id2label = load_classifier(model_dir)
        labels = [id2label[i] for i in range(len(id2label))]
        with PredictionWriter(ctx.outputs_dir / PREDICTIONS_FILE, labels,
                              scored=p.label_column is not None) as out:
            for table in tables:
                for batch in textdata.iter_text_rows(table, data.path, text_column,
                                                     p.label_column,
                                                     id_column_for(table, p.id_column),
                                                     batch_rows=CHUNK_ROWS):
                    probs = predict_ray.text_probs(model, tokenizer, batch.texts,
                                                   p.batch_size, max_length, torch)
                    for i, row_probs in enumerate(probs):
                        out.add(batch.ids[i], f"{batch.source}:{batch.rows[i]}", row_probs,
                                batch.labels[i] if batch.labels is not None else None)
                    ctx.report.progress(out.rows, None, f"{out.rows} rows")
    seconds = time.monotonic() - started
    summary = out.summary()
    rows = summary["rows"]
    if rows == 0:
        raise ValidationFailed(f"No rows to predict in {data.name}.",
                               "Check the files param and the dataset's contents.")
    return {"model": model_ref, **summary, "workers": p.workers, "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds, 1) if seconds else None}


def _blocks(tables: list[Path], root: Path, text_column: str, p: PredictParams
            ) -> Iterator[dict[str, list[Any]]]:
    """The rows of ``tables`` as Ray Data blocks (columns ``index``, ``text``, ``id``,
    ``input`` and, with a label column, ``label``), read and checked by
    :func:`textdata.iter_text_rows` (its errors name file, row and column)."""
    index = 0
    rows = predict_ray.block_rows(p.batch_size, CHUNK_ROWS)
    for table in tables:
        for batch in textdata.iter_text_rows(table, root, text_column, p.label_column,
                                             id_column_for(table, p.id_column),
                                             batch_rows=rows):
            block: dict[str, list[Any]] = {
                predict_ray.INDEX: list(range(index, index + len(batch))),
                "text": batch.texts, "id": batch.ids,
                "input": [f"{batch.source}:{r}" for r in batch.rows]}
            if batch.labels is not None:
                block["label"] = batch.labels
            index += len(batch)
            yield block


def _predict_across_workers(ctx: TaskContext, p: PredictParams, tables: list[Path],
                            root: Path, text_column: str, max_length: int, model_dir: Path,
                            out: PredictionWriter) -> None:
    def started(cpus: float, threads: int) -> None:
        ctx.report.event(f"predicting with Ray Data map_batches on {p.workers} workers "
                         f"({cpus:g} CPU booked, {threads} thread(s) each)")

    for n, row in enumerate(predict_ray.predict_across_workers(
            _blocks(tables, root, text_column, p), predict_ray.TextPredictor,
            {"batch_size": p.batch_size, "max_length": max_length}, model_dir,
            workers=p.workers, cpus=ctx.cpus,
            runner_holds=ctx.workers == 1,
            batch_rows=predict_ray.block_rows(p.batch_size, CHUNK_ROWS), on_start=started),
            start=1):
        out.add(row["id"], row["input"], row[predict_ray.PROBS], row.get("label"))
        if n % CHUNK_ROWS == 0:
            ctx.report.progress(n, None, f"{n} rows")
    ctx.report.progress(out.rows, None, f"{out.rows} rows")


def _training_info(model_dir: Path) -> dict[str, Any]:
    """What the fine-tune recorded about its data (text column, max length), if present."""
    try:
        info: dict[str, Any] = json.loads((model_dir / "clowder_ml.json").read_text())
        return info
    except (OSError, ValueError):
        return {}
