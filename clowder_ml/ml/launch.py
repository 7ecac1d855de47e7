"""Run the training worker and keep it running until it finishes: the one place that decides
how training is placed on the cluster.

- ``local``: the worker is a child process of the runner, on the runner's node and within
  the CPUs the job reserved, started early (:class:`LocalWorker`). When it dies for an
  infrastructure reason (killed, out of memory kill, crash) it is started again and resumes
  from its last checkpoint, up to ``max_failures`` times. No extra start-up cost: this is
  the default for one CPU worker.
- ``ray-train``: Ray Train's ``TorchTrainer`` with ``ScalingConfig`` and ``FailureConfig``
  (worker actors placed by Ray, restarted by Ray Train on failure, same checkpoint resume).
  Used for more than one worker (data parallel: every worker trains a share of each batch,
  see ``train_loop.train``), for GPU workers, and when asked for; it costs Ray Train's
  start-up time (about 10-20 s on a 2-core machine).

Resources: with one worker the job's entrypoint (the runner) holds the job's CPUs/GPUs and
a ``ray-train`` worker reserves ``cpus_per_worker`` more. With W > 1 workers the entrypoint
holds nothing (``JobSpec.entrypoint_resources``) and each of the W Ray Train workers
reserves the job's ``resources.cpus`` and ``resources.gpus``, so a cluster with exactly
W x cpus CPUs runs the job instead of deadlocking.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from clowder_ml.errors import TrainingFailed, ValidationFailed
from clowder_ml.ml.finetune_worker import ERROR_FILE, PREWARM_FLAG, RESULT_FILE
from clowder_ml.ml.training_length import TrainingLength

Launcher = Literal["auto", "local", "ray-train"]


def total_steps(p: Any, n_train: int, length: TrainingLength) -> int:
    """Optimizer steps the run takes at most (``max_steps`` caps the epochs; an auto run
    may stop earlier)."""
    steps_per_epoch = -(-n_train // (p.batch_size * p.gradient_accumulation))
    return int(min(p.max_steps or 10**9, steps_per_epoch * length.epochs))


def loop_params(p: Any, total: int, length: TrainingLength) -> dict[str, Any]:
    """The ``TrainParams`` fields a fine-tune task's params and its training length give
    the worker."""
    out: dict[str, Any] = {
        "epochs": length.epochs, "learning_rate": p.learning_rate, "batch_size": p.batch_size,
        "gradient_accumulation": p.gradient_accumulation, "warmup_ratio": p.warmup_ratio,
        "weight_decay": p.weight_decay, "max_grad_norm": p.max_grad_norm, "seed": p.seed,
        "early_stopping_patience": length.patience, "metric": p.metric,
        "checkpoint_every_steps": p.checkpoint_every_steps,
        "checkpoint_every_s": (None if p.checkpoint_every_minutes is None
                               else p.checkpoint_every_minutes * 60.0),
        "max_steps": p.max_steps,
        # About ten points for short runs, one per ten steps for long ones.
        "log_every_steps": min(10, max(1, total // 10)),
        "keep_best": length.keep_best, "loss_aware": length.loss_aware,
        "cooldown_epochs": length.cooldown,
    }
    if hasattr(p, "bf16"):
        out["bf16"] = p.bf16
    return out


def choose(launcher: Launcher, workers: int, use_gpu: bool) -> Literal["local", "ray-train"]:
    """The launcher for ``workers`` training workers: ``auto`` is ``local`` for one worker
    (it trains on the CPUs or GPU the job's runner reserved) and ``ray-train`` for more.
    Refused (``ValidationFailed``): ``local`` with several workers (one process), and
    ``ray-train`` with one GPU worker (the runner already holds the job's GPU, so a Ray Train
    worker asking for another could wait for ever on a one-GPU node)."""
    if launcher == "local" and workers > 1:
        raise ValidationFailed(f"The local launcher trains in one process; {workers} workers "
                               "need the ray-train launcher.",
                               "Use launcher=ray-train (or auto), or workers=1.")
    if launcher == "ray-train" and workers == 1 and use_gpu:
        raise ValidationFailed("One GPU worker trains with the local launcher: the job's "
                               "runner holds its GPU.",
                               "Use launcher=auto, or workers=2 or more for Ray Train.")
    if launcher != "auto":
        return launcher
    return "local" if workers == 1 else "ray-train"


def _outcome(output_dir: Path) -> dict[str, Any]:
    err = output_dir / ERROR_FILE
    if err.is_file():
        raise TrainingFailed(json.loads(err.read_text())["reason"])
    done = output_dir / RESULT_FILE
    if not done.is_file():
        raise TrainingFailed("The training worker ended without saving the model.")
    result: dict[str, Any] = json.loads(done.read_text())
    return result


class LocalWorker:
    """The ``local`` launcher's worker process, started early.

    The process starts at once with ``--prewarm HINT``: it imports PyTorch, transformers and
    the model code (about 3 s on a 2-core machine) and then waits on its stdin. Starting it
    before the runner reads and tokenizes the data lets the two overlap. :meth:`run` writes
    the config and lets it go; :meth:`close` (or leaving the ``with`` block, e.g. because
    the data was refused) kills a worker that is still waiting. A runner that dies closes
    the pipe, and a waiting worker then exits by itself.
    """

    def __init__(self, config_path: Path, module: str = "clowder_ml.ml.finetune_worker",
                 warm: str = "") -> None:
        self.config_path = config_path
        self.module = module
        config_path.parent.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", module, str(config_path), PREWARM_FLAG, warm],
            stdin=subprocess.PIPE)

    def __enter__(self) -> LocalWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def _first_run(self) -> int:
        proc, self._proc = self._proc, None
        assert proc is not None and proc.stdin is not None, "run() called twice"
        try:
            proc.stdin.write(b"go\n")
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it died while warming up: its exit code says how
        return proc.wait()

    def run(self, config: dict[str, Any], max_failures: int,
            on_event: Callable[[str], None]) -> dict[str, Any]:
        """Train with ``config``, restarting the worker after an abnormal death (exit 0:
        done; exit 1: failed for a reason a retry won't fix); returns its result."""
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config))
        os.replace(tmp, self.config_path)
        output_dir = Path(config["output_dir"])
        returncode = self._first_run()
        failures = 0
        while returncode not in (0, 1):
            failures += 1
            how = f"signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
            if failures > max_failures:
                raise TrainingFailed(f"The training worker died ({how}) {failures} times; "
                                     f"max_failures is {max_failures}.")
            on_event(f"training worker died ({how}); resuming from the last checkpoint "
                     f"(restart {failures} of {max_failures})")
            returncode = subprocess.run(  # noqa: S603 - our own module, fixed argv
                [sys.executable, "-m", self.module, str(self.config_path)],
                check=False).returncode
        return _outcome(output_dir)


def collect_model(worker_output: Path, dest: Path) -> None:
    """Move the worker's saved model folder to ``dest`` (the job's outputs), without its
    result/error files: hard links where both are on one file system (no 90 MB copy),
    copies otherwise."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(worker_output, dest, copy_function=link_or_copy,
                    ignore=shutil.ignore_patterns(RESULT_FILE, ERROR_FILE))


def run_local(config: dict[str, Any], config_path: Path, max_failures: int,
              on_event: Callable[[str], None],
              module: str = "clowder_ml.ml.finetune_worker") -> dict[str, Any]:
    """Run the worker ``python -m MODULE CONFIG`` as a child process now (no early start);
    see :class:`LocalWorker`."""
    with LocalWorker(config_path, module) as worker:
        return worker.run(config, max_failures, on_event)


def run_ray_train(config: dict[str, Any], *, workers: int, use_gpu: bool,
                  cpus_per_worker: float, storage: Path, name: str,
                  max_failures: int, gpus_per_worker: float = 1.0) -> dict[str, Any]:
    """Run the worker under Ray Train (``TorchTrainer``) on the job's Ray cluster: ``workers``
    actors, each reserving ``cpus_per_worker`` CPUs and, with ``use_gpu``,
    ``gpus_per_worker`` GPUs; all of them train (data parallel, gloo on CPUs, NCCL on GPUs)
    and rank 0 writes the result. Ray Train restarts the whole group after a lost worker, up
    to ``max_failures`` times, and the ranks resume from the newest checkpoint, which is why
    ``config["checkpoint_dir"]`` must be on storage every node sees."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from clowder_ml.ml.finetune_worker import train_worker_ray

    if not ray.is_initialized():
        ray.init(log_to_driver=True)
    per_worker: dict[str, float] = {"CPU": cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = gpus_per_worker
    trainer = TorchTrainer(
        train_worker_ray, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(name=name, storage_path=str(storage),
                             failure_config=FailureConfig(max_failures=max_failures)))
    result = trainer.fit()
    if result.error is not None:
        output_dir = Path(config["output_dir"])
        if (output_dir / ERROR_FILE).is_file():
            return _outcome(output_dir)
        raise TrainingFailed(f"Ray Train failed: {str(result.error).splitlines()[0][:300]}")
    return _outcome(Path(config["output_dir"]))
