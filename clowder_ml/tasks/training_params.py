"""What the text and image fine-tunes share about training length: the ``epochs`` and
``early_stopping_patience`` params (their schema and help text), and the "why training
stopped" part of the job result and the model card (see
:mod:`clowder_ml.ml.training_length`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import PlainValidator, WithJsonSchema

from clowder_ml.ml.training_length import AUTO, DEFAULT_PATIENCE, TrainingLength, describe
from clowder_ml.tasks.context import Reporter

EPOCHS_HELP = (
    f"'{AUTO}' (default): after every epoch measure the metric on the held-out data, stop "
    f"once it has not improved for early_stopping_patience epochs ({DEFAULT_PATIENCE} unless "
    "set), at most a ceiling set from the data size and a step budget, and keep the best "
    "epoch's weights (needs held-out data). A number: train exactly that many epochs and "
    "keep the last weights")
PATIENCE_HELP = (
    f"Epochs without improvement before stopping: {DEFAULT_PATIENCE} with epochs=auto "
    "unless set; with a number of epochs, no early stopping unless set")
CHECKPOINT_MINUTES_HELP = (
    "Write a checkpoint (weights, optimizer and RNG states) after this many minutes of "
    "training since the last one; a worker that dies resumes from the newest and ends with "
    "the same weights. Each costs about a second for a MiniLM-sized model, so a shorter "
    "interval loses less work in a crash and costs more time")
CHECKPOINT_STEPS_HELP = ("Also write a checkpoint every this many optimizer steps (unset: "
                         "by time only)")
DEFAULT_CHECKPOINT_MINUTES = 5.0

NEEDS_HELD_OUT = ("epochs=auto chooses the length on held-out data; set validation_split "
                  "above 0 (or give validation data), or set a number of epochs")


def _epochs_check(maximum: int) -> Callable[[Any], int | Literal["auto"]]:
    """One clear message for a bad ``epochs`` (a plain union would report one error per
    member, under paths such as ``epochs.constrained-int``)."""

    def check(value: Any) -> int | Literal["auto"]:
        if value == AUTO:
            return AUTO
        whole_text = isinstance(value, str) and value.strip().isdigit()
        if whole_text or (isinstance(value, float) and value.is_integer()):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) \
                or not 1 <= value <= maximum:
            raise ValueError(f"Input should be '{AUTO}' or a whole number greater than or "
                             f"equal to 1 and less than or equal to {maximum}")
        return value

    return check


def _epochs_schema(maximum: int) -> dict[str, Any]:
    return {"anyOf": [{"type": "integer", "minimum": 1, "maximum": maximum},
                      {"type": "string", "const": AUTO}]}


# The ``epochs`` param of the text and image fine-tunes: "auto" or a whole number of epochs.
TextEpochs = Annotated[int | Literal["auto"], PlainValidator(_epochs_check(100)),
                       WithJsonSchema(_epochs_schema(100))]
ImageEpochs = Annotated[int | Literal["auto"], PlainValidator(_epochs_check(1000)),
                        WithJsonSchema(_epochs_schema(1000))]


def stop_summary(trained: dict[str, Any], metric: str, length: TrainingLength,
                 max_steps: int | None) -> dict[str, Any]:
    """Why training stopped (``training_length.describe``) from the worker's result."""
    step = int(trained.get("global_step") or 0)
    return describe(trained.get("history") or [], metric, length,
                    epochs_completed=int(trained.get("epochs_completed") or 0),
                    stopped_early=bool(trained.get("stopped_early")),
                    max_steps_reached=max_steps is not None and step >= max_steps,
                    best_epoch=trained.get("best_epoch"),
                    restored_best=bool(trained.get("restored_best")),
                    cooldown_epochs=int(trained.get("cooldown_epochs") or 0))


def report_stop(report: Reporter, trained: dict[str, Any], metric: str,
                length: TrainingLength, max_steps: int | None) -> dict[str, Any]:
    """:func:`stop_summary`, also reported as the job's events: why training stopped and what
    its checkpoints cost, then the summary's warning, if any."""
    stopped = stop_summary(trained, metric, length, max_steps)
    ck = trained.get("checkpoints") or {}
    written = int(ck.get("written") or 0)
    cost = (f"{written} checkpoint(s), {float(ck.get('loop_seconds') or 0):.2f} s of training "
            f"time and {float(ck.get('write_seconds') or 0):.2f} s of writing alongside"
            if written else "no checkpoint was due")
    report.event(f"training stopped: {stopped['message']} ({cost})")
    if stopped["warning"]:
        report.event(f"warning: {stopped['warning']}")
    return stopped


def card_lines(summary: dict[str, Any], length: TrainingLength) -> str:
    """The model card's paragraph on training length and why it stopped."""
    cool = f", then {length.cooldown} epochs of learning-rate decay" if length.cooldown else ""
    how = (f"epochs=auto ({length.ceiling}, patience {length.patience}{cool}, best weights "
           "kept)"
           if length.auto else f"{length.epochs} epoch(s), last weights kept")
    text = f"Training length: {how}. Stopped: {summary['message']}."
    if summary.get("warning"):
        text += f" Warning: {summary['warning']}."
    return text
