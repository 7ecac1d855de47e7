"""The progress message of a fine-tune: a fixed run's length, or auto's ceiling as a bound."""

from __future__ import annotations

from typing import Any

from clowder_ml.ml.finetune_worker import metrics_callback


class _Reporter:
    def __init__(self) -> None:
        self.progress_calls: list[tuple[float, float | None, str]] = []

    def metric(self, step: int, name: str, value: float) -> None:
        pass

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        self.progress_calls.append((done, total, message))


def _last(at_most: bool) -> Any:
    reporter = _Reporter()
    metrics_callback(reporter, 1800, at_most)(40, {"loss": 0.5})
    return reporter.progress_calls[-1]


def test_fixed_epochs_say_the_length_and_auto_says_its_ceiling_is_a_bound() -> None:
    assert _last(False) == (40, 1800, "step 40 of 1800")
    assert _last(True) == (40, 1800, "step 40 of at most 1800, epochs=auto may stop earlier")
    metrics_callback(None, 1800, True)(40, {"loss": 0.5})  # no reporter: nothing to do
