"""The trusted fine-tuning loop for sequence classifiers: deterministic and resumable.

Contract:

* Same model initial weights, data, :class:`TrainParams` and environment (library versions,
  hardware kind, thread count — see :mod:`clowder_ml.ml.determinism`) give bit-identical
  final weights, eval metrics and history.
* A run interrupted at any point and restarted with the same arguments and the same
  ``checkpoint_dir`` resumes from the latest checkpoint and ends with the same weights,
  metrics and history as an uninterrupted run. Everything that influences the trajectory
  is either checkpointed (weights, AdamW moments, global RNG states — dropout draws from
  the global torch RNG —, progress, early-stopping state, the open logging window) or a
  pure function of checkpointed integers (the epoch's data order is drawn from a
  ``torch.Generator`` seeded by ``(seed, epoch)``; the learning rate is a pure function of
  the global step, so there is no hidden scheduler state).
* Checkpoints hold no pickled objects: weights are safetensors, the rest is a dict of
  ints/floats/strings/lists/tensors loadable with ``torch.load(..., weights_only=True)``.
* ``keep_best``: the run ends with the weights of its best end-of-epoch eval, not its last.
  Those weights are kept in ``checkpoint_dir/best.safetensors`` (written atomically, the step
  in its metadata) or, without a checkpoint folder, in memory. A resume replays every eval
  after its checkpoint, and the replay rewrites that file with the same weights whenever it
  finds a new best, so the file always ends as the best of the one deterministic trajectory.

Only ``on_metrics`` deliveries are at-least-once: a metrics record emitted after the latest
checkpoint is emitted again after a resume (consumers dedupe by step).

Data parallel: when ``torch.distributed`` is initialised with a world size W > 1 (Ray
Train's ``TorchTrainer`` does this: gloo on CPUs, NCCL on GPUs), every rank runs
:func:`train` with the same arguments and each optimizer step's micro-batches are split
across the ranks (see :func:`train`). The contract above then holds for a fixed W (the float
sums of the gradient all-reduce depend on W, so weights differ from a one-process run within
rounding). With W == 1, or without a process group, nothing changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import _remove_duplicate_names, load_model, save_file, save_model

from clowder_ml.ml import data_parallel, determinism
from clowder_ml.ml.metrics import accuracy, confusion_matrix, macro_f1

CHECKPOINT_PREFIX = "checkpoint-"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "trainer_state.pt"
KEEP_CHECKPOINTS = 2
STATE_FORMAT = 1
BEST_FILE = "best.safetensors"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
_TMP_PREFIX = ".tmp-"

# Fields that do not change the training trajectory and may differ on resume.
_RESUME_FREE_FIELDS = frozenset({"checkpoint_every_steps", "checkpoint_every_s",
                                 "log_every_steps", "eval_batch_size"})


@dataclass(frozen=True)
class TrainParams:
    """Hyper-parameters of a run. All of them except the ones in ``_RESUME_FREE_FIELDS``
    must be identical when resuming (checked; a mismatch raises ``ValueError``).

    ``warmup_steps``, when set, overrides ``warmup_ratio`` (fraction of total optimizer
    steps). ``max_steps`` caps the number of optimizer steps (and shortens the schedule).
    ``early_stopping_patience``: stop after that many consecutive end-of-epoch evals
    without improving ``eval_<metric>`` (needs eval data and ``eval_every_epoch``).
    ``keep_best``: end with the weights of the best eval (highest ``eval_<metric>``, the
    earliest of equals) instead of the last weights; needs eval data. ``loss_aware``:
    an eval with the same ``eval_<metric>`` as the best but a lower ``eval_loss`` is the new
    best, and any eval with a lower ``eval_loss`` than all before it resets the patience: on
    a small validation set the metric moves in coarse steps and saturates (one mistake in a
    hundred) while the model still gets better.
    ``cooldown_epochs``: when the patience runs out, train up to that many more epochs
    (never past ``epochs``) with the learning rate falling linearly from its value then to 0,
    and stop at their end: an early stop otherwise ends at a high learning rate, with the
    noisy weights of one; the evals go on, and ``keep_best`` may pick one of these epochs.
    ``pad_id`` pads ``input_ids`` in dynamically padded batches.
    ``checkpoint_every_steps`` and ``checkpoint_every_s`` (both need a checkpoint folder):
    a checkpoint is written every that many optimizer steps, and after any step that ends
    that many seconds (of this call) after the last checkpoint or the start; either may be
    None. When checkpoints are written never changes the trajectory, only how much work a
    crash loses and what writing them costs (see ``TrainResult.checkpoints``).
    """

    epochs: int = 3
    learning_rate: float = 5e-5
    batch_size: int = 16
    gradient_accumulation: int = 1
    warmup_ratio: float = 0.0
    warmup_steps: int | None = None
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    seed: int = 42
    eval_every_epoch: bool = True
    early_stopping_patience: int | None = None
    metric: Literal["accuracy", "macro_f1"] = "accuracy"
    checkpoint_every_steps: int | None = None
    checkpoint_every_s: float | None = None
    max_steps: int | None = None
    log_every_steps: int = 10
    pad_id: int = 0
    eval_batch_size: int | None = None
    # bfloat16 autocast of the forward pass on a GPU (weights and optimizer stay float32).
    bf16: bool = False
    keep_best: bool = False
    loss_aware: bool = False
    cooldown_epochs: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.gradient_accumulation < 1:
            raise ValueError("epochs, batch_size and gradient_accumulation must be >= 1")
        if self.log_every_steps < 1:
            raise ValueError("log_every_steps must be >= 1")
        if self.checkpoint_every_steps is not None and self.checkpoint_every_steps < 1:
            raise ValueError("checkpoint_every_steps must be >= 1 or None")
        if self.checkpoint_every_s is not None and not self.checkpoint_every_s > 0:
            raise ValueError("checkpoint_every_s must be > 0 or None")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1 or None")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError("warmup_ratio must be in [0, 1]")
        if self.cooldown_epochs < 0:
            raise ValueError("cooldown_epochs must be >= 0")
        if self.metric not in ("accuracy", "macro_f1"):
            raise ValueError(f"unknown metric {self.metric!r}")


class DataSource(Protocol):
    """Random-access tokenized examples.

    ``batch(indices)`` returns python lists aligned with ``indices``: ``input_ids``
    (list of list[int], unpadded), ``attention_mask`` (same shapes) and ``label`` (ints).
    """

    def __len__(self) -> int: ...

    def batch(self, indices: list[int]) -> dict[str, list[Any]]: ...


@runtime_checkable
class SupportsLengths(Protocol):
    """Optional: a data source that knows its sequence lengths without loading them."""

    def lengths(self) -> Sequence[int]: ...


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    ``metrics`` is the eval of the weights the model ends with (``eval_loss``,
    ``eval_accuracy``, ``eval_macro_f1``; empty without eval data): the last eval, or with
    ``keep_best`` the best one. ``history`` holds every training log record and eval record
    (deterministic: no timings). ``interrupted`` is True when ``should_stop`` ended the run
    (the run can be resumed). ``best_step`` and ``best_epoch`` (1-based: the epoch in which
    it was reached) locate the best eval (None without one); ``restored_best`` says the
    model was set back to it. ``checkpoints``: how many this call wrote, the seconds the
    training loop spent on them (in-memory snapshots, waiting for an earlier write) and the
    seconds their writing took alongside the next steps. Timings cover this call only.
    """

    global_step: int
    epochs_completed: int
    metrics: dict[str, float]
    history: list[dict[str, float]]
    stopped_early: bool
    train_samples_per_s: float
    seconds: float
    interrupted: bool = False
    resumed_from_step: int | None = None
    best_step: int | None = None
    best_epoch: int | None = None
    restored_best: bool = False
    cooldown_epochs: int = 0
    checkpoints: dict[str, float] = field(default_factory=dict)


@dataclass
class _Progress:
    """Everything about where the run is, checkpointed as plain values."""

    epoch: int = 0
    step_in_epoch: int = 0  # optimizer steps done in ``epoch``
    global_step: int = 0
    epochs_completed: int = 0
    best_metric: float | None = None
    best_loss: float | None = None
    lowest_loss: float | None = None  # of every eval so far (loss_aware patience)
    # Where the best eval was and what it measured (checkpoints older than these fields
    # load with the defaults).
    best_step: int | None = None
    best_epoch: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    patience: int = 0
    stopped_early: bool = False
    # The cooldown after the patience ran out (``TrainParams.cooldown_epochs``): the global
    # steps where it began and where it ends, and the epoch it began in (0-based).
    cooldown_from: int | None = None
    cooldown_until: int | None = None
    cooldown_epoch: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    # Open logging window, checkpointed so that the first log after a resume is the same.
    window_loss: float = 0.0
    window_steps: int = 0
    last_metrics: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- data


def collate(
    batch: dict[str, list[Any]], pad_id: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest sequence (right padding) and build model inputs."""
    ids: list[list[int]] = batch["input_ids"]
    masks: list[list[int]] = batch["attention_mask"]
    width = max((len(x) for x in ids), default=0)
    input_ids = [list(x) + [pad_id] * (width - len(x)) for x in ids]
    attention = [list(m) + [0] * (width - len(m)) for m in masks]
    return {
        "input_ids": torch.tensor(input_ids, dtype=torch.long, device=device),
        "attention_mask": torch.tensor(attention, dtype=torch.long, device=device),
        "labels": torch.tensor(batch["label"], dtype=torch.long, device=device),
    }


Collate = Callable[[dict[str, list[Any]], torch.device, bool], dict[str, torch.Tensor]]
"""Optional hook: ``(batch, device, training) -> model inputs`` with a ``labels`` tensor.

``training`` is True for training batches (a hook may augment them, drawing from the global
torch RNG, which checkpoints capture) and False for evaluation. Without a hook, batches are
padded token sequences (:func:`collate` with ``pad_id``)."""


def _collate_with(collate_fn: Collate | None, pad_id: int) -> Collate:
    if collate_fn is not None:
        return collate_fn

    def text(batch: dict[str, list[Any]], device: torch.device, training: bool
             ) -> dict[str, torch.Tensor]:
        return collate(batch, pad_id, device)

    return text


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled example order of ``epoch``: a pure function of ``(n, seed, epoch)``.

    The generator seed is derived by hashing so that neighbouring (seed, epoch) pairs do
    not collide, and a private generator is used so that the order does not depend on
    how many draws the global RNG has seen (model init, dropout, a resume).
    """
    digest = hashlib.sha256(f"clowder-ml/epoch-order/{seed}/{epoch}".encode()).digest()
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int.from_bytes(digest[:8], "big") & (2**63 - 1))
    order: list[int] = torch.randperm(n, generator=gen).tolist()
    return order


def _epoch_groups(n: int, params: TrainParams, epoch: int) -> list[list[list[int]]]:
    """Micro-batches of ``epoch`` grouped per optimizer step (last ones may be short)."""
    order = epoch_order(n, params.seed, epoch)
    bs = params.batch_size
    batches = [order[i : i + bs] for i in range(0, n, bs)]
    acc = params.gradient_accumulation
    return [batches[i : i + acc] for i in range(0, len(batches), acc)]


# --------------------------------------------------------------------------- optimizer


_NORM_TYPES: tuple[type[torch.nn.Module], ...] = (
    torch.nn.LayerNorm,
    torch.nn.GroupNorm,
    torch.nn.modules.batchnorm._BatchNorm,
    torch.nn.RMSNorm,
)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay for weight matrices; none for biases and normalisation weights.

    Norm weights are found by module type and, for custom norms (HF names them
    ``LayerNorm``/``layer_norm``), by name. Order follows ``named_parameters`` so that the
    optimizer state layout is the same in every process.
    """
    no_decay: set[str] = set()
    for mod_name, module in model.named_modules():
        for p_name, _ in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            lowered = full.lower()
            if (
                isinstance(module, _NORM_TYPES)
                or p_name == "bias"
                or "layernorm" in lowered
                or "layer_norm" in lowered
            ):
                no_decay.add(full)
    decay: list[torch.nn.Parameter] = []
    plain: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if name in no_decay else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup from 0 to 1 over ``warmup_steps``, then linear decay to 0 at
    ``total_steps``. ``step`` is the number of optimizer steps already taken."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1) if warmup_steps else 1.0
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def _lr_factor(progress: _Progress, warmup_steps: int, total_steps: int) -> float:
    """The schedule's factor at ``progress.global_step``; in a cooldown, the factor where it
    began falling linearly to 0 at its end (a pure function of checkpointed integers)."""
    step = progress.global_step
    if progress.cooldown_from is None or progress.cooldown_until is None:
        return lr_factor(step, warmup_steps, total_steps)
    start = lr_factor(progress.cooldown_from, warmup_steps, total_steps)
    span = max(1, progress.cooldown_until - progress.cooldown_from)
    return start * max(0.0, (progress.cooldown_until - step) / span)


def _schedule(params: TrainParams, n_train: int) -> tuple[int, int]:
    batches_per_epoch = math.ceil(n_train / params.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / params.gradient_accumulation)
    total = steps_per_epoch * params.epochs
    if params.max_steps is not None:
        total = min(total, params.max_steps)
    if params.warmup_steps is not None:
        warmup = params.warmup_steps
    else:
        warmup = math.ceil(total * params.warmup_ratio)
    return warmup, total


# --------------------------------------------------------------------------- checkpoints


def list_checkpoints(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``checkpoint_dir`` as ``(global_step, path)``, oldest first.

    Only fully written checkpoints carry the final name (they are renamed into place), so
    a crash while writing never leaves a half checkpoint that would be picked up.
    """
    if not checkpoint_dir.is_dir():
        return []
    found = []
    for entry in checkpoint_dir.iterdir():
        m = _CHECKPOINT_RE.match(entry.name)
        if m and entry.is_dir():
            found.append((int(m.group(1)), entry))
    return sorted(found)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Write the model's ``state_dict`` as safetensors.

    ``safetensors.torch.save_model`` is ``save_file`` of the state dict with tied
    (storage-sharing) tensors written once, which plain ``save_file`` refuses.
    """
    save_model(model, str(path))


def _cloned(value: Any) -> Any:
    """A deep copy of a state (dicts, lists, tensors, plain values) with tensors cloned."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _cloned(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cloned(v) for v in value)
    return value


def _snapshot(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: _Progress,
    params: TrainParams,
    n_train: int,
    schedule: tuple[int, int],
    rank_rng: list[dict[str, Any]] | None = None,
) -> tuple[int, dict[str, torch.Tensor], dict[str, Any], dict[str, str]]:
    """Everything a checkpoint holds, copied now (between two steps) so that writing it can
    overlap the next steps: ``(global_step, weights, state, weights metadata)``.

    ``rank_rng`` (data parallel only): every rank's RNG states, by rank; each rank restores
    its own on resume, and the checkpoint records the world size it was written by."""
    weights = model.state_dict()
    metadata: dict[str, str] = {}
    # As safetensors.torch.save_model: tied (storage-sharing) tensors are written once.
    for kept, removed in _remove_duplicate_names(weights).items():
        for name in removed:
            metadata.setdefault(name, kept)
            del weights[name]
    state = {
        "format": STATE_FORMAT,
        "params": dataclasses.asdict(params),
        "n_train": n_train,
        "schedule": {
            "kind": "linear_warmup_linear_decay",
            "warmup_steps": schedule[0],
            "total_steps": schedule[1],
        },
        "optimizer": _cloned(optimizer.state_dict()),
        "rng": determinism.rng_state(),
        "progress": dataclasses.asdict(progress),
    }
    if rank_rng is not None:
        state["world_size"] = len(rank_rng)
        state["rank_rng"] = rank_rng
    copies = {k: v.detach().contiguous().clone() for k, v in weights.items()}
    return progress.global_step, copies, state, metadata


def _write_snapshot(
    checkpoint_dir: Path,
    snapshot: tuple[int, dict[str, torch.Tensor], dict[str, Any], dict[str, str]],
) -> Path:
    """Write ``checkpoint-<global_step>`` atomically and keep the newest ``KEEP_CHECKPOINTS``."""
    step, weights, state, metadata = snapshot
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir / f"{CHECKPOINT_PREFIX}{step:09d}"
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=checkpoint_dir))
    try:
        save_file(weights, str(tmp / WEIGHTS_FILE), metadata=metadata or None)
        torch.save(state, tmp / STATE_FILE)
        for f in (tmp / WEIGHTS_FILE, tmp / STATE_FILE):
            _fsync_file(f)
        _fsync_dir(tmp)
        if final.exists():  # same step written before (resumed, then stopped at once)
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(checkpoint_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, old in list_checkpoints(checkpoint_dir)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


class _CheckpointWriter:
    """Writes checkpoints on one background thread, one at a time.

    :meth:`save` snapshots the state in memory (a copy of the weights and AdamW moments:
    ~0.1 s for MiniLM) and returns; the file writes and fsyncs (~0.5 s) overlap the next
    training steps. A checkpoint only gets its final name once complete, so a worker
    killed mid-write resumes from the previous one. :meth:`wait` joins the pending write
    and re-raises its error, if any; ``train`` calls it before returning. :meth:`stats`
    says what the checkpoints cost (``TrainResult.checkpoints``).
    """

    def __init__(self, checkpoint_dir: Path) -> None:
        self.checkpoint_dir = checkpoint_dir
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.written = 0
        self.loop_seconds = 0.0  # on the training thread: snapshots, waits for a write
        self.write_seconds = 0.0  # on the writer thread

    def save(self, *snapshot_args: Any, **snapshot_kwargs: Any) -> None:
        started = time.perf_counter()
        self.wait()  # at most one snapshot in memory and one write in flight
        snap = _snapshot(*snapshot_args, **snapshot_kwargs)
        self.loop_seconds += time.perf_counter() - started

        def write() -> None:
            began = time.perf_counter()
            try:
                _write_snapshot(self.checkpoint_dir, snap)
                self.written += 1
            except BaseException as exc:  # re-raised by wait() in the training thread
                self._error = exc
            finally:
                self.write_seconds += time.perf_counter() - began

        self._thread = threading.Thread(target=write, name="checkpoint-writer", daemon=True)
        self._thread.start()

    def __enter__(self) -> _CheckpointWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.wait()
        else:  # the run failed: let a write in flight finish, its own error matters less
            with contextlib.suppress(BaseException):
                self.wait()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def stats(self) -> dict[str, float]:
        """``written``, ``loop_seconds``, ``write_seconds`` so far (call after :meth:`wait`)."""
        return {"written": self.written, "loop_seconds": round(self.loop_seconds, 3),
                "write_seconds": round(self.write_seconds, 3)}


def _load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    params: TrainParams,
    n_train: int,
    rank: int = 0,
    world: int = 1,
) -> _Progress:
    """Restore weights, optimizer and RNG states (``rank``'s own, for a checkpoint written
    by ``world`` data-parallel ranks); return the progress to continue from."""
    state: dict[str, Any] = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: unsupported checkpoint format {state.get('format')!r}")
    # A field added since the checkpoint was written counts as its default.
    defaults = dataclasses.asdict(TrainParams())
    saved = {k: v for k, v in {**defaults, **state["params"]}.items()
             if k not in _RESUME_FREE_FIELDS}
    now = {k: v for k, v in dataclasses.asdict(params).items() if k not in _RESUME_FREE_FIELDS}
    if saved != now:
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise ValueError(f"{path}: cannot resume with different params: {diff}")
    if state["n_train"] != n_train:
        raise ValueError(f"{path}: checkpoint was for {state['n_train']} examples, not {n_train}")
    # The world size sets the float summation order of the gradients and every rank's
    # RNG stream: resuming with another one would silently break "resume == uninterrupted".
    saved_world = int(state.get("world_size", 1))
    if saved_world != world:
        raise ValueError(f"{path}: checkpoint was written by {saved_world} worker(s), not "
                         f"{world}; resume with the same number of workers")
    missing, unexpected = load_model(model, str(path / WEIGHTS_FILE), strict=True)
    del missing, unexpected  # strict=True raises on either
    optimizer.load_state_dict(state["optimizer"])
    determinism.set_rng_state(state["rank_rng"][rank] if world > 1 else state["rng"])
    return _Progress(**state["progress"])


def _clean_tmp(checkpoint_dir: Path) -> None:
    """Remove leftovers of checkpoints (folders) and best weights (files) whose writing was
    interrupted."""
    if checkpoint_dir.is_dir():
        for entry in checkpoint_dir.iterdir():
            if entry.name.startswith(_TMP_PREFIX):
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


class _BestWeights:
    """The weights of the best eval so far: a file in the checkpoint folder (so that they
    survive a killed worker) or, without one, a copy in memory.

    The file is written next to its final name and renamed into place after an fsync, so a
    crash leaves the previous best intact; its metadata records the step it holds, which
    :meth:`restore` checks against the step the progress says is best.
    """

    def __init__(self, checkpoint_dir: Path | None) -> None:
        self.path = checkpoint_dir / BEST_FILE if checkpoint_dir is not None else None
        self._memory: tuple[int, dict[str, torch.Tensor]] | None = None

    def save(self, model: torch.nn.Module, step: int) -> None:
        if self.path is None:
            self._memory = (step, {k: v.detach().clone() for k, v in
                                   model.state_dict().items()})
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".safetensors",
                                    dir=self.path.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            save_model(model, str(tmp), metadata={"step": str(step)})
            _fsync_file(tmp)
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def restore(self, model: torch.nn.Module, step: int) -> None:
        """Load the best weights (of ``step``) into ``model``; RuntimeError when the kept
        weights are of another step (they never should be: see the module docstring)."""
        if self.path is None:
            if self._memory is None or self._memory[0] != step:
                raise RuntimeError(f"best weights of step {step} were not kept")
            model.load_state_dict(self._memory[1], strict=True)
            return
        if not self.path.is_file():
            raise RuntimeError(f"{self.path}: best weights of step {step} are missing")
        with safe_open(str(self.path), framework="pt") as fh:
            kept = (fh.metadata() or {}).get("step")
        if kept != str(step):
            raise RuntimeError(f"{self.path} holds step {kept}, not the best step {step}")
        load_model(model, str(self.path), strict=True)


# --------------------------------------------------------------------------- eval


def _lengths(data: DataSource) -> list[int]:
    if isinstance(data, SupportsLengths):
        return [int(x) for x in data.lengths()]
    return [len(x) for x in data.batch(list(range(len(data))))["input_ids"]]


def evaluate(
    model: torch.nn.Module,
    data: DataSource,
    batch_size: int,
    *,
    pad_id: int = 0,
    collate_fn: Collate | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``data``: loss, accuracy, macro_f1, confusion matrix, predictions.

    Examples are batched by descending length (less padding, faster) and the predictions
    are mapped back to the original order. ``loss`` is the mean per-example cross entropy.
    The number of labels is the width of the logits. Leaves the model in eval mode and all
    RNG states untouched (the global RNG is forked, in case a model draws in eval mode).
    ``collate_fn`` (called with ``training=False``) builds non-text inputs; every key but
    ``labels`` is passed to the model.
    """
    n = len(data)
    if n == 0:
        raise ValueError("evaluate: empty data")
    device = _device(model)
    make_inputs = _collate_with(collate_fn, pad_id)
    lengths = _lengths(data)
    order = sorted(range(n), key=lambda i: (-lengths[i], i))
    preds: list[int] = [0] * n
    labels: list[int] = [0] * n
    loss_sum = 0.0
    n_labels = 0
    model.eval()
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda_devices), torch.inference_mode():
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            inputs = make_inputs(data.batch(idx), device, False)
            logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
            n_labels = int(logits.shape[-1])
            loss_sum += float(F.cross_entropy(logits.float(), inputs["labels"], reduction="sum"))
            for i, p, y in zip(
                idx, logits.argmax(dim=-1).tolist(), inputs["labels"].tolist(), strict=True
            ):
                preds[i] = int(p)
                labels[i] = int(y)
    return {
        "loss": loss_sum / n,
        "accuracy": accuracy(labels, preds),
        "macro_f1": macro_f1(labels, preds, n_labels),
        "confusion_matrix": confusion_matrix(labels, preds, n_labels),
        "predictions": preds,
    }


def _device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


# --------------------------------------------------------------------------- train


def train(
    model: torch.nn.Module,
    train_data: DataSource,
    eval_data: DataSource | None,
    params: TrainParams,
    *,
    checkpoint_dir: Path | None = None,
    on_metrics: Callable[[int, dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    collate_fn: Collate | None = None,
) -> TrainResult:
    """Fine-tune ``model`` (HF sequence-classifier-like: ``forward(input_ids,
    attention_mask, labels)`` returning an object with ``.loss`` and ``.logits``).

    A fresh run seeds python/numpy/torch from ``params.seed`` (dropout draws from the
    global torch RNG). If ``checkpoint_dir`` holds a checkpoint, the run resumes from the
    latest instead: weights, AdamW state, RNG states and progress are restored and the
    optimizer steps already done in the current epoch are skipped without drawing.

    Per optimizer step: ``gradient_accumulation`` micro-batches, each loss divided by the
    number of micro-batches in the step; gradient clipping to ``max_grad_norm``; AdamW
    (decoupled decay, none for biases/norm weights) at the scheduled learning rate.
    Every ``log_every_steps`` steps ``on_metrics(step, {"loss", "learning_rate",
    "samples_per_s"})`` (loss: mean over the steps since the last log); after each epoch
    (if ``eval_every_epoch`` and ``eval_data``) ``on_metrics(step, {"eval_loss",
    "eval_accuracy", "eval_macro_f1"})``. Every ``checkpoint_every_steps`` steps a
    checkpoint is written (before the epoch's eval, so a resume repeats that eval).
    ``should_stop`` is polled after every optimizer step; when it returns True a
    checkpoint is written (if ``checkpoint_dir``) and the run returns ``interrupted``.
    An exception from a callback propagates; resume from the latest checkpoint.
    ``collate_fn`` (see :data:`Collate`) turns non-text batches into model inputs.

    Data parallel (``torch.distributed`` initialised, world size W > 1; every rank calls
    this with the same arguments, ``checkpoint_dir`` on storage all ranks see):

    * every rank computes the same epoch order; micro-batch ``idx`` is split as
      ``idx[rank::W]``, and each rank's loss is its shard's mean loss times
      ``len(shard) / len(idx)``, divided by the micro-batches in the step, so the all-reduced
      (summed) gradient is the single-process gradient. Gradients are summed by one explicit
      all-reduce per step in a fixed order, then every rank clips and steps AdamW alike, so
      weights stay identical on all ranks;
    * a fresh run broadcasts rank 0's initial weights; rank r > 0 seeds its RNGs from
      ``(seed, r)`` (its own dropout draws), and checkpoints hold every rank's RNG states;
    * only rank 0 writes checkpoints, calls ``on_metrics`` and evaluates (its decision to
      stop early is broadcast); the other ranks' results carry no eval metrics;
    * rank 0 picks the newest checkpoint and broadcasts its step, so all ranks resume from
      the same one; a checkpoint written by another world size is refused (``ValueError``);
    * ``should_stop`` is polled on every rank after each step and the run stops when any
      rank says so; samples/s count the global batch.
    """
    t_start = time.perf_counter()
    n_train = len(train_data)
    if n_train == 0:
        raise ValueError("train: empty training data")
    device = _device(model)
    dp = data_parallel.process_group(device)  # data-parallel group; None: one process, as before
    is_rank0 = dp is None or dp.rank == 0
    if not is_rank0:
        on_metrics = None  # rank 0 reports for the run
    make_inputs = _collate_with(collate_fn, params.pad_id)
    eval_bs = params.eval_batch_size or params.batch_size
    schedule = _schedule(params, n_train)
    warmup_steps, total_steps = schedule
    # fused=True: one vectorized kernel for all parameters (CPU and CUDA). The default
    # on CPU is a Python loop over tensors that took ~40 % of a MiniLM step here; the fused
    # kernel has no atomics, so results stay deterministic.
    optimizer = torch.optim.AdamW(
        _param_groups(model, params.weight_decay), lr=params.learning_rate, weight_decay=0.0,
        fused=True,
    )

    progress = _Progress()
    resumed_from: int | None = None
    writer = (_CheckpointWriter(checkpoint_dir)
              if checkpoint_dir is not None and is_rank0 else None)
    if checkpoint_dir is not None:
        if is_rank0:  # only rank 0 writes, so only it may remove half-written ones
            _clean_tmp(checkpoint_dir)
        existing = list_checkpoints(checkpoint_dir)
        if dp is None:
            if existing:
                resumed_from, latest = existing[-1]
                progress = _load_checkpoint(latest, model, optimizer, params, n_train)
        else:
            # Rank 0's choice for all: a rank that listed the folder a moment earlier or later
            # must not resume from another step (no checkpoint is written before the first
            # step, which needs every rank, so the chosen one still exists when loaded).
            step = data_parallel.broadcast_int(dp, existing[-1][0] if existing else -1)
            if step >= 0:
                chosen = dict(existing).get(step)
                if chosen is None:
                    raise RuntimeError(f"rank {dp.rank}: checkpoint {step} chosen by rank 0 "
                                       f"is not in {checkpoint_dir}; data-parallel ranks "
                                       "need the checkpoint folder on shared storage")
                resumed_from = step
                progress = _load_checkpoint(chosen, model, optimizer, params, n_train,
                                            dp.rank, dp.world)
    if resumed_from is None:
        if dp is not None:
            data_parallel.broadcast_model(dp, model)
        determinism.seed_all(params.seed if is_rank0 or dp is None
                             else data_parallel.rank_seed(params.seed, dp.rank))
    trainable = [p for p in model.parameters() if p.requires_grad]

    samples_this_call = 0
    train_seconds = 0.0
    window_samples = 0
    window_t = time.perf_counter()
    last_ckpt_step = resumed_from
    last_ckpt_t = time.monotonic()
    interrupted = False
    if params.keep_best and eval_data is None:
        raise ValueError("keep_best needs eval data")
    best = _BestWeights(checkpoint_dir) if params.keep_best and is_rank0 else None
    restored_best = False

    def run_eval() -> None:
        assert eval_data is not None
        res = evaluate(model, eval_data, eval_bs, pad_id=params.pad_id, collate_fn=collate_fn)
        metrics = {
            "eval_loss": float(res["loss"]),
            "eval_accuracy": float(res["accuracy"]),
            "eval_macro_f1": float(res["macro_f1"]),
        }
        progress.last_metrics = metrics
        progress.history.append({"step": progress.global_step, "epoch": progress.epoch, **metrics})
        if on_metrics is not None:
            on_metrics(progress.global_step, dict(metrics))

    def save_checkpoint() -> None:
        """Checkpoint now (a collective under data parallelism: every rank calls it)."""
        rank_rng = data_parallel.gather_rng(dp) if dp is not None else None
        if writer is not None:
            if rank_rng is None:
                writer.save(model, optimizer, progress, params, n_train, schedule)
            else:
                writer.save(model, optimizer, progress, params, n_train, schedule,
                            rank_rng=rank_rng)

    def limit_reached() -> bool:
        return params.max_steps is not None and progress.global_step >= params.max_steps

    with writer if writer is not None else contextlib.nullcontext():
        while progress.epoch < params.epochs and not progress.stopped_early and not limit_reached():
            groups = _epoch_groups(n_train, params, progress.epoch)
            model.train()
            t_epoch = time.perf_counter()
            # Resume: the epoch order is recomputed from (seed, epoch); steps already done are
            # skipped without touching any RNG, so the restored RNG state lines up exactly.
            for gi in range(progress.step_in_epoch, len(groups)):
                if limit_reached():
                    break
                group = groups[gi]
                lr = params.learning_rate * _lr_factor(progress, warmup_steps, total_steps)
                for pg in optimizer.param_groups:
                    pg["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                step_loss = 0.0
                n_samples = 0
                for idx in group:
                    n_samples += len(idx)  # the global batch, on every rank
                    shard = idx if dp is None else idx[dp.rank::dp.world]
                    if not shard:  # a short last micro-batch: fewer examples than ranks
                        continue
                    inputs = make_inputs(train_data.batch(shard), device, True)
                    with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                                        enabled=params.bf16 and device.type == "cuda"):
                        if dp is None:
                            loss = model(**inputs).loss / len(group)
                        else:
                            # Shard mean -> this shard's share of the micro-batch mean.
                            loss = model(**inputs).loss * (len(shard) / len(idx)) / len(group)
                    loss.backward()
                    step_loss += float(loss.detach())
                if dp is not None:
                    step_loss = data_parallel.all_reduce_grads(dp, trainable, step_loss)
                if params.max_grad_norm is not None and params.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), params.max_grad_norm)
                optimizer.step()
                progress.global_step += 1
                progress.step_in_epoch = gi + 1
                progress.window_loss += step_loss
                progress.window_steps += 1
                samples_this_call += n_samples
                window_samples += n_samples

                if progress.global_step % params.log_every_steps == 0:
                    now = time.perf_counter()
                    record = {
                        "loss": progress.window_loss / progress.window_steps,
                        "learning_rate": lr,
                        "epoch": progress.epoch,
                    }
                    progress.window_loss, progress.window_steps = 0.0, 0
                    rate = window_samples / max(now - window_t, 1e-9)
                    window_samples, window_t = 0, now
                    # Throughput goes to the callback only: history stays deterministic.
                    progress.history.append({"step": progress.global_step, **record})
                    if on_metrics is not None:
                        on_metrics(progress.global_step, {**record, "samples_per_s": rate})
                due_steps = (params.checkpoint_every_steps is not None
                             and progress.global_step % params.checkpoint_every_steps == 0)
                due_time = (params.checkpoint_every_s is not None
                            and time.monotonic() - last_ckpt_t >= params.checkpoint_every_s)
                stop = should_stop is not None and should_stop()
                if dp is not None:
                    # All ranks stop, and checkpoint (a collective), at the same step, or
                    # they deadlock: one all-reduce agrees on both (each rank's clock may
                    # say a checkpoint is due a step apart).
                    stop, due_time = data_parallel.any_rank(dp, stop, due_time)
                if checkpoint_dir is not None and (due_steps or due_time):
                    save_checkpoint()
                    last_ckpt_step, last_ckpt_t = progress.global_step, time.monotonic()
                if stop:
                    interrupted = True
                    break
            train_seconds += time.perf_counter() - t_epoch
            if interrupted:
                if checkpoint_dir is not None and last_ckpt_step != progress.global_step:
                    save_checkpoint()
                break
            if progress.step_in_epoch < len(groups):
                break  # max_steps reached inside the epoch
            progress.epochs_completed = progress.epoch + 1
            if eval_data is not None and params.eval_every_epoch:
                if is_rank0:
                    run_eval()
                    _update_early_stopping(progress, params, len(groups), total_steps)
                    if best is not None and progress.best_step == progress.global_step:
                        best.save(model, progress.global_step)
                if dp is not None:
                    progress.stopped_early = bool(data_parallel.broadcast_int(dp,
                                                                 int(progress.stopped_early)))
                    if params.cooldown_epochs:  # it sets the learning rate on every rank
                        got = [data_parallel.broadcast_int(dp, -1 if v is None else v)
                               for v in (progress.cooldown_from, progress.cooldown_until,
                                         progress.cooldown_epoch)]
                        (progress.cooldown_from, progress.cooldown_until,
                         progress.cooldown_epoch) = [None if v < 0 else v for v in got]
            progress.epoch += 1
            progress.step_in_epoch = 0

        if not interrupted and eval_data is not None and is_rank0:
            # Final metrics reflect the final weights: evaluate unless the last eval already did.
            last_eval_step = next(
                (int(h["step"]) for h in reversed(progress.history) if "eval_loss" in h), None
            )
            if last_eval_step != progress.global_step or not progress.last_metrics:
                run_eval()
                if best is not None and _record_if_best(progress, params):
                    best.save(model, progress.global_step)
            if best is not None and progress.best_step is not None \
                    and progress.best_step != progress.global_step:
                best.restore(model, progress.best_step)
                progress.last_metrics = dict(progress.best_metrics)
                restored_best = True

    return TrainResult(
        global_step=progress.global_step,
        epochs_completed=progress.epochs_completed,
        metrics=dict(progress.last_metrics),
        history=[dict(h) for h in progress.history],
        stopped_early=progress.stopped_early,
        train_samples_per_s=samples_this_call / train_seconds if train_seconds > 0 else 0.0,
        seconds=time.perf_counter() - t_start,
        interrupted=interrupted,
        resumed_from_step=resumed_from,
        best_step=progress.best_step,
        best_epoch=progress.best_epoch,
        restored_best=restored_best,
        cooldown_epochs=(progress.epochs_completed - progress.cooldown_epoch
                         if progress.cooldown_epoch is not None else 0),
        checkpoints=writer.stats() if writer is not None else {},
    )


def _record_if_best(progress: _Progress, params: TrainParams) -> bool:
    """Whether the last eval beats every earlier one (``eval_<metric>``, higher is better;
    with ``loss_aware`` a lower ``eval_loss`` decides between equals, else the earliest
    of equals stays best); if so, remember where it was and what it measured."""
    value = progress.last_metrics[f"eval_{params.metric}"]
    loss = progress.last_metrics["eval_loss"]
    if progress.best_metric is not None:
        tie_won = (params.loss_aware and value == progress.best_metric
                   and progress.best_loss is not None and loss < progress.best_loss)
        if value < progress.best_metric or (value == progress.best_metric and not tie_won):
            return False
    progress.best_metric = value
    progress.best_loss = loss
    progress.best_step = progress.global_step
    # 1-based; after the loop has moved on to the next epoch (step_in_epoch 0), the eval
    # is of the epoch before.
    at_boundary = progress.step_in_epoch == 0 and progress.epoch > 0
    progress.best_epoch = progress.epoch if at_boundary else progress.epoch + 1
    progress.best_metrics = dict(progress.last_metrics)
    return True


def _update_early_stopping(progress: _Progress, params: TrainParams, steps_per_epoch: int,
                           total_steps: int) -> None:
    """Track the best ``eval_<metric>`` (higher is better) and the patience counter; when
    the patience runs out, stop, or begin the cooldown (``TrainParams.cooldown_epochs``);
    stop at the cooldown's end."""
    loss = progress.last_metrics["eval_loss"]
    lower_loss = progress.lowest_loss is None or loss < progress.lowest_loss
    if lower_loss:
        progress.lowest_loss = loss
    if _record_if_best(progress, params) or (params.loss_aware and lower_loss):
        progress.patience = 0
    else:
        progress.patience += 1
    if progress.cooldown_until is not None:
        if progress.global_step >= progress.cooldown_until:
            progress.stopped_early = True
        return
    if (
        params.early_stopping_patience is not None
        and progress.patience >= params.early_stopping_patience
    ):
        until = min(progress.global_step + params.cooldown_epochs * steps_per_epoch,
                    total_steps)
        if until > progress.global_step:
            progress.cooldown_from = progress.global_step
            progress.cooldown_until = until
            progress.cooldown_epoch = progress.epoch + 1
        else:
            progress.stopped_early = True
