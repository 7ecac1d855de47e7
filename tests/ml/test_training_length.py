"""epochs=auto's ceiling from the data size and step budget, and the sentence that says why
training stopped (job result, model card, CLI)."""

from __future__ import annotations

from typing import Any

from clowder_ml.ml.training_length import AutoBudget, TrainingLength, describe, plan

BUDGET = AutoBudget(step_budget=3000, min_epochs=3, max_epochs=60, patience=3)


def test_a_number_of_epochs_is_kept_as_given() -> None:
    length = plan(5, None, 1000, 32, 1, BUDGET)
    assert length == TrainingLength(epochs=5, patience=None, keep_best=False, auto=False)
    assert plan(5, 2, 1000, 32, 1, BUDGET).patience == 2


def test_auto_ceiling_follows_data_size_within_bounds() -> None:
    # 1000 examples in batches of 32: 32 steps an epoch -> 94 epochs, capped at 60.
    small = plan("auto", None, 1000, 32, 1, BUDGET)
    assert (small.epochs, small.patience, small.keep_best, small.auto) == (60, 3, True, True)
    assert "32 steps each" in small.ceiling
    # 64000 examples: 2000 steps an epoch -> 2 epochs, raised to the minimum of 3.
    assert plan("auto", None, 64000, 32, 1, BUDGET).epochs == 3
    # 9600 examples: 300 steps an epoch -> 10 epochs; accumulation makes fewer, longer steps.
    assert plan("auto", None, 9600, 32, 1, BUDGET).epochs == 10
    assert plan("auto", None, 9600, 16, 2, BUDGET).epochs == 10
    assert plan("auto", 7, 9600, 32, 1, BUDGET).patience == 7


def _history(accs: list[float]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, a in enumerate(accs):
        out.append({"step": 10 * i + 5, "loss": 1.0})
        out.append({"step": 10 * (i + 1), "epoch": i, "eval_loss": 1.0 - a, "eval_accuracy": a})
    return out


def test_early_stopping_names_patience_best_epoch_and_value() -> None:
    accs = [0.5] * 16 + [0.97, 0.96, 0.95, 0.97]
    length = plan("auto", None, 1000, 32, 1, BUDGET)
    out = describe(_history(accs), "accuracy", length, epochs_completed=20,
                   stopped_early=True, max_steps_reached=False, best_epoch=17,
                   restored_best=True)
    assert out["message"] == "no improvement for 3 epochs; best epoch 17 of 20, accuracy 0.97"
    assert out["reason"] == "early_stopping" and out["warning"] is None
    assert (out["best"], out["last"], out["best_epoch"]) == (0.97, 0.97, 17)


def test_a_cooldown_after_the_patience_is_planned_and_named() -> None:
    budget = AutoBudget(step_budget=3000, min_epochs=3, max_epochs=60, patience=3, cooldown=4)
    length = plan("auto", None, 1000, 32, 1, budget)
    assert length.cooldown == 4 and plan(5, 2, 1000, 32, 1, budget).cooldown == 0
    accs = [0.5] * 16 + [0.97, 0.96, 0.95, 0.96, 0.97, 0.97, 0.96]
    out = describe(_history(accs), "accuracy", length, epochs_completed=23,
                   stopped_early=True, max_steps_reached=False, best_epoch=17,
                   restored_best=True, cooldown_epochs=4)
    assert out["message"] == ("no improvement for 3 epochs, then 4 epochs of learning-rate "
                              "decay; best epoch 17 of 23, accuracy 0.97")
    assert out["reason"] == "early_stopping" and out["warning"] is None


def test_a_fixed_run_still_rising_warns_that_more_epochs_may_help() -> None:
    length = plan(5, None, 1000, 32, 1, BUDGET)
    out = describe(_history([0.28, 0.32, 0.48, 0.58, 0.63]), "accuracy", length,
                   epochs_completed=5, stopped_early=False, max_steps_reached=False,
                   best_epoch=5, restored_best=False)
    assert out["message"] == "trained the 5 epochs asked for; best epoch 5 of 5, accuracy 0.63"
    assert out["warning"] == ("accuracy was still rising at the end (0.58 -> 0.63); more "
                              "epochs may help (epochs=auto stops by itself)")
    # Not rising at the end: no warning; the last weights are named when they are not best.
    out = describe(_history([0.28, 0.58, 0.52]), "accuracy", plan(3, None, 10, 1, 1, BUDGET),
                   epochs_completed=3, stopped_early=False, max_steps_reached=False,
                   best_epoch=2, restored_best=False)
    assert out["warning"] is None
    assert out["message"] == ("trained the 3 epochs asked for; best epoch 2 of 3, accuracy "
                              "0.58 (the last weights are kept: accuracy 0.52)")


def test_auto_at_its_ceiling_while_rising_warns_and_no_eval_says_so() -> None:
    length = plan("auto", None, 64000, 32, 1, BUDGET)
    hist = [{**h, "eval_macro_f1": h["eval_accuracy"]} for h in _history([0.8, 0.85, 0.9])
            if "eval_accuracy" in h]
    out = describe(hist, "macro_f1", length, epochs_completed=3, stopped_early=False,
                   max_steps_reached=False, best_epoch=3, restored_best=False)
    assert out["reason"] == "ceiling" and out["message"] == (
        "reached the ceiling of 3 epochs; best epoch 3 of 3, macro f1 0.9")
    assert out["warning"] == "macro f1 was still rising at the end (0.85 -> 0.9); more " \
                             "epochs may help"
    out = describe([{"step": 5, "loss": 1.0}], "accuracy", plan(1, None, 10, 1, 1, BUDGET),
                   epochs_completed=1, stopped_early=False, max_steps_reached=True,
                   best_epoch=None, restored_best=False)
    assert out["reason"] == "no_eval"
    assert out["message"] == ("stopped at max_steps; no validation data, so the last weights "
                              "were kept")
