"""The image training worker: one process that trains an image classifier, checkpoints, and
saves the Hugging Face folder; and the local launcher that keeps it running.

Same contract as :mod:`clowder_ml.ml.finetune_worker` (whose result and error files it
shares): started as ``python -m clowder_ml.ml.image_worker CONFIG.json`` by
:func:`run_local`; it may be killed at any moment and started again with the same config,
then resumes from the newest checkpoint in ``checkpoint_dir`` and ends with the same weights
as an uninterrupted run. A failure of the training itself is written to ``error.json`` and
the worker exits 1 (not retried); any other death is retried up to ``max_failures`` times.
"""

from __future__ import annotations

import json
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clowder_ml.errors import ClowderMLError, TrainingFailed
from clowder_ml.ml.finetune_worker import ERROR_FILE, RESULT_FILE, _reporter


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

    from clowder_ml.ml import determinism, image_models
    from clowder_ml.ml.imagedata import ImageTable, image_collate
    from clowder_ml.ml.train_loop import TrainParams, evaluate, train

    facts = determinism.setup(int(config["seed"]), int(config["threads"]))
    model = build_model(config)  # after seeding: initial weights are reproducible
    device = torch.device("cuda" if config.get("use_gpu") and torch.cuda.is_available()
                          else "cpu")
    model.to(device)
    prep = image_models.Preprocessing(size=int(config["image_size"]),
                                      mean=tuple(config["image_mean"]),
                                      std=tuple(config["image_std"]))
    collate = image_collate(prep.mean, prep.std, bool(config.get("augment")))
    params = TrainParams(**config["train_params"])
    train_data = ImageTable(Path(config["train_data"]))
    eval_data = ImageTable(Path(config["eval_data"])) if config.get("eval_data") else None
    reporter = _reporter()
    total_steps = int(config.get("total_steps") or 0)

    def on_metrics(step: int, values: dict[str, float]) -> None:
        if reporter is None:
            return
        for name, value in values.items():
            reporter.metric(step, name, value)
        if total_steps:
            reporter.progress(step, total_steps, f"step {step} of {total_steps}")

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
        summary = {
            "global_step": result.global_step, "epochs_completed": result.epochs_completed,
            "stopped_early": result.stopped_early, "history": result.history,
            "train_samples_per_s": result.train_samples_per_s, "seconds": result.seconds,
            "resumed_from_step": result.resumed_from_step, "determinism": facts,
            "eval": {k: final[k] for k in ("loss", "accuracy", "macro_f1", "confusion_matrix")
                     if k in final},
        }
        (out / RESULT_FILE).write_text(json.dumps(summary, default=str))
        return summary
    finally:
        if reporter is not None:
            reporter.close()


def train_or_record_failure(config: dict[str, Any]) -> bool:
    """Train; on a failure of the training itself write its reason to ``error.json`` and
    return False."""
    try:
        train_worker(config)
    except (ClowderMLError, ValueError, RuntimeError, OSError) as exc:
        traceback.print_exc()
        reason = exc.message if isinstance(exc, ClowderMLError) else \
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        out = Path(config["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        (out / ERROR_FILE).write_text(json.dumps({"reason": reason[:500]}))
        return False
    return True


def _outcome(output_dir: Path) -> dict[str, Any]:
    err = output_dir / ERROR_FILE
    if err.is_file():
        raise TrainingFailed(json.loads(err.read_text())["reason"])
    done = output_dir / RESULT_FILE
    if not done.is_file():
        raise TrainingFailed("The training worker ended without saving the model.")
    result: dict[str, Any] = json.loads(done.read_text())
    return result


def run_local(config: dict[str, Any], config_path: Path, max_failures: int,
              on_event: Callable[[str], None]) -> dict[str, Any]:
    """Run the worker as a child process, restarting it (to resume from its last
    checkpoint) after an abnormal death, up to ``max_failures`` times."""
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(config))
    output_dir = Path(config["output_dir"])
    failures = 0
    while True:
        proc = subprocess.run(  # noqa: S603 - our own module, fixed argv
            [sys.executable, "-m", "clowder_ml.ml.image_worker", str(config_path)],
            check=False)
        if proc.returncode in (0, 1):  # done, or failed for a reason a retry won't fix
            return _outcome(output_dir)
        failures += 1
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else \
            f"exit code {proc.returncode}"
        if failures > max_failures:
            raise TrainingFailed(f"The training worker died ({how}) {failures} times; "
                                 f"max_failures is {max_failures}.")
        on_event(f"training worker died ({how}); resuming from the last checkpoint "
                 f"(restart {failures} of {max_failures})")


def main(argv: list[str]) -> int:
    return 0 if train_or_record_failure(json.loads(Path(argv[1]).read_text())) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
