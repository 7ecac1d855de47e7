"""How long a fine-tune trains, and why it stopped.

``epochs="auto"`` (the default of the fine-tune tasks) trains on the training split, evaluates
on the held-out split after every epoch, stops once ``patience`` evals in a row brought no
improvement of the chosen metric, and ends with the weights of the best eval
(``TrainParams.keep_best``). Once the patience has run out it first trains ``cooldown``
more epochs with the learning rate falling to 0 (``TrainParams.cooldown_epochs``: an early
stop otherwise ends at a high learning rate), then stops. An eval that ties the best metric
with a lower validation loss is the new best, and a validation loss lower than ever before
also counts as progress (``TrainParams.loss_aware``). The number of epochs is capped by a
ceiling set from the data size and a step budget:
``ceil(step_budget / steps_per_epoch)`` clamped to ``[min_epochs, max_epochs]``, so a small
set may run many short epochs and a large one stops after a few long ones. The learning
rate schedule (warmup, linear decay) spans the ceiling. An explicit number of epochs trains
exactly that many (early stopping only when ``early_stopping_patience`` is set), with the
last weights, as before.

:func:`describe` turns a finished run into the sentence the job result, the model card and
the CLI show ("no improvement for 3 epochs; best epoch 17 of 20, accuracy 0.97"), with a
warning when a fixed-length run (or one cut by its ceiling) was still improving at its end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

AUTO: Literal["auto"] = "auto"
DEFAULT_PATIENCE = 5


@dataclass(frozen=True)
class AutoBudget:
    """A task's limits for ``epochs="auto"`` (see the module docstring)."""

    step_budget: int
    min_epochs: int
    max_epochs: int
    patience: int = DEFAULT_PATIENCE
    # Epochs of learning-rate decay to 0 once the patience ran out (within the ceiling):
    # TrainParams.cooldown_epochs.
    cooldown: int = 0


@dataclass(frozen=True)
class TrainingLength:
    """What the training loop is told: ``epochs`` (the ceiling when ``auto``), the patience
    (None: no early stopping) and whether it ends with the best eval's weights. ``ceiling``
    says how an auto ceiling was set, for the job's events."""

    epochs: int
    patience: int | None
    keep_best: bool
    auto: bool
    ceiling: str = ""
    cooldown: int = 0

    @property
    def loss_aware(self) -> bool:
        return self.auto


def steps_per_epoch(n_train: int, batch_size: int, gradient_accumulation: int) -> int:
    """Optimizer steps in one epoch (the last batch and step may be short)."""
    return max(1, math.ceil(math.ceil(n_train / batch_size) / gradient_accumulation))


def plan(epochs: int | Literal["auto"], patience: int | None, n_train: int,
         batch_size: int, gradient_accumulation: int, budget: AutoBudget) -> TrainingLength:
    """The training length for a task's ``epochs`` and ``early_stopping_patience`` params.

    With ``auto``, ``patience`` (if set) replaces the budget's default."""
    if epochs != AUTO:
        return TrainingLength(epochs=int(epochs), patience=patience, keep_best=False,
                              auto=False)
    per_epoch = steps_per_epoch(n_train, batch_size, gradient_accumulation)
    wanted = math.ceil(budget.step_budget / per_epoch)
    ceiling = min(budget.max_epochs, max(budget.min_epochs, wanted))
    why = (f"at most {ceiling} epochs ({per_epoch} steps each: a budget of "
           f"{budget.step_budget} steps, within {budget.min_epochs}-{budget.max_epochs} "
           "epochs)")
    return TrainingLength(epochs=ceiling, patience=patience or budget.patience,
                          keep_best=True, auto=True, ceiling=why, cooldown=budget.cooldown)


def _fmt(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.0f}"


def describe(history: Sequence[dict[str, Any]], metric: str, length: TrainingLength, *,
             epochs_completed: int, stopped_early: bool, max_steps_reached: bool,
             best_epoch: int | None, restored_best: bool, cooldown_epochs: int = 0
             ) -> dict[str, Any]:
    """Why training stopped, as ``{"reason", "message", "warning", "best_epoch", "epochs",
    "metric", "best", "last"}``.

    ``reason``: ``early_stopping`` (patience ran out), ``ceiling`` (auto's epoch cap),
    ``epochs`` (the fixed number of epochs), ``max_steps`` or ``no_eval`` (nothing held out,
    so nothing to compare). ``warning`` (or None) says when more epochs may help: the last
    end-of-epoch eval was the best so far and better than the one before, and the run did not
    stop by itself.
    """
    key = f"eval_{metric}"
    evals = [float(h[key]) for h in history if key in h]
    name = metric.replace("_", " ")
    out: dict[str, Any] = {"metric": metric, "epochs": epochs_completed,
                           "best_epoch": best_epoch, "warning": None,
                           "best": max(evals) if evals else None,
                           "last": evals[-1] if evals else None}
    if stopped_early:
        reason = "early_stopping"
        head = f"no improvement for {length.patience} epochs"
        if cooldown_epochs:
            head += (f", then {cooldown_epochs} epoch{'s' if cooldown_epochs != 1 else ''} "
                     "of learning-rate decay")
    elif max_steps_reached:
        reason, head = "max_steps", "stopped at max_steps"
    elif length.auto:
        reason, head = "ceiling", f"reached the ceiling of {length.epochs} epochs"
    else:
        reason = "epochs"
        head = f"trained the {length.epochs} epoch{'s' if length.epochs != 1 else ''} asked for"
    out["reason"] = reason if evals else "no_eval"
    if not evals:
        out["message"] = f"{head}; no validation data, so the last weights were kept"
        return out
    best = max(evals)
    kept = "best" if restored_best or best_epoch == epochs_completed else "last"
    where = f"best epoch {best_epoch} of {epochs_completed}" if best_epoch else \
        f"{epochs_completed} epochs"
    out["message"] = (f"{head}; {where}, {name} {_fmt(best)}"
                      + ("" if kept == "best" else f" (the last weights are kept: "
                                                     f"{name} {_fmt(evals[-1])})"))
    rising = len(evals) >= 2 and evals[-1] >= best and evals[-1] > evals[-2]
    if rising and reason in ("epochs", "ceiling", "max_steps"):
        out["warning"] = (f"{name} was still rising at the end ({_fmt(evals[-2])} -> "
                          f"{_fmt(evals[-1])}); more epochs may help"
                          + (" (epochs=auto stops by itself)" if not length.auto else ""))
    return out
