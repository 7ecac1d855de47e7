"""The training worker: one process that fine-tunes, checkpoints, and saves the model folder.

It is started by a launcher (``clowder_ml.ml.launch``): as a child process of the runner
(``python -m clowder_ml.ml.finetune_worker CONFIG.json``) or as a Ray Train worker. Either
way it may be killed at any moment and started again with the same config: it then resumes
from the newest checkpoint in ``checkpoint_dir`` (weights, optimizer, RNG states, data
position), and ends with the same weights as a run that was never interrupted.

Metrics stream to the job while it trains (the runner API, with the job's token from the
environment). A failure of the training itself (bad data, out of memory) is written to
``error.json`` in the output folder as one line, for the launcher to report; the worker then
exits 1, which the launcher does not retry.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clowder_ml.errors import ClowderMLError, TrainingFailed

ERROR_FILE = "error.json"
RESULT_FILE = "train_result.json"
# ``CONFIG --prewarm HINT``: import everything, then wait for "go" on stdin (see
# ``launch.LocalWorker``); HINT is the base model folder, or empty.
PREWARM_FLAG = "--prewarm"


def job_reporter() -> Any:
    """A Reporter for the job, or None outside a job (tests, benchmarks)."""
    url, token = os.environ.get("CLOWDER_ML_API_URL"), os.environ.get("CLOWDER_ML_JOB_TOKEN")
    if not url or not token:
        return None
    from clowder_ml.runner.api import RunnerApi
    from clowder_ml.runner.reporter import Reporter

    # Ray configures INFO logging in its workers: one line per report request is noise.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    return Reporter(RunnerApi(url, token, retry_s=60.0)).start()


def metrics_callback(reporter: Any, total_steps: int, at_most: bool = False
                     ) -> Callable[[int, dict[str, float]], None]:
    """The training loop's ``on_metrics``: stream each value, and progress in steps.

    ``at_most``: ``total_steps`` is epochs=auto's ceiling, which the run may stop well
    before; the message says so ("step 40 of at most 1800, epochs=auto")."""
    of = (f"of at most {total_steps}, epochs=auto may stop earlier" if at_most
          else f"of {total_steps}")

    def on_metrics(step: int, values: dict[str, float]) -> None:
        if reporter is None:
            return
        for name, value in values.items():
            reporter.metric(step, name, value)
        if total_steps:
            reporter.progress(step, total_steps, f"step {step} {of}")

    return on_metrics


def write_summary(out: Path, result: Any, final: dict[str, Any], facts: dict[str, Any]
                  ) -> dict[str, Any]:
    """Write (and return) ``train_result.json``: what the launcher reads back."""
    summary = {
        "global_step": result.global_step, "epochs_completed": result.epochs_completed,
        "stopped_early": result.stopped_early, "history": result.history,
        "train_samples_per_s": result.train_samples_per_s, "seconds": result.seconds,
        "resumed_from_step": result.resumed_from_step, "determinism": facts,
        "best_step": result.best_step, "best_epoch": result.best_epoch,
        "restored_best": result.restored_best, "cooldown_epochs": result.cooldown_epochs,
        "checkpoints": result.checkpoints,
        "eval": {k: final[k] for k in ("loss", "accuracy", "macro_f1", "confusion_matrix")
                 if k in final},
    }
    (out / RESULT_FILE).write_text(json.dumps(summary, default=str))
    return summary


def train_worker(config: dict[str, Any], rank: int = 0, device: str | None = None
                 ) -> dict[str, Any]:
    """Train per ``config`` (written by ``tasks.text_finetune``); returns the result it also
    writes to ``<output_dir>/train_result.json``.

    Data parallel (``torch.distributed`` initialised, see ``train_loop.train``): every rank
    calls this; only rank 0 reports metrics, evaluates, saves the model folder and writes
    the result (the other ranks return ``{}``). ``device`` overrides the device picked from
    ``use_gpu`` (Ray Train assigns each GPU worker its own)."""
    import torch

    from clowder_ml.ml import allocator, determinism, models
    from clowder_ml.ml.textdata import TokenizedTable
    from clowder_ml.ml.train_loop import TrainParams, evaluate, train

    allocator.keep_freed_memory()  # before the model and the first step allocate
    facts = determinism.setup(int(config["seed"]), int(config["threads"]))
    labels: list[str] = list(config["labels"])
    # Built after seeding: the new classification head's initial weights are reproducible.
    model, tokenizer = models.load_for_finetune(Path(config["base_dir"]), labels)
    target = torch.device(device if device is not None else
                          "cuda" if config.get("use_gpu") and torch.cuda.is_available()
                          else "cpu")
    model.to(target)
    params = TrainParams(**config["train_params"],
                         pad_id=int(tokenizer.pad_token_id or 0))
    train_data = TokenizedTable(Path(config["train_arrow"]))
    eval_data = TokenizedTable(Path(config["eval_arrow"])) if config.get("eval_arrow") else None
    reporter = job_reporter() if rank == 0 else None
    on_metrics = metrics_callback(reporter, int(config.get("total_steps") or 0),
                                  bool(config["train_params"].get("keep_best")))

    try:
        result = train(model, train_data, eval_data, params,
                       checkpoint_dir=Path(config["checkpoint_dir"]), on_metrics=on_metrics)
        if rank != 0:
            return {}
        final: dict[str, Any] = {}
        if eval_data is not None and len(eval_data):
            final = evaluate(model, eval_data, params.eval_batch_size or params.batch_size,
                             pad_id=params.pad_id)
        out = Path(config["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        return write_summary(out, result, final, facts)
    finally:
        if reporter is not None:
            reporter.close()


def train_or_record_failure(config: dict[str, Any],
                            train_fn: Callable[[dict[str, Any]], Any] = train_worker) -> bool:
    """Run ``train_fn``; on a failure of the training itself (retrying would fail the same
    way) write its one-line reason to ``error.json`` and return False."""
    try:
        train_fn(config)
    except (ClowderMLError, ValueError, RuntimeError, OSError) as exc:
        traceback.print_exc()
        reason = exc.message if isinstance(exc, ClowderMLError) else \
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        out = Path(config["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        (out / ERROR_FILE).write_text(json.dumps({"reason": reason[:500]}))
        return False
    return True


def train_worker_ray(config: dict[str, Any]) -> None:
    """Ray Train's ``train_loop_per_worker``: every worker trains its share of each batch
    (``torch.distributed`` is set up by ``TorchTrainer``); rank 0 reports, saves the model
    folder and writes ``train_result.json``.

    A lost worker raises nothing here (its process is gone) and the other ranks' next
    collective raises ``data_parallel.CollectiveFailed``, which is not recorded as a failure of
    the training: Ray Train stops the group and restarts it (``FailureConfig.max_failures``),
    and every rank resumes from the newest checkpoint. A failure of the training itself
    (recorded in ``error.json``) on one of several ranks is raised, so that Ray Train stops
    the other ranks, which would otherwise wait for it in the next collective; the restarted
    group finds ``error.json`` and ends at once instead of failing the same way again.
    """
    import ray.train

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    if (Path(config["output_dir"]) / ERROR_FILE).is_file():
        return  # an earlier attempt failed for a reason a retry won't fix
    device: str | None = None
    if config.get("use_gpu"):
        import ray.train.torch

        device = str(ray.train.torch.get_device())
    if not train_or_record_failure(config, functools.partial(train_worker, rank=rank,
                                                             device=device)) and world > 1:
        raise TrainingFailed(f"training worker {rank} of {world} failed; see {ERROR_FILE}")


def warm_up(base_dir: str) -> None:
    """Import what training needs, including the base model's architecture code."""
    import torch  # noqa: F401
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
    )

    from clowder_ml.ml import models, textdata, train_loop  # noqa: F401

    if base_dir and Path(base_dir, "config.json").is_file():
        # The architecture's module is imported on first lookup; a folder that is not a text
        # classifier is the runner's check to report, not ours.
        with contextlib.suppress(KeyError, OSError, ValueError):
            MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(AutoConfig.from_pretrained(base_dir))]


def worker_main(argv: list[str], train_fn: Callable[[dict[str, Any]], Any],
                warm: Callable[[str], None]) -> int:
    """``CONFIG [--prewarm HINT]`` -> exit 0 (trained), 1 (failed: ``error.json``), or 4
    (prewarmed, then told not to start: stdin closed without "go")."""
    if len(argv) > 2 and argv[2] == PREWARM_FLAG:
        warm(argv[3] if len(argv) > 3 else "")
        if sys.stdin.readline().strip() != "go":
            return 4
    config = json.loads(Path(argv[1]).read_text())
    return 0 if train_or_record_failure(config, train_fn) else 1


def exit_now(code: int) -> None:
    """Exit without the interpreter's teardown: everything is written and reported by now,
    and tearing down PyTorch and transformers takes about a second of the job's time."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str]) -> int:
    return worker_main(argv, train_worker, warm_up)


if __name__ == "__main__":
    exit_now(main(sys.argv))
