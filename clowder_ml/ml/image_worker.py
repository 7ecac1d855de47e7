"""The image training worker: one process that trains an image classifier, checkpoints, and
saves the Hugging Face folder.

Same contract as :mod:`clowder_ml.ml.finetune_worker` (whose result and error files it
shares): started as ``python -m clowder_ml.ml.image_worker CONFIG.json`` by
:class:`clowder_ml.ml.launch.LocalWorker`; it may be killed at any moment and started again with
the same config,
then resumes from the newest checkpoint in ``checkpoint_dir`` and ends with the same weights
as an uninterrupted run. A failure of the training itself is written to ``error.json`` and
the worker exits 1 (not retried); any other death is retried up to ``max_failures`` times.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from clowder_ml.ml.finetune_worker import (
    exit_now,
    job_reporter,
    metrics_callback,
    worker_main,
    write_summary,
)


def build_model(config: dict[str, Any]) -> Any:
    """The model to train (seed first): a new small CNN, or the registered base model."""
    from clowder_ml.ml import image_models

    labels: list[str] = list(config["labels"])
    if config.get("base_dir"):
        return image_models.load_for_finetune(Path(config["base_dir"]), labels)
    return image_models.new_small_cnn(labels, int(config["image_size"]))


def train_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Train per ``config`` (written by ``tasks.image_finetune``); returns the result it also
    writes to ``<output_dir>/train_result.json``."""
    import torch

    from clowder_ml.ml import allocator, determinism, image_models
    from clowder_ml.ml.imagedata import ImageTable, image_collate, shift_pixels
    from clowder_ml.ml.train_loop import TrainParams, evaluate, train

    allocator.keep_freed_memory()  # before the model and the first step allocate
    facts = determinism.setup(int(config["seed"]), int(config["threads"]))
    model = build_model(config)  # after seeding: initial weights are reproducible
    device = torch.device("cuda" if config.get("use_gpu") and torch.cuda.is_available()
                          else "cpu")
    model.to(device)
    prep = image_models.Preprocessing(size=int(config["image_size"]),
                                      mean=tuple(config["image_mean"]),
                                      std=tuple(config["image_std"]))
    collate = image_collate(prep.mean, prep.std, bool(config.get("augment")),
                            shift_pixels(prep.size, float(config.get("random_shift") or 0.0)))
    params = TrainParams(**config["train_params"])
    train_data = ImageTable(Path(config["train_data"]))
    eval_data = ImageTable(Path(config["eval_data"])) if config.get("eval_data") else None
    reporter = job_reporter()
    on_metrics = metrics_callback(reporter, int(config.get("total_steps") or 0),
                                  bool(config["train_params"].get("keep_best")))

    try:
        result = train(model, train_data, eval_data, params,
                       checkpoint_dir=Path(config["checkpoint_dir"]), on_metrics=on_metrics,
                       collate_fn=collate)
        final: dict[str, Any] = {}
        if eval_data is not None and len(eval_data):
            final = evaluate(model, eval_data, params.eval_batch_size or params.batch_size,
                             collate_fn=collate)
        out = Path(config["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        image_models.write_preprocessor_config(out, prep)
        return write_summary(out, result, final, facts)
    finally:
        if reporter is not None:
            reporter.close()


def warm_up(base_dir: str) -> None:
    """Import what training needs (``base_dir`` unused: image models import eagerly)."""
    import torch  # noqa: F401

    from clowder_ml.ml import image_models, imagedata, train_loop  # noqa: F401


def main(argv: list[str]) -> int:
    return worker_main(argv, train_worker, warm_up)


if __name__ == "__main__":
    exit_now(main(sys.argv))
